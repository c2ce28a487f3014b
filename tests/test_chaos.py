"""Chaos: one bfd running a job of every kind, killed with SIGKILL at random moments.

A download from a faulty origin, a scenes job, a clean job and a generate job share one
bfd, which is killed at least KILLS times while their work is in flight and restarted on
the same state dir; between two kills of bfd, one of its CPU or transfer workers is often
killed too (at most one a life of bfd, so no task reaches the bound of its retries). After
each kill of bfd every process it started must be gone within seconds, the store must be
sound, still hold everything bfd reported finished before it, and what it calls done must
be on disk, right. At the end every output must be byte-correct (the clean and generate
outputs equal to an uninterrupted run of the same input), nothing may be in two places, and
the clean and generate jobs' statistics must equal the uninterrupted runs'.

The kill moments come from `random.Random(seed)`; the seed is printed, and
BF_CHAOS_SEED=<seed> runs the same schedule again (timing still varies).
"""

import contextlib
import hashlib
import json
import os
import random
import secrets
import select
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import apsw
import pyarrow.parquet as pq
import pytest
from binance_data import write_trades_zip
from conftest import (
    FAST_RETRIES,
    Daemon,
    Dataset,
    gone,
    make_dataset,
    manifest_rows,
    wait_until,
    write_manifest,
)
from origin import Fault, FaultKind, Origin
from test_clean import outputs
from test_crash import check_done_files
from test_generate import SPEC, digests
from test_scenes import index_rows, items, shard_samples, write_input
from test_workers import CPU_WORKER, STOP_WITHIN_S, processes_of

from bulkforge.daemon.bandwidth import Bandwidth
from bulkforge.daemon.transfer.protocol import Order, ToFile, frame
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

KILLS = 30
SEED_VARIABLE = "BF_CHAOS_SEED"
ENDED = {"completed", "failed", "cancelled"}
# How long after a job moved on its kill may land: short, so it finds work in flight.
MOST_DELAY_S = 0.4
# Generous: only a hang should ever reach it.
PROGRESS_TIMEOUT_S = 180
# How often, between two kills of bfd with no CPU work running, a transfer worker is killed.
WORKER_KILL_P = 0.6
WORKERS = {"cpu": CPU_WORKER, "transfer": "bulkforge.daemon.transfer.worker"}
# Sized so that the download and the scenes job are still at work after KILLS kills
# (their pace is the origins' stalls, not the CPU); the clean and generate jobs, paced by
# the CPU, take as many of the kills as their work lasts.
FILES, DOWNLOAD_STALL_S = 500, 0.5
SCENES, SCENES_STALL_S, SCENE_SHARD = 3000, 0.05, 25
GONE_EVERY = 97  # every 97th scenes item is gone from its origin
SERIES, SERIES_ROWS = 6, 80_000  # of the clean job: each series two daily zips, cleaned whole
GENERATED_ROWS, GENERATED_CHUNK, GENERATED_SEED = 1_000_000, 100_000, 17
# A job's done items as the store holds them, by kind.
DONE_ITEMS = {
    "download": "SELECT path FROM files WHERE job_id = ? AND state = 'done'",
    "scenes": "SELECT key FROM scenes WHERE job_id = ? AND state = 'done'",
    "clean": "SELECT path FROM clean_zips WHERE job_id = ? AND state = 'done'",
    "generate": "SELECT table_name || '/' || idx FROM generate_parts "
    "WHERE job_id = ? AND state = 'done'",
}
DONE_PARTS = (
    "SELECT table_name, idx, sha256 FROM generate_parts JOIN jobs ON jobs.id = job_id "
    "WHERE jobs.name = 'gen' AND generate_parts.state = 'done'"
)
COMPLETE_SHARDS = (
    "SELECT idx FROM batches JOIN jobs ON jobs.id = batches.job_id "
    "WHERE jobs.name = 'scenes' AND batches.state = 'complete'"
)


def chaos_seed() -> int:
    seed = int(os.environ.get(SEED_VARIABLE) or secrets.randbelow(2**32))
    print(f"chaos seed {seed}: replay with {SEED_VARIABLE}={seed}")
    return seed


# -- the inputs ------------------------------------------------------------------------------


@dataclass
class Inputs:
    """What the four jobs read, and what each must end with."""

    downloads: Dataset
    gone: str  # the one file of the manifest its origin never has
    scene_files: dict[str, bytes]  # origin name -> content, in input order
    zips: Path

    @property
    def scenes(self) -> dict[str, bytes]:
        """Content by key (write_input keys the n-th name k<n>)."""
        return {f"k{n:05d}": data for n, data in enumerate(self.scene_files.values())}

    @property
    def scenes_gone(self) -> set[str]:
        return {f"k{n:05d}" for n in range(0, SCENES, GONE_EVERY)}

    def served(self) -> dict[str, bytes]:
        """What the download origin has: every file but the gone one."""
        return {name: data for name, data in self.downloads.files.items() if name != self.gone}


def make_inputs(tmp_path: Path) -> Inputs:
    downloads = make_dataset(FILES, 20_000, vary=20_000, seed=61)
    return Inputs(
        downloads=downloads,
        gone=sorted(downloads.files)[0],
        scene_files=items(SCENES),
        zips=write_zips(tmp_path / "zips"),
    )


def write_zips(root: Path) -> Path:
    day = date(2024, 5, 1)
    for n in range(SERIES):
        for d in range(2):
            first = 1 + d * SERIES_ROWS
            write_trades_zip(root, "spot", f"{chr(65 + n) * 3}USDT", day + timedelta(days=d),
                             first, SERIES_ROWS, seed=n + d)  # fmt: skip
    return root


def download_faults(inputs: Inputs) -> dict[str, Fault]:
    """Every GET of a file pauses half way; some fail once in each way first."""
    names = sorted(inputs.downloads.files)
    faults = {"*": Fault(FaultKind.STALL, seconds=DOWNLOAD_STALL_S)}
    once = (
        Fault(FaultKind.RESET, times=1),
        Fault(FaultKind.SHORT_BODY, times=1),
        Fault(FaultKind.STATUS_503, times=1),
        Fault(FaultKind.CORRUPT, times=1),
        Fault(FaultKind.STALL, times=1, after_bytes=1000, seconds=3),
    )
    for index, name in enumerate(names[1:60:3]):
        faults[name] = once[index % len(once)]
    return faults


def scenes_faults(inputs: Inputs) -> dict[str, Fault]:
    """Every item pauses a little; some fail once; every GONE_EVERY-th is gone for good."""
    names = list(inputs.scene_files)
    faults = {"*": Fault(FaultKind.STALL, after_bytes=1, seconds=SCENES_STALL_S)}
    for name in names[5:200:11]:
        faults[name] = Fault(FaultKind.STATUS_500, times=1)
    for name in names[::GONE_EVERY]:
        faults[name] = Fault(FaultKind.STATUS_404)
    return faults


# -- the jobs --------------------------------------------------------------------------------


def clean_spec(inputs: Inputs, dest: Path) -> pb.SubmitRequest:
    return pb.SubmitRequest(clean=pb.CleanSpec(input=str(inputs.zips), dest=str(dest)))


def generate_spec(dest: Path) -> pb.SubmitRequest:
    dest.mkdir(parents=True, exist_ok=True)
    spec = pb.GenerateSpec(
        spec_text=SPEC,
        spec_name="school.toml",
        rows=GENERATED_ROWS,
        seed=GENERATED_SEED,
        chunk_rows=GENERATED_CHUNK,
        dest=str(dest),
    )
    return pb.SubmitRequest(generate=spec)


def submit(daemon: Daemon, name: str, request: pb.SubmitRequest) -> None:
    request.name = name
    assert daemon.stub.Submit(request, timeout=60).created


@dataclass
class Jobs:
    """The four jobs on one bfd, by name, and where each writes."""

    dests: dict[str, Path]

    def status(self, daemon: Daemon) -> dict[str, pb.Job]:
        return {name: daemon.stub.Status(pb.JobRef(name=name), timeout=30) for name in self.dests}


def submit_all(daemon: Daemon, origins: tuple[Origin, Origin], inputs: Inputs, tmp_path: Path):
    """The four jobs; the download and the scenes job each fetch from their own origin."""
    jobs = Jobs({name: tmp_path / "out" / name for name in ("dl", "scenes", "clean", "gen")})
    rows = manifest_rows(origins[0], inputs.downloads)
    daemon.submit("dl", write_manifest(tmp_path / "dl.jsonl", rows), jobs.dests["dl"])
    source = write_input(tmp_path / "scenes.parquet", origins[1], list(inputs.scene_files))
    scenes = pb.ScenesSpec(input=str(source), key="key", url="url", shard_size=SCENE_SHARD,
                           timeout_s=2, dest=str(jobs.dests["scenes"]))  # fmt: skip
    submit(daemon, "scenes", pb.SubmitRequest(scenes=scenes))
    submit(daemon, "clean", clean_spec(inputs, jobs.dests["clean"]))
    submit(daemon, "gen", generate_spec(jobs.dests["gen"]))
    return jobs


# -- what bfd reported, and what a killed bfd left ------------------------------------------


@dataclass
class Finished:
    """What bfd reported finished just before a kill: done counts, and done items exported."""

    done: dict[str, int]
    exported: dict[str, set[str]]


def exported_done(daemon: Daemon, name: str, dest: Path) -> set[str]:
    """The items an export of a scenes or clean job lists as done; none is listed twice."""
    daemon.stub.Export(pb.ExportRequest(name=name, dest=str(dest)), timeout=60)
    if name == "scenes":
        keys = pq.read_table(dest / "successful_tokens.parquet").column("scene_token").to_pylist()
        failed = pq.read_table(dest / "failed_tokens.parquet").column("scene_token").to_pylist()
        assert len(set(keys + failed)) == len(keys) + len(failed), "an item exported twice"
        return set(keys)
    zips = pq.read_table(dest / "zips.parquet").to_pylist()
    assert len({z["path"] for z in zips}) == len(zips), "a zip exported twice"
    return {z["path"] for z in zips if z["state"] == "done"}


def sample_finished(daemon: Daemon, jobs: Jobs, exports: Path) -> Finished:
    statuses = jobs.status(daemon)
    exported = {name: exported_done(daemon, name, exports / name) for name in ("scenes", "clean")}
    return Finished({name: job.succeeded for name, job in statuses.items()}, exported)


def read_only(daemon: Daemon) -> apsw.Connection:
    return apsw.Connection(str(daemon.state_dir / "bulkforge.db"), flags=apsw.SQLITE_OPEN_READONLY)


def done_in_store(conn: apsw.Connection) -> dict[str, set[str]]:
    """Each job's done items, as the store holds them."""
    return {
        name: {item for (item,) in conn.execute(DONE_ITEMS[kind], (job_id,))}
        for job_id, name, kind in conn.execute("SELECT id, name, kind FROM jobs")
    }


@dataclass
class Checked:
    """Outputs already found right after an earlier kill (each is checked once)."""

    parts: set[tuple[str, int]] = field(default_factory=set)
    shards: set[int] = field(default_factory=set)


def check_store_after_kill(
    daemon: Daemon, jobs: Jobs, before: Finished, inputs: Inputs, checked: Checked
) -> None:
    """The store of a killed bfd is sound, holds all it reported done, and its done is true."""
    conn = read_only(daemon)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        done = done_in_store(conn)
        parts = conn.execute(DONE_PARTS).fetchall()
        shards = {index for (index,) in conn.execute(COMPLETE_SHARDS)}
    finally:
        conn.close()
    for name, count in before.done.items():
        assert len(done[name]) >= count, f"{name}: {count} reported done, {len(done[name])} kept"
    for name, exported in before.exported.items():
        lost = sorted(exported - done[name])
        assert not lost, f"{name}: exported done, then lost: {lost}"
    check_done_files(daemon.state_dir / "bulkforge.db", jobs.dests["dl"])
    check_parts(jobs.dests["gen"], [p for p in parts if p[:2] not in checked.parts])
    checked.parts |= {p[:2] for p in parts}
    check_shards(jobs.dests["scenes"], shards - checked.shards, inputs.scenes)
    checked.shards |= shards


def check_parts(dest: Path, parts: list[tuple[str, int, str]]) -> None:
    """Each part is on disk with the digest the store recorded for it."""
    for table, index, sha256 in parts:
        part = dest / table / f"part-{index:05d}.parquet"
        assert hashlib.sha256(part.read_bytes()).hexdigest() == sha256, f"{part}: wrong bytes"


def check_shards(dest: Path, shards: set[int], contents: dict[str, bytes]) -> None:
    """Each shard is a whole tar whose samples hold exactly their items' bytes."""
    for index in shards:
        with tarfile.open(dest / f"{index:05d}.tar") as tar:
            for member in tar:
                key, extension = member.name.rsplit(".", 1)
                data = tar.extractfile(member).read()
                assert len(data) == member.size
                if extension == "jpg":
                    assert data == contents[key], f"shard {index}: {member.name} wrong"


# -- the kills -------------------------------------------------------------------------------


def progress(job: pb.Job) -> tuple[int, int]:
    return job.finished, job.bytes_done


def wait_for_progress(daemon: Daemon, name: str) -> None:
    """Until the job has moved on since this call (or ended): its work is in flight."""
    start = progress(daemon.stub.Status(pb.JobRef(name=name), timeout=30))
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while True:
        job = daemon.stub.Status(pb.JobRef(name=name), timeout=30)
        if job.state in ENDED or progress(job) > start:
            return
        assert time.monotonic() < deadline, f"{name} made no progress:\n{daemon.log_tail()}"
        time.sleep(0.02)


def unfinished(daemon: Daemon, jobs: Jobs) -> list[str]:
    return [name for name, job in jobs.status(daemon).items() if job.state not in ENDED]


def kill_a_worker(daemon: Daemon, rng: random.Random) -> str | None:
    """Kill -9 one CPU worker while there are any (the clean and generate jobs last only a
    few lives of bfd), else often one transfer worker; which kind, or None."""
    for kind in WORKERS:
        pids = processes_of(daemon, WORKERS[kind])
        if pids and (kind == "cpu" or rng.random() < WORKER_KILL_P):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rng.choice(pids), signal.SIGKILL)
            return kind
    return None


def kill_bfd(daemon: Daemon, kills: int) -> None:
    """Kill -9 bfd; every process it started is gone within seconds."""
    started = daemon.workers()
    daemon.kill9()
    wait_until(
        lambda: all(map(gone, started)),
        timeout=STOP_WITHIN_S,
        what=f"kill {kills}: every process bfd started to end with it",
    )


def kill_again_and_again(
    daemon: Daemon, jobs: Jobs, inputs: Inputs, rng, exports: Path
) -> tuple[int, Counter]:
    """Kill bfd whenever a job chosen at random has just moved on, often one of its workers
    first; how many kills of bfd landed, and of workers by kind."""
    kills, workers_killed = 0, Counter()
    checked = Checked()
    while kills < KILLS and (running := unfinished(daemon, jobs)):
        target = rng.choice(running)
        wait_for_progress(daemon, target)
        time.sleep(rng.uniform(0, MOST_DELAY_S))
        if kind := kill_a_worker(daemon, rng):
            workers_killed[kind] += 1
            wait_for_progress(daemon, target)
            time.sleep(rng.uniform(0, MOST_DELAY_S))
        before = sample_finished(daemon, jobs, exports)
        kills += 1
        kill_bfd(daemon, kills)
        print(f"kill {kills} after {target} moved on; done then: {before.done}", flush=True)
        check_store_after_kill(daemon, jobs, before, inputs, checked)
        daemon.start()
        after = jobs.status(daemon)
        for name, count in before.done.items():
            assert after[name].succeeded >= count, f"kill {kills}: {name} lost done items"
    return kills, workers_killed


# -- the end ---------------------------------------------------------------------------------


def leftovers(dest: Path) -> list[Path]:
    """What a transfer or a durable write leaves while under way: a partial or a temp file."""
    return [p for p in dest.rglob("*") if p.name.endswith((".partial", ".tmp"))]


def check_final_download(job: pb.Job, inputs: Inputs, dest: Path) -> None:
    assert job.state == "failed" and dict(job.counts) == {"done": FILES - 1, "failed": 1}, job
    assert job.bytes_done == sum(len(data) for data in inputs.served().values())
    for name, data in inputs.downloads.files.items():
        if name != inputs.gone:
            assert (dest / name).read_bytes() == data, name
    assert not (dest / inputs.gone).exists()


def check_final_scenes(job: pb.Job, inputs: Inputs, dest: Path, exported: set[str]) -> None:
    ok = set(inputs.scenes) - inputs.scenes_gone
    assert dict(job.counts) == {"done": len(ok), "failed": len(inputs.scenes_gone)}, job
    assert job.bytes_done == sum(len(inputs.scenes[key]) for key in ok)
    samples = shard_samples(dest)
    assert set(samples) == ok and set(samples.values()) == {1}, "an item in two shards"
    check_shards(dest, {int(p.stem) for p in dest.glob("*.tar")}, inputs.scenes)
    keys = [row[0] for row in index_rows(dest)]
    assert sorted(keys) == sorted(inputs.scenes), "an item indexed twice or not at all"
    assert exported == ok


def check_final_clean_and_generate(daemon: Daemon, jobs: Jobs, references: dict[str, Path]):
    """Byte for byte what the uninterrupted runs wrote; the clean job's stats, rows counted
    once, the same as the other's; every generated row counted once; the job-level
    statistics bfd reports the same as the uninterrupted runs'."""
    assert outputs(jobs.dests["clean"]) == outputs(references["clean-ref"])
    assert len(outputs(jobs.dests["clean"])) == 2 * 2 * SERIES  # data and stats of each day
    for name in ("clean", "gen"):
        ours, theirs = (
            daemon.stub.Status(pb.JobRef(name=n), timeout=30) for n in (name, f"{name}-ref")
        )
        assert job_stats(ours) == job_stats(theirs), name
    # The clean job's stats.json: rows and rejects of every zip, committed with the zip's
    # outcome, so that no kill leaves a zip counted as null.
    stats = [
        json.loads((dest / "_jobs" / name / "stats.json").read_text())
        for name, dest in (("clean", jobs.dests["clean"]), ("clean-ref", references["clean-ref"]))
    ]
    assert {**stats[0], "job": "clean-ref"} == stats[1]
    assert digests(jobs.dests["gen"]) == digests(references["gen-ref"])
    tables = {t.name: t for t in daemon.stub.Status(pb.JobRef(name="gen"), timeout=30).tables}
    assert tables["students"].rows_done == tables["students"].rows_total == GENERATED_ROWS
    assert all(
        t.rows_done == t.rows_total and t.parts_done == t.parts_total for t in tables.values()
    )


def job_stats(job: pb.Job) -> dict:
    """What bfd reports of a job as a whole, its name and times aside."""
    return {
        "state": job.state,
        "counts": dict(job.counts),
        "items_total": job.items_total,
        "finished": job.finished,
        "succeeded": job.succeeded,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "message": job.message,
        "tables": [
            (t.name, t.rows_done, t.rows_total, t.parts_done, t.parts_total) for t in job.tables
        ],
    }


def rerun_uninterrupted(daemon: Daemon, inputs: Inputs, root: Path) -> dict[str, Path]:
    """The clean and generate jobs again, into other dests, with no kill."""
    references = {"clean-ref": root / "clean", "gen-ref": root / "gen"}
    submit(daemon, "clean-ref", clean_spec(inputs, references["clean-ref"]))
    submit(daemon, "gen-ref", generate_spec(references["gen-ref"]))
    for name in references:
        assert daemon.wait_state(name, ENDED, timeout=300).state == "completed"
    return references


def check_counts_match_rows(daemon: Daemon) -> None:
    """The counts kept beside the items (what status reads) are the items' own, bytes too."""
    conn = read_only(daemon)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        for counts, table, column in (("file_counts", "files", "files"),
                                      ("scene_counts", "scenes", "items")):  # fmt: skip
            kept = conn.execute(
                f"SELECT job_id, state, {column}, bytes FROM {counts} WHERE {column} > 0 "
                "ORDER BY 1, 2"
            ).fetchall()
            actual = conn.execute(
                f"SELECT job_id, state, count(*), coalesce(sum(size), 0) FROM {table} "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
            assert kept == actual, (counts, kept, actual)
    finally:
        conn.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_9_again_and_again_across_every_kind_of_job(make_daemon, tmp_path: Path) -> None:
    rng = random.Random(chaos_seed())
    started = time.monotonic()
    inputs = make_inputs(tmp_path)
    daemon = make_daemon(*FAST_RETRIES, "--cpu-workers", "2", "--max-connections", "8",
                         "--per-host-connections", "4")  # fmt: skip
    download_origin = Origin(inputs.served(), download_faults(inputs))
    with download_origin, Origin(inputs.scene_files, scenes_faults(inputs)) as scenes_origin:
        daemon.start()
        jobs = submit_all(daemon, (download_origin, scenes_origin), inputs, tmp_path)
        kills, workers_killed = kill_again_and_again(
            daemon, jobs, inputs, rng, tmp_path / "exports"
        )
        assert kills >= KILLS, f"every job ended after {kills} kills: give them more work"
        print(f"chaos: workers killed besides bfd: {dict(workers_killed)}")
        assert set(workers_killed) == set(WORKERS), "a kind of worker was never killed"
        final = {name: daemon.wait_state(name, ENDED, timeout=300) for name in jobs.dests}
    print(f"chaos: {kills} kills survived, all jobs ended {time.monotonic() - started:.0f} s in")
    last = sample_finished(daemon, jobs, tmp_path / "exports")
    check_final_download(final["dl"], inputs, jobs.dests["dl"])
    check_done_files(daemon.state_dir / "bulkforge.db", jobs.dests["dl"])
    check_final_scenes(final["scenes"], inputs, jobs.dests["scenes"], last.exported["scenes"])
    assert final["clean"].state == "completed" and final["gen"].state == "completed"
    zips = {str(p.relative_to(inputs.zips)) for p in inputs.zips.rglob("*.zip")}
    assert last.exported["clean"] == zips
    references = rerun_uninterrupted(daemon, inputs, tmp_path / "ref")
    check_final_clean_and_generate(daemon, jobs, references)
    for name, dest in jobs.dests.items():
        assert not leftovers(dest), (name, leftovers(dest))
    assert daemon.stop() == 0, daemon.log_tail()
    check_counts_match_rows(daemon)
    assert "Traceback" not in daemon.log.read_text(), "a process of bfd died of an exception"


def test_a_transfer_worker_whose_bfd_is_killed_ends_quietly(tmp_path: Path) -> None:
    """What the chaos found: bfd killed with a worker's progress unread resets the worker's
    socket, and the worker died of the ConnectionResetError with a traceback in bfd's log
    (about one kill in ten). A reset says what an end of file says: bfd is gone."""
    stall = {"slow.bin": Fault(FaultKind.STALL, after_bytes=10, seconds=30)}
    with Origin({"slow.bin": b"s" * 1000}, stall) as origin:
        ours, theirs = socket.socketpair()
        bandwidth = Bandwidth()
        command = [sys.executable, "-m", "bulkforge.daemon.transfer.worker", str(theirs.fileno()),
                   str(bandwidth.fd), str(os.getpid()), "2", "30"]  # fmt: skip
        worker = subprocess.Popen(
            command, pass_fds=(theirs.fileno(), bandwidth.fd), stderr=subprocess.PIPE
        )
        theirs.close()
        sink = ToFile(str(tmp_path / "slow.bin.partial"), 0, None, 1000, False, str(tmp_path))
        ours.sendall(frame(Order(1, origin.url_for("slow.bin"), {}, sink)))
        wait_until(lambda: select.select([ours], [], [], 0)[0], what="the worker's progress")
        ours.close()  # as the kernel closes a killed bfd's end: with that progress unread
        _, errors = worker.communicate()
    assert worker.returncode == 0 and b"Traceback" not in errors, errors.decode()
