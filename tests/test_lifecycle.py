"""What an operator meets driving jobs: names freed by `remove`, hints that work, refusals
that leave nothing behind, filters, permanent failures classified as permanent."""

import itertools
import os
import re
import shutil
import subprocess
from pathlib import Path

from conftest import Daemon, make_dataset, manifest_rows, wait_until, write_manifest
from origin import Fault, FaultKind, Origin

HINTED = re.compile(r"`bfctl ([a-z]+) ([A-Za-z0-9._-]+)`")
# "cannot VERB job 'NAME': ADVICE": what a refused verb says, the advice for the job's state.
ADVICE = re.compile(r"cannot ([a-z]+) job '[^']+': (.+)")


def submit(daemon: Daemon, name: str, manifest: Path, dest: Path) -> None:
    done = daemon.bfctl(
        "submit", "download", name, "--manifest", str(manifest), "--dest", str(dest)
    )
    assert done.returncode == 0, done.stderr


def job_id(daemon: Daemon, name: str) -> int:
    with daemon.read_store() as db:
        return db.execute("SELECT id FROM jobs WHERE name = ?", (name,)).fetchone()[0]


def rows_of(daemon: Daemon, job_id: int) -> dict[str, int]:
    """Rows still naming the job, per table (read straight from the store)."""
    with daemon.read_store() as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts = {
            "jobs": db.execute("SELECT count(*) FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        }
        for table in tables:
            columns = {c[1] for c in db.execute(f"PRAGMA table_info({table})")}
            if "job_id" in columns:
                query = f"SELECT count(*) FROM {table} WHERE job_id = ?"
                counts[table] = db.execute(query, (job_id,)).fetchone()[0]
        counts["segments"] = db.execute(
            "SELECT count(*) FROM segments WHERE file_id NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
    return {table: n for table, n in counts.items() if n}


def test_remove_frees_the_name_and_keeps_the_files(patient_daemon, tmp_path):
    daemon = patient_daemon
    dataset = make_dataset(3, 4096, seed=31)
    last = "set/2/file-00002.bin"
    stall = {last: Fault(FaultKind.STALL, after_bytes=10, seconds=3600)}
    with Origin(dataset.files, stall) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        other = write_manifest(tmp_path / "other.jsonl", manifest_rows(origin, dataset)[:2])
        dest = tmp_path / "dest"
        submit(daemon, "one", manifest, dest)
        wait_until(lambda: origin.requests(last), what="the stalled request")
        one = job_id(daemon, "one")
        # Running: remove is refused and says how to end it; nothing is forgotten.
        running = daemon.bfctl("remove", "one")
        assert running.returncode == 1 and "`bfctl cancel one` first" in running.stderr
        # Another submit of the name points at commands that free it.
        clash = daemon.bfctl(
            "submit", "download", "one", "--manifest", str(other), "--dest", str(dest)
        )
        assert clash.returncode == 1
        hinted = set(HINTED.findall(clash.stderr))
        assert hinted == {("remove", "one"), ("cancel", "one")}, clash.stderr
        assert daemon.bfctl_json("cancel", "one")["state"] == "cancelled"
        kept = {
            path: (dest / path).read_bytes()
            for path in dataset.files
            if path != last and (dest / path).exists()
        }
        assert kept, "no file finished before the cancel"

        removed = daemon.bfctl_json("remove", "one")
        assert removed == {"removed": "one", "state": "cancelled", "dest": str(dest), "items": 3}
        assert rows_of(daemon, one) == {}
        assert {path: (dest / path).read_bytes() for path in kept} == kept
        assert daemon.bfctl("status", "one").returncode == 1
        assert daemon.bfctl("remove", "one").returncode == 1  # once only
        assert daemon.bfctl_json("list")["jobs"] == []

        # The name is free: the other parameters are taken now, and the job runs.
        submit(daemon, "one", other, dest)
        daemon.wait_state("one", {"completed"})
    for path in list(dataset.files)[:2]:
        assert (dest / path).read_bytes() == dataset.files[path]


def test_every_hint_names_a_command_that_works_in_that_state(patient_daemon, tmp_path):
    """Refused verbs in each state name commands; each one is run in that state."""
    daemon = patient_daemon
    dataset = make_dataset(2, 2048, seed=32)
    faults = {
        "missing.bin": Fault(FaultKind.STATUS_404),
        "slow.bin": Fault(FaultKind.STALL, after_bytes=10, seconds=3600),
    }
    files = {**dataset.files, "slow.bin": b"s" * 1000}
    with Origin(files, faults) as origin:
        ok = write_manifest(tmp_path / "ok.jsonl", manifest_rows(origin, dataset))
        bad = write_manifest(tmp_path / "bad.jsonl", [{"url": origin.url_for("missing.bin")}])
        slow = write_manifest(tmp_path / "slow.jsonl", [{"url": origin.url_for("slow.bin")}])
        submit(daemon, "done", ok, tmp_path / "a")
        submit(daemon, "broken", bad, tmp_path / "b")
        submit(daemon, "held", slow, tmp_path / "c")
        submit(daemon, "dropped", slow, tmp_path / "d")
        daemon.wait_state("done", {"completed"})
        daemon.wait_state("broken", {"failed"})
        wait_until(lambda: len(origin.requests("slow.bin")) >= 2, what="both slow requests")
        assert daemon.bfctl_json("pause", "held")["state"] == "paused"
        assert daemon.bfctl_json("cancel", "dropped")["state"] == "cancelled"
        # name: (its state, the verbs that state refuses)
        cases = {
            "done": ("completed", ("pause", "resume", "cancel", "continue")),
            "broken": ("failed", ("pause", "resume", "cancel", "continue")),
            "held": ("paused", ("pause", "continue")),
            "dropped": ("cancelled", ("pause", "resume", "cancel", "continue", "retry")),
        }
        # A cancelled job's batches ended with it: none says active, in status or the store.
        batch_states = {b["state"] for b in daemon.bfctl_json("status", "dropped")["batches"]}
        assert batch_states == {"cancelled"}, batch_states
        stored = daemon.read_store().execute(
            "SELECT DISTINCT batches.state FROM batches JOIN jobs ON jobs.id = batches.job_id "
            "WHERE jobs.name = 'dropped'"
        )
        assert {state for (state,) in stored} == {"cancelled"}
        for name, (state, verbs) in cases.items():
            hinted: set[tuple[str, str]] = set()
            advice: set[str] = set()
            for verb in verbs:
                refused = daemon.bfctl(verb, name)
                assert refused.returncode == 1, (verb, state, refused.stdout)
                assert "Traceback" not in refused.stderr
                hinted |= set(HINTED.findall(refused.stderr))
                said = ADVICE.search(" ".join(refused.stderr.split()))
                assert said and said[1] == verb, (verb, state, refused.stderr)
                advice.add(said[2])
            assert hinted, f"no hint names a command for a {state} job"
            # One advice per state, whichever verb was refused (resume and retry alike).
            assert len(advice) == 1, (state, advice)
            # remove last: it ends the job's life
            for command, named in sorted(hinted, key=lambda c: c[0] == "remove"):
                assert named == name
                daemon.wait_state(name, {state}, timeout=30)
                done = daemon.bfctl(command, named)
                assert done.returncode == 0, (
                    f"hint `bfctl {command} {named}` ({state}): {done.stderr}"
                )


def tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def test_a_refused_command_leaves_no_directory_behind(daemon, tmp_path):
    area = tmp_path / "area"
    area.mkdir()
    before = tree(area)
    refused = daemon.bfctl(
        "submit", "download", "ftp", "--url", "ftp://host/a.bin", "--dest", str(area / "x/y/z")
    )
    assert refused.returncode == 1
    assert "only http and https URLs can be fetched, not ftp://" in refused.stderr
    with Origin({"a.bin": b"a" * 100}, {"deep/er/gone.bin": Fault(FaultKind.STATUS_404)}) as o:
        rows = [{"url": o.url_for("a.bin"), "path": "a.bin"}]
        rows.append({"url": o.url_for("deep/er/gone.bin"), "path": "deep/er/gone.bin"})
        manifest = write_manifest(tmp_path / "m.jsonl", rows)
        submit(daemon, "dl", manifest, area / "dl")
        daemon.wait_state("dl", {"failed"})
    # The 404 made no directory for the file it never got.
    assert tree(area / "dl") == {"a.bin"}
    export = daemon.bfctl("export", "dl", "--dest", str(area / "e/f"))
    assert export.returncode == 1, export.stdout
    assert tree(area) == before | {"dl", "dl/a.bin"}


def test_a_refused_second_bfd_leaves_nothing_in_its_state_dir(daemon, make_daemon, tmp_path):
    second = make_daemon(root=tmp_path / "second")
    second.socket = daemon.socket  # the socket the first one holds
    done = subprocess.run(second.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "already uses socket" in done.stderr
    assert not second.state_dir.exists(), tree(second.root)
    assert daemon.bfctl_json("list") == {"jobs": []}  # the first one is unharmed


def test_a_size_that_disagrees_with_the_manifest_is_asked_once_more_then_final(daemon, tmp_path):
    with Origin({"a.bin": b"a" * 1000}) as origin:
        rows = [{"url": origin.url_for("a.bin"), "path": "a.bin", "size": 1234}]
        submit(daemon, "sized", write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "d")
        job = daemon.wait_state("sized", {"failed"})
        requests = len(origin.requests("a.bin"))
    assert job.retrying == 0 and requests == 2  # max attempts is 4
    failure = daemon.bfctl_json("failures", "sized")["failures"][0]
    assert failure["error_class"] == "size" and failure["retrying"] is False


def test_list_filters_by_state_and_kind(daemon, tmp_path):
    with Origin({"a.bin": b"a"}, {"gone.bin": Fault(FaultKind.STATUS_404)}) as origin:
        ok = write_manifest(tmp_path / "ok.jsonl", [{"url": origin.url_for("a.bin")}])
        bad = write_manifest(tmp_path / "bad.jsonl", [{"url": origin.url_for("gone.bin")}])
        submit(daemon, "good", ok, tmp_path / "a")
        submit(daemon, "bad", bad, tmp_path / "b")
        daemon.wait_state("good", {"completed"})
        daemon.wait_state("bad", {"failed"})

    def listed(*flags: str) -> list[str]:
        return [job["name"] for job in daemon.bfctl_json("list", *flags)["jobs"]]

    assert listed() == ["good", "bad"]
    assert listed("--state", "failed") == ["bad"]
    assert listed("--state", "completed,failed", "--kind", "download") == ["good", "bad"]
    assert listed("--state", "running") == []
    assert listed("--kind", "scenes") == []
    for flags, words in (
        (("--state", "doen"), "unknown state 'doen' (known: queued, running"),
        (("--kind", "dowload"), "unknown kind 'dowload'; did you mean 'download'?"),
    ):
        refused = daemon.bfctl("list", *flags)  # bfctl knows them: refused before bfd is asked
        assert refused.returncode == 2 and words in refused.stderr, refused.stderr


def test_batches_say_when_they_started_what_failed_and_run_one_at_a_time(daemon, tmp_path):
    dataset = make_dataset(6, 1000, seed=33)
    names = sorted(dataset.files)
    with Origin(dataset.files, {names[0]: Fault(FaultKind.STATUS_404)}) as origin:
        rows = manifest_rows(origin, dataset)
        manifest = write_manifest(tmp_path / "m.jsonl", rows)
        daemon.submit_batched("cut", manifest, tmp_path / "d", 2500)
        daemon.wait_state("cut", {"failed"})
    status = daemon.bfctl_json("status", "cut")
    with daemon.read_store() as db:
        by_batch = dict(
            db.execute(
                "SELECT batch_idx, count(*) FROM files WHERE state = 'failed' GROUP BY batch_idx"
            ).fetchall()
        )
        started = dict(db.execute("SELECT idx, started_at FROM batches").fetchall())
    assert len(status["batches"]) == 3 and sum(by_batch.values()) == 1
    for batch in status["batches"]:
        assert batch["failures"] == by_batch.get(batch["index"], 0)
        assert batch["started_at"] is not None and started[batch["index"]] is not None
        assert batch["started_at"] <= batch["finished_at"]
    # One batch at a time: each starts only once the one before it has finished.
    with daemon.read_store() as db:
        spans = db.execute("SELECT started_at, updated_at FROM batches ORDER BY idx").fetchall()
    gaps = [start - end for (_, end), (start, _) in itertools.pairwise(spans)]
    assert min(gaps) >= 0, spans
    assert status["failed"] == 1 and status["succeeded"] == 5 and status["finished"] == 6


def test_a_pause_does_not_send_the_bytes_received_back(patient_daemon, tmp_path):
    daemon = patient_daemon
    files = {"a.bin": b"a" * 100_000, "b.bin": b"b" * 100_000}
    stall = {
        name: Fault(FaultKind.STALL, after_bytes=40_000, seconds=3600, times=1) for name in files
    }
    with Origin(files, stall) as origin:
        rows = [{"url": origin.url_for(n), "path": n, "size": len(d)} for n, d in files.items()]
        submit(daemon, "halt", write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "d")
        wait_until(
            lambda: daemon.bfctl_json("status", "halt")["bytes_done"] >= 80_000,
            what="both transfers at their stall",
        )
        paused = daemon.bfctl_json("pause", "halt")
        assert paused["state"] == "paused"
        # The partials stay for the resume, and so does the progress they stand for.
        assert daemon.bfctl_json("status", "halt")["bytes_done"] >= 80_000
        assert daemon.bfctl_json("resume", "halt")["bytes_done"] >= 80_000
        daemon.wait_state("halt", {"completed"})
    assert daemon.bfctl_json("status", "halt")["bytes_done"] == 200_000
    for name, data in files.items():
        assert (tmp_path / "d" / name).read_bytes() == data


def test_bytes_in_flight_count_beyond_a_total_that_leaves_out_unknown_sizes(
    patient_daemon, tmp_path
):
    """A file of unknown size (no size in the manifest) is not in bytes_total: what has come
    of it counts all the same, while it comes and while the job is paused."""
    daemon = patient_daemon
    files = {"known.bin": b"k" * 1_000, "unknown.bin": b"u" * 100_000}
    stall = {"unknown.bin": Fault(FaultKind.STALL, after_bytes=40_000, seconds=3600, times=1)}
    with Origin(files, stall) as origin:
        rows = [{"url": origin.url_for("known.bin"), "path": "known.bin", "size": 1_000},
                {"url": origin.url_for("unknown.bin"), "path": "unknown.bin"}]  # fmt: skip
        submit(daemon, "part", write_manifest(tmp_path / "m.jsonl", rows), tmp_path / "d")
        wait_until(
            lambda: daemon.bfctl_json("status", "part")["bytes_done"] >= 41_000,
            what="the unknown file at its stall, beyond the known total",
        )
        status = daemon.bfctl_json("status", "part")
        assert status["bytes_total"] == 1_000 and not status["bytes_total_known"]
        assert daemon.bfctl_json("pause", "part")["bytes_done"] >= 41_000
        daemon.bfctl_json("resume", "part")
        daemon.wait_state("part", {"completed"})
    assert daemon.bfctl_json("status", "part")["bytes_done"] == 101_000


def test_a_full_disk_does_not_hold_back_a_file_it_already_holds(make_daemon, tmp_path, tmpfs):
    """A file interrupted with most of its bytes on a nearly full disk is resumed, not held
    forever for room it needs only the rest of."""
    disk = tmpfs("full", "8m")
    data = os.urandom(3 * 2**20)
    stall = {"big.bin": Fault(FaultKind.STALL, after_bytes=2_900_000, seconds=60, times=1)}
    daemon = make_daemon("--disk-threshold", "0.95").start()
    with Origin({"big.bin": data}, stall) as origin:
        row = {"url": origin.url_for("big.bin"), "path": "big.bin", "size": len(data)}
        submit(daemon, "held", write_manifest(tmp_path / "m.jsonl", [row]), disk)
        wait_until(
            lambda: daemon.bfctl_json("status", "held")["bytes_done"] >= 2_900_000,
            what="the transfer at its stall",
        )
        daemon.kill9()
        # Fill the disk: the threshold leaves room for less than the file (3 MiB), more than
        # the ~250 kB it lacks.
        usage = shutil.disk_usage(disk)
        room = 400_000
        (disk / "filler").write_bytes(b"\0" * (usage.free - int(usage.total * 0.05) - room))
        daemon.start()
        job = daemon.wait_state("held", {"completed", "failed"}, timeout=60)
    assert job.state == "completed", job.message
    assert (disk / "big.bin").read_bytes() == data
    assert daemon.stop() == 0


def test_a_download_whose_dest_is_gone_is_held_not_failed_and_goes_on_once_it_is_back(
    patient_daemon, tmp_path
):
    """A disk that comes back without the dest (unmounted, or it lost the directory): the
    job waits for `bfctl resume`, saying so; none of its files is failed for want of it."""
    daemon = patient_daemon
    files = {f"f{i}.bin": bytes([i]) * 50_000 for i in range(4)}
    stall = {"f0.bin": Fault(FaultKind.STALL, after_bytes=20_000, seconds=3600, times=1)}
    dest = tmp_path / "d"
    with Origin(files, stall) as origin:
        rows = [{"url": origin.url_for(n), "path": n, "size": len(d)} for n, d in files.items()]
        submit(daemon, "gone", write_manifest(tmp_path / "m.jsonl", rows), dest)
        wait_until(
            lambda: daemon.bfctl_json("status", "gone")["bytes_done"] >= 20_000,
            what="a transfer at its stall",
        )
        assert daemon.bfctl_json("pause", "gone")["state"] == "paused"
        shutil.rmtree(dest)
        daemon.bfctl_json("resume", "gone")
        wait_until(
            lambda: "is gone" in daemon.bfctl_json("status", "gone")["message"],
            what="the job held for its dest",
        )
        status = daemon.bfctl_json("status", "gone")
        assert status["state"] == "paused" and "failed" not in status["counts"], status
        assert str(dest) in status["message"]
        # The directory back: the operator says so (bfd cannot tell it from a bare mount
        # point, where the job must not write).
        dest.mkdir()
        daemon.bfctl_json("resume", "gone")
        job = daemon.wait_state("gone", {"completed", "failed"})
    assert job.state == "completed", job
    # What was still to come came; what was done before went with the directory (bfctl
    # verify would say so), and no file was failed meanwhile.
    assert (dest / "f0.bin").read_bytes() == files["f0.bin"]
    assert dict(job.counts) == {"done": len(files)}
