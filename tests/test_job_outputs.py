"""Jobs never mix and never inherit: whose output a dest holds, deleting it, ids never reused.

- A kind whose output is numbered per job (scenes shards, generate parts) refuses a dest
  holding another job's output, whatever became of that job: still in the store, removed,
  run by another bfd, or unknown (no marker). Kinds that re-run incrementally (download,
  clean) keep doing so over the same dest.
- `bfctl remove NAME --delete-output` deletes what the job wrote, nothing else, for every
  kind, and says what it deleted.
- A removed job's partial bytes are never counted for a later job, and no id is reused.
"""

import contextlib
import hashlib
import os
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from binance_data import write_trades_zip
from conftest import (
    FAST_RETRIES,
    Daemon,
    make_dataset,
    manifest_rows,
    wait_until,
    write_manifest,
)
from origin import Fault, Origin
from test_generate import SPEC, write_spec

from bulkforge.daemon.outputs import MARKER
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

ENDED = {"completed", "failed", "cancelled"}
DAY = date(2024, 3, 1)
SCENE_ITEMS = 40
SHARD_SIZE = 10  # four shards
GENERATE_ROWS, CHUNK_ROWS = 200, 50  # parts of students and departments


def files_in(dest: Path) -> dict[str, str]:
    """sha256 of every file under dest, by relative path."""
    return {
        str(p.relative_to(dest)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(dest.rglob("*"))
        if p.is_file()
    }


# -- one finished job of each kind ---------------------------------------------------------


class Inputs:
    """What the jobs of a test read: an origin's files, a scenes input, a spec, zips."""

    def __init__(self, tmp_path: Path, origin: Origin):
        self.tmp_path, self.origin = tmp_path, origin
        self.scenes = tmp_path / "scenes.parquet"
        names = [f"img/{n:03d}.jpg" for n in range(SCENE_ITEMS)]
        table = {"key": [f"k{n:03d}" for n in range(SCENE_ITEMS)]}
        table["url"] = [origin.url_for(name) for name in names]
        pq.write_table(pa.table(table), self.scenes)
        self.spec = write_spec(tmp_path, SPEC)
        self.zips = tmp_path / "zips"
        for n in range(2):
            write_trades_zip(self.zips, "spot", "AAAUSDT", DAY + timedelta(days=n), 1 + n * 50, 50)
        self.manifest = write_manifest(tmp_path / "files.jsonl", manifest_rows(origin, DATASET))


DATASET = make_dataset(4, 20_000)
ORIGIN_FILES = {**DATASET.files, **{f"img/{n:03d}.jpg": bytes([n]) * 999 for n in range(99)}}


def run_job(daemon: Daemon, inputs: Inputs, kind: str, name: str, dest: Path, *extra: str):
    """Submit a job of the kind and wait for it to end; its submit answer must be accepted."""
    submitted = daemon.bfctl(*submit_args(inputs, kind, name, dest), *extra)
    assert submitted.returncode == 0, submitted.stderr
    job = daemon.wait_state(name, ENDED, timeout=180)
    assert job.state == "completed", (job, daemon.log_tail())
    return job


def submit_args(inputs: Inputs, kind: str, name: str, dest: Path) -> list[str]:
    by_kind = {
        "scenes": ["--input", str(inputs.scenes), "--key", "key", "--url", "url",
                   "--shard-size", str(SHARD_SIZE)],
        "generate": ["--spec", str(inputs.spec), "--rows", str(GENERATE_ROWS),
                     "--chunk-rows", str(CHUNK_ROWS)],
        "download": ["--manifest", str(inputs.manifest)],
        "clean": ["--input", str(inputs.zips)],
    }  # fmt: skip
    return ["submit", kind, name, *by_kind[kind], "--dest", str(dest)]


@pytest.fixture
def inputs(tmp_path: Path):
    with Origin(ORIGIN_FILES) as origin:
        yield Inputs(tmp_path, origin)


# -- numbered output: one job's per dest -----------------------------------------------------

NUMBERED = {"scenes": f"{SCENE_ITEMS // SHARD_SIZE} shards", "generate": "parts"}


def present(first: Daemon, make_daemon, dest: Path) -> tuple[Daemon, str]:
    return first, "'first')"


def removed(first: Daemon, make_daemon, dest: Path) -> tuple[Daemon, str]:
    assert first.bfctl("remove", "first").returncode == 0
    return first, "'first'; removed"


def other_state_dir(first: Daemon, make_daemon, dest: Path) -> tuple[Daemon, str]:
    second = make_daemon(*FAST_RETRIES).start()
    return second, f"'first', of the bfd at {os.path.realpath(first.state_dir)}"


def unmarked(first: Daemon, make_daemon, dest: Path) -> tuple[Daemon, str]:
    """Output an older bfd left (no marker), its job forgotten."""
    assert first.bfctl("remove", "first").returncode == 0
    (dest / MARKER).unlink()
    return first, "a job bfd no longer knows"


SITUATIONS: dict[str, Callable] = {
    "present": present,
    "removed": removed,
    "other-state-dir": other_state_dir,
    "unmarked": unmarked,
}


@pytest.mark.parametrize("situation", SITUATIONS)
@pytest.mark.parametrize("second_kind", NUMBERED)
@pytest.mark.parametrize("kind", NUMBERED)
def test_a_numbered_kind_refuses_a_dest_holding_another_jobs_output(
    make_daemon, inputs: Inputs, tmp_path: Path, kind: str, second_kind: str, situation: str
) -> None:
    """Whatever numbered kind wrote the output there, and whatever numbered kind comes next."""
    first = make_daemon(*FAST_RETRIES).start()
    dest = tmp_path / "out"
    run_job(first, inputs, kind, "first", dest)
    before = files_in(dest)
    assert MARKER in before
    daemon, whose = SITUATIONS[situation](first, make_daemon, dest)
    refused = daemon.bfctl(*submit_args(inputs, second_kind, "second", dest))
    assert refused.returncode == 1, refused.stderr
    assert f"dest {dest} holds" in refused.stderr and NUMBERED[kind] in refused.stderr
    assert f"of another job ({whose}" in refused.stderr, refused.stderr
    assert "Choose another dest" in refused.stderr and "Traceback" not in refused.stderr
    # Nothing was written, nothing was created.
    assert files_in(dest) == {k: v for k, v in before.items() if (dest / k).exists()}
    assert "second" not in [job["name"] for job in daemon.bfctl_json("list")["jobs"]]
    # Another dest is fine.
    run_job(daemon, inputs, second_kind, "second", tmp_path / "elsewhere")
    for running in {first, daemon}:
        assert running.stop() == 0, running.log_tail()


# Where a second job's dest lies against the first's: a reader of the outer directory
# (pandas.read_parquet, a recursive glob) would take both jobs' output for one dataset.
NESTINGS = {
    "inside": lambda first: first / "sub",
    "inside-a-table": lambda first: first / "students",
    "containing": lambda first: first.parent,
}


# A removed job's dest below the new one is not looked for: that would walk a whole tree.
NESTED_CASES = [
    (nesting, removed)
    for nesting in NESTINGS
    for removed in (False, True)
    if not (removed and nesting == "containing")
]


@pytest.mark.parametrize(("nesting", "removed_first"), NESTED_CASES)
@pytest.mark.parametrize("kind", NUMBERED)
def test_a_numbered_kind_refuses_a_dest_nested_with_another_jobs_dest(
    daemon: Daemon, inputs: Inputs, tmp_path: Path, kind: str, nesting: str, removed_first: bool
) -> None:
    first = tmp_path / "data" / "first"
    run_job(daemon, inputs, kind, "first", first)
    if removed_first:
        assert daemon.bfctl("remove", "first").returncode == 0
    dest = NESTINGS[nesting](first)
    for second in NUMBERED:
        refused = daemon.bfctl(*submit_args(inputs, second, "second", dest))
        assert refused.returncode == 1, refused.stdout
        assert "'first'" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert [job["name"] for job in daemon.bfctl_json("list")["jobs"]] == (
        [] if removed_first else ["first"]
    )


@pytest.mark.parametrize("kind", NUMBERED)
def test_a_resubmission_stays_accepted_and_a_queued_jobs_dest_is_refused(
    daemon: Daemon, inputs: Inputs, tmp_path: Path, kind: str
) -> None:
    """The same job again answers from the store; another job into a dest that a job of
    the store names (however far it got) is refused naming that job."""
    dest = tmp_path / "out"
    args = submit_args(inputs, kind, "first", dest)
    assert daemon.bfctl(*args).returncode == 0
    again = daemon.bfctl_json(*args)
    assert again["created"] is False
    refused = daemon.bfctl(*submit_args(inputs, kind, "second", dest))
    # Refused naming the job, whether it has written anything yet or not.
    assert refused.returncode == 1 and "'first'" in refused.stderr
    assert "Choose another dest" in refused.stderr
    daemon.wait_state("first", ENDED, timeout=180)


# -- incremental kinds: a re-run over the same dest ----------------------------------------


def test_a_download_over_the_same_dest_fetches_only_what_is_missing(
    daemon: Daemon, inputs: Inputs, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    run_job(daemon, inputs, "download", "d1", dest)
    inputs.origin.log.clear()
    job = run_job(daemon, inputs, "download", "d2", dest)
    assert dict(job.counts) == {"skipped": len(DATASET.files)}
    assert not [r for r in inputs.origin.log if r.method == "GET"]


def test_a_clean_job_over_the_same_dest_rebuilds_only_what_changed(
    daemon: Daemon, inputs: Inputs, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    run_job(daemon, inputs, "clean", "c1", dest)
    stamps = {p: p.stat().st_mtime_ns for p in dest.rglob("data.parquet")}
    assert len(stamps) == 2
    run_job(daemon, inputs, "clean", "c2", dest)
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("data.parquet")} == stamps


# -- remove --delete-output ------------------------------------------------------------------


# Every kind, and each layout a kind's output can take: (kind, extra submit flags).
LAYOUTS = {
    "scenes-webdataset": ("scenes", ["--format", "webdataset"]),
    "scenes-files": ("scenes", ["--format", "files"]),
    "scenes-parquet": ("scenes", ["--format", "parquet"]),
    "generate-parquet": ("generate", []),
    "generate-sql": ("generate", ["--format", "sql"]),
    "download": ("download", []),
    "download-batched": ("download", ["--space", "10MB"]),
    "clean": ("clean", []),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_remove_delete_output_deletes_what_the_job_wrote_and_nothing_else(
    daemon: Daemon, inputs: Inputs, tmp_path: Path, layout: str
) -> None:
    kind, flags = LAYOUTS[layout]
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "mine.txt").write_text("the operator's, not bfd's")
    (dest / "_notes").mkdir()
    (dest / "_notes" / "keep.md").write_text("also not bfd's")
    run_job(daemon, inputs, kind, "job", dest, *flags)
    written = {k: (dest / k).stat().st_size for k in files_in(dest)}
    written = {k: size for k, size in written.items() if k not in ("mine.txt", "_notes/keep.md")}
    assert written
    # The operator's notes in every folder the job made (a shard's, a table's, a
    # partition's) are not the job's: they stay, and so do their folders.
    notes = {
        str(folder.relative_to(dest) / "notes.txt")
        for folder in dest.rglob("*")
        if folder.is_dir() and not any(p.startswith("_") for p in folder.relative_to(dest).parts)
    }
    for note in notes:
        (dest / note).write_text("the operator's")
    removed = daemon.bfctl_json("remove", "job", "--delete-output")
    deleted = removed["deleted"]
    assert deleted["files"] == len(written) and deleted["bytes"] == sum(written.values())
    assert all(path.startswith(f"{dest}/") for path in deleted["paths"])
    assert set(files_in(dest)) == {"mine.txt", "_notes/keep.md", *notes}
    for note in sorted(notes, key=len, reverse=True):
        (dest / note).unlink()
        with contextlib.suppress(OSError):  # a folder holding another's notes stays
            (dest / note).parent.rmdir()
    assert sorted(p.name for p in dest.iterdir()) == ["_notes", "mine.txt"]  # no empty dirs
    assert daemon.bfctl_json("list")["jobs"] == []
    # The dest is free for a new job of the kind, which writes as much as the first did.
    run_job(daemon, inputs, kind, "again", dest, *flags)
    assert len(files_in(dest)) == len(written) + 2


def test_remove_delete_output_leaves_the_files_a_download_found_in_place(
    daemon: Daemon, inputs: Inputs, tmp_path: Path
) -> None:
    """A download over another's dest skips the files in place: they are not its own."""
    dest = tmp_path / "out"
    run_job(daemon, inputs, "download", "d1", dest)
    first = files_in(dest)
    extra = make_dataset(1, 3000, seed=11)
    inputs.origin.set_file("new/extra.bin", extra.files[next(iter(extra.files))])
    added = {"url": inputs.origin.url_for("new/extra.bin"), "path": "new/extra.bin"}
    rows = [*manifest_rows(inputs.origin, DATASET), added]
    inputs.manifest = write_manifest(tmp_path / "more.jsonl", rows)
    run_job(daemon, inputs, "download", "d2", dest)
    removed = daemon.bfctl_json("remove", "d2", "--delete-output")["deleted"]
    assert removed["files"] == 1 and removed["paths"] == [str(dest / "new" / "extra.bin")]
    assert files_in(dest) == first


@pytest.mark.parametrize("kind", ["download", "clean"])
def test_remove_delete_output_of_the_first_of_two_jobs_keeps_what_the_second_holds(
    daemon: Daemon, inputs: Inputs, tmp_path: Path, kind: str
) -> None:
    """An incremental kind re-run over a dest takes the first job's output as its own (a
    download's files in place, a clean job's partitions): removing the first leaves them."""
    dest = tmp_path / "out"
    run_job(daemon, inputs, kind, "first", dest)
    run_job(daemon, inputs, kind, "second", dest)
    held = {k: (dest / k).read_bytes() for k in files_in(dest) if not k.startswith("_jobs/")}
    assert held
    removed = daemon.bfctl_json("remove", "first", "--delete-output")["deleted"]
    assert not [p for p in removed["paths"] if "/_jobs/first" not in p], removed["paths"]
    assert {k: (dest / k).read_bytes() for k in held} == held
    assert [job["name"] for job in daemon.bfctl_json("list")["jobs"]] == ["second"]


def test_remove_without_delete_output_keeps_the_files_and_says_so(
    daemon: Daemon, inputs: Inputs, tmp_path: Path
) -> None:
    dest = tmp_path / "out"
    run_job(daemon, inputs, "generate", "g", dest)
    before = files_in(dest)
    removed = daemon.bfctl_json("remove", "g")
    assert "deleted" not in removed and files_in(dest) == before
    said = daemon.bfctl("remove", "nope", "--delete-output")
    assert said.returncode == 1 and "no job named 'nope'" in said.stderr


# -- ids never reused; nothing in memory outlives its row -----------------------------------

BIG = 4 << 20


def ids_of(daemon: Daemon, name: str) -> tuple[int, list[int]]:
    with daemon.read_store() as store:
        (job_id,) = store.execute("SELECT id FROM jobs WHERE name = ?", (name,)).fetchone()
        files = [
            row[0] for row in store.execute("SELECT id FROM files WHERE job_id = ?", (job_id,))
        ]
    return job_id, files


@pytest.mark.parametrize("paused_first", [False, True], ids=["cancelled", "paused-then-cancelled"])
def test_a_removed_jobs_partial_bytes_never_count_for_a_new_job(
    patient_daemon: Daemon, tmp_path: Path, paused_first: bool
) -> None:
    daemon = patient_daemon
    big = os.urandom(BIG)
    faults = {"big.bin": Fault("stall", after_bytes=BIG // 3, seconds=600)}
    with Origin({"big.bin": big, "gone.bin": b"x"}, faults) as origin:
        origin.remove_file("gone.bin")  # a 404
        one = write_manifest(tmp_path / "one.jsonl", [{"url": origin.url_for("big.bin"),
                                                      "path": "big.bin", "size": BIG}])  # fmt: skip
        daemon.bfctl("submit", "download", "stalled", "--manifest", str(one),
                     "--dest", str(tmp_path / "a"))  # fmt: skip
        wait_bytes(daemon, "stalled")
        old_job, old_files = ids_of(daemon, "stalled")
        if paused_first:
            assert daemon.bfctl("pause", "stalled").returncode == 0
            wait_bytes(daemon, "stalled")  # a paused job's partial still counts for it
        assert daemon.bfctl("cancel", "stalled").returncode == 0
        assert daemon.bfctl("remove", "stalled").returncode == 0
        missing = write_manifest(tmp_path / "two.jsonl", [{"url": origin.url_for("gone.bin"),
                                                          "path": "gone.bin"}])  # fmt: skip
        for dest in ("a", "b"):  # into the same dest and into another
            name = f"next-{dest}"
            daemon.bfctl("submit", "download", name, "--manifest", str(missing),
                         "--dest", str(tmp_path / dest))  # fmt: skip
            job = daemon.wait_state(name, ENDED, timeout=60)
            assert job.state == "failed" and job.bytes_done == 0, job
            new_job, new_files = ids_of(daemon, name)
            assert new_job > old_job and min(new_files) > max(old_files)
            old_job, old_files = new_job, new_files


def wait_bytes(daemon: Daemon, name: str) -> pb.Job:
    wait_until(
        lambda: daemon.stub.Status(pb.JobRef(name=name), timeout=10).bytes_done > 0,
        timeout=60,
        what=f"{name} to have bytes in flight",
    )
    return daemon.stub.Status(pb.JobRef(name=name), timeout=10)


# -- deleting paths: only inside the dest ----------------------------------------------------


def test_delete_paths_deletes_only_what_is_named_inside_the_dest(tmp_path: Path) -> None:
    from bulkforge.daemon.outputs import delete_paths

    dest, outside = tmp_path / "dest", tmp_path / "outside"
    for path in ("t/part-00000.parquet", "00001/a.jpg", "00001/a.json", "keep/x", "top.txt"):
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        (dest / path).write_bytes(b"12345")
    outside.mkdir()
    (outside / "theirs.txt").write_bytes(b"not ours")
    (dest / "link").symlink_to(outside)
    named = [
        "t/part-00000.parquet",  # a file: its emptied directory goes too
        "00001",  # a directory wholly the job's
        "top.txt",
        "never/written.bin",  # not there: nothing happens
        "../outside/theirs.txt",  # outside dest: skipped
        "link/theirs.txt",  # through a symlink out of dest: skipped
    ]
    deleted = delete_paths(dest, named)
    assert (deleted.files, deleted.bytes, deleted.directories) == (4, 20, 2)
    assert deleted.paths == [str(dest / p) for p in ("t/part-00000.parquet", "00001", "top.txt")]
    assert (outside / "theirs.txt").exists() and (dest / "keep" / "x").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["keep", "link"]
    assert not deleted.failed


def test_a_cancelled_jobs_hold_is_forgotten(make_daemon, inputs: Inputs, tmp_path: Path) -> None:
    """The governor's holds are kept by job name: a cancelled job, never looked at again,
    must not stay listed as held (nor a removed one)."""
    daemon = make_daemon(*FAST_RETRIES, "--disk-threshold", "0.000001").start()
    submitted = daemon.bfctl(*submit_args(inputs, "generate", "held", tmp_path / "out"))
    assert submitted.returncode == 0, submitted.stderr
    wait_until(
        lambda: [h["job"] for h in daemon.bfctl_json("system")["holds"]] == ["held"],
        what="the job held by the disk threshold",
    )
    assert daemon.bfctl("cancel", "held").returncode == 0
    assert daemon.bfctl_json("system")["holds"] == []
    assert daemon.bfctl("remove", "held").returncode == 0
    assert daemon.bfctl_json("system")["holds"] == []
    assert daemon.stop() == 0, daemon.log_tail()
