"""The real bfd on a store holding one download job of a million file rows.

    python bench/million_files_bench.py [--n 1000000] [--dir D] [--starts 3] [--calls 50]
                                        [--in-flight 16] [--job-state paused|running] [--keep]

Build (not timed against the daemon): a state dir whose store is created by
`store.apply_schema` (so the file-count triggers are in effect), then, in one apsw
transaction, `register.create_download_job` with N rows and the job moved queued -> running ->
paused through `jobs.move_job`. URLs point at 127.0.0.1:9, where nothing listens.

Each start: first `files.claim` moves --in-flight rows to downloading (a crash's leftovers, for
boot repair to move back), then `python -m bulkforge.daemon --state-dir D --socket S` starts and
is measured for
- restart-to-ready: process start until grpc.health.v1 Check("") answers SERVING;
- Status and List latency over --calls calls each (median, p99) through the generated stub;
- daemon RSS (psutil) after those calls, DB and WAL size;
- the exit code after SIGTERM, and how long stopping took.
The job is paused by default so the downloader leaves it alone and the numbers are the store's;
--job-state running lets the scheduler claim files (their fetches fail fast on port 9).
Prints a table, then one JSON line.
"""

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
from common import (
    default_dir,
    file_entries,
    filesystem,
    human_bytes,
    json_line,
    machine,
    median,
    percentile,
    table,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulkforge.daemon import jobs, registry, store
from bulkforge.daemon.downloader import batches, files, register
from bulkforge.daemon.machines.job import JobState
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

JOB = "million"
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 120.0


def build(db_path: Path, n: int, dest: Path, job_state: str) -> dict:
    started = time.perf_counter()
    # Submit creates the destination; a running job without one fails every file at once.
    dest.mkdir(parents=True, exist_ok=True)
    conn = store.open_connection(db_path)
    store.apply_schema(conn, kinds=registry.schemas())
    with conn:
        job, _ = register.create_download_job(
            conn, JOB, {"kind": "download", "n": n}, str(dest), file_entries(n)
        )
        job = jobs.move_job(conn, job, JobState.RUNNING)
        (batch,) = batches.batch_rows(conn, job.id)
        batches.activate(conn, batch, dest)  # as the scheduler does when the job starts
        if job_state == "paused":
            job = jobs.move_job(conn, job, JobState.PAUSED)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"build_s": round(time.perf_counter() - started, 2), "job_id": job.id}


def strand(db_path: Path, job_id: int, count: int) -> int:
    """Leave `count` files downloading, as a kill -9 during transfers would."""
    conn = store.open_connection(db_path)
    try:
        with conn:
            claimed = files.claim(conn, job_id, count, store.now_ms())
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return len(claimed)
    finally:
        conn.close()


def serving(channel: grpc.Channel) -> bool:
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1
        )
    except grpc.RpcError:
        return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def timed(call, count: int) -> list[float]:
    spent = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def one_start(state_dir: Path, socket: Path, log: Path, calls: int, n: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "bulkforge.daemon",
        "--state-dir",
        str(state_dir),
        "--socket",
        str(socket),
        "--log-format",
        "human",
    ]
    with log.open("a") as sink:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=sink, stderr=sink)
    try:
        channel = None
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"bfd exited with {proc.returncode} before ready; see {log}")
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise SystemExit(f"bfd not ready after {READY_TIMEOUT_S} s; see {log}")
            if socket.exists():
                channel = channel or grpc.insecure_channel(f"unix:{socket}")
                if serving(channel):
                    break
            time.sleep(0.005)
        ready_s = time.perf_counter() - started
        stub = pb_grpc.BulkforgeStub(channel)
        first = stub.Status(pb.JobRef(name=JOB), timeout=60)
        assert first.items_total == n, first.items_total
        in_flight = first.counts.get("downloading", 0) + first.counts.get("verifying", 0)
        status_ms = timed(lambda: stub.Status(pb.JobRef(name=JOB), timeout=60), calls)
        list_ms = timed(lambda: stub.List(pb.ListRequest(), timeout=60), calls)
        rss = psutil.Process(proc.pid).memory_info().rss
        system = stub.System(pb.SystemRequest(), timeout=60)
        channel.close()
        db = state_dir / "bulkforge.db"
        db_bytes = db.stat().st_size
        wal = Path(f"{db}-wal")
        wal_bytes = wal.stat().st_size if wal.exists() else 0
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(STOP_TIMEOUT_S)
        stop_s = time.perf_counter() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {
        "ready_s": round(ready_s, 3),
        "in_flight_after_boot": in_flight,
        "status_p50_ms": round(median(status_ms), 3),
        "status_p99_ms": round(percentile(status_ms, 0.99), 3),
        "list_p50_ms": round(median(list_ms), 3),
        "list_p99_ms": round(percentile(list_ms, 0.99), 3),
        "rss_bytes": rss,
        "rss_reported_bytes": system.rss_bytes,
        "db_bytes": db_bytes,
        "wal_bytes": wal_bytes,
        "exit_code": code,
        "stop_s": round(stop_s, 3),
    }


def import_time() -> float:
    """Seconds a bare interpreter needs to import the daemon: the floor of restart-to-ready."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import bulkforge.daemon.__main__, bulkforge.daemon.app"],
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    flags = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    flags.add_argument("--n", type=int, default=1_000_000, help="file rows of the job")
    flags.add_argument("--dir", type=Path, default=None, help="where the state dir goes")
    flags.add_argument("--starts", type=int, default=3, help="daemon starts to measure")
    flags.add_argument("--calls", type=int, default=50, help="Status and List calls per start")
    flags.add_argument("--in-flight", type=int, default=16, help="rows left downloading")
    flags.add_argument("--job-state", choices=["paused", "running"], default="paused")
    flags.add_argument("--keep", action="store_true", help="keep the state dir")
    args = flags.parse_args()
    base = args.dir or default_dir()
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bf-million-", dir=base))
    # Unix socket paths are short; keep the socket in /tmp whatever --dir is.
    socket_dir = Path(tempfile.mkdtemp(prefix="bf-", dir="/tmp"))
    state_dir, log = root / "state", root / "bfd.log"
    state_dir.mkdir()
    fs = filesystem(state_dir)
    print(
        f"million files bench: n={args.n:,} state={state_dir} "
        f"({fs['fstype']} on {fs['device']}, mount {fs['mount']}), log {log}",
        file=sys.stderr,
    )
    starts = []
    try:
        built = build(state_dir / "bulkforge.db", args.n, root / "dest", args.job_state)
        print(f"  built in {built['build_s']} s", file=sys.stderr)
        imports_s = import_time()
        for index in range(args.starts):
            stranded = strand(state_dir / "bulkforge.db", built["job_id"], args.in_flight)
            result = one_start(state_dir, socket_dir / "bfd.sock", log, args.calls, args.n)
            result["stranded_before_boot"] = stranded
            starts.append(result)
            print(f"  start {index + 1}: ready in {result['ready_s']} s", file=sys.stderr)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)

    rows = [
        (
            i + 1,
            r["ready_s"],
            f"{r['stranded_before_boot']} -> {r['in_flight_after_boot']}",
            r["status_p50_ms"],
            r["status_p99_ms"],
            r["list_p50_ms"],
            r["list_p99_ms"],
            human_bytes(r["rss_bytes"]),
            human_bytes(r["db_bytes"]),
            human_bytes(r["wal_bytes"]),
            r["stop_s"],
            r["exit_code"],
        )
        for i, r in enumerate(starts)
    ]
    print(
        table(
            [
                "start",
                "ready s",
                "in flight",
                "Status p50 ms",
                "p99",
                "List p50 ms",
                "p99",
                "RSS",
                "db",
                "wal",
                "stop s",
                "exit",
            ],
            rows,
        )
    )
    ready = [r["ready_s"] for r in starts]
    summary = {
        "ready_min_s": min(ready),
        "ready_median_s": round(median(ready), 3),
        "import_s": round(imports_s, 3),
        "status_p50_ms_median": round(median([r["status_p50_ms"] for r in starts]), 3),
        "list_p50_ms_median": round(median([r["list_p50_ms"] for r in starts]), 3),
        "exit_codes": [r["exit_code"] for r in starts],
    }
    print(
        f"ready: min {summary['ready_min_s']} s, median {summary['ready_median_s']} s "
        f"(bare import of the daemon: {summary['import_s']} s); build {built['build_s']} s"
    )
    print(
        json_line(
            "million_files_bench",
            {
                "n": args.n,
                "job_state": args.job_state,
                "filesystem": fs,
                "machine": machine(),
                "build_s": built["build_s"],
                "summary": summary,
                "starts": starts,
            },
        )
    )


if __name__ == "__main__":
    main()
