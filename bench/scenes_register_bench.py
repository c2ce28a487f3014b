"""Scenes at scale without an origin: register a 10M-row input, then time reads and restarts.

    python bench/scenes_register_bench.py [--rows 10000000] [--dir D] [--samples 50] [--keep]

1. Writes a Parquet of --rows keys and URLs (row groups of 128k; the URLs point at a closed
   loopback port: no origin is needed, as no item is fetched).
2. Starts bfd on a fresh state dir, submits a scenes job over it and pauses it at once, so
   no item is fetched while the rest of the input is registered (pausing stops fetching, not
   registering). Times Submit and the whole registration, and samples bfd's RSS (with any
   children) every 0.1 s from outside, against its RSS before the submit.
3. Times --samples Status and Failures RPCs on the registered job (median and p99, one
   gRPC channel, as bfctl or a service would call them).
4. Restart-to-ready: SIGTERM bfd, start it again on the same state dir, and time from the
   start of the process until its health check says SERVING and a Status of the job has
   answered; then the same after kill -9.
Prints a table and one JSON line for RESULTS.md.
"""

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from common import default_dir, json_line, machine, percentile, table
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

ROW_GROUP = 131_072
SAMPLE_S = 0.1
NAME = "ten-million"
SHARD = 10_000


def write_input(path: Path, rows: int) -> None:
    """Keys and URLs only, written a row group at a time (the bench must not need 2 GB)."""
    schema = pa.schema([("key", pa.string()), ("url", pa.string())])
    with pq.ParquetWriter(path, schema) as out:
        for start in range(0, rows, ROW_GROUP):
            numbers = range(start, min(rows, start + ROW_GROUP))
            out.write_table(
                pa.table(
                    {
                        "key": [f"scene-{n:010d}" for n in numbers],
                        "url": [f"http://127.0.0.1:9/img/{n:010d}.jpg" for n in numbers],
                    },
                    schema=schema,
                )
            )


class Daemon:
    def __init__(self, work: Path):
        self.state = work / "state"
        self.socket_dir = Path(tempfile.mkdtemp(prefix="bfr-"))
        self.socket = self.socket_dir / "bfd.sock"
        self.log = work / "bfd.log"
        self.proc: subprocess.Popen | None = None
        self.channel: grpc.Channel | None = None

    def start(self) -> float:
        """Start bfd; seconds from the process start until it serves and a Status answered."""
        started = time.perf_counter()
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bulkforge.daemon", "--state-dir", str(self.state),
                 "--socket", str(self.socket), "--log-level", "WARNING"],
                stderr=log,
            )  # fmt: skip
        # A fresh channel per try: a channel whose first connect failed waits out gRPC's
        # reconnect backoff (about 1 s), which would be measured as bfd's start-up.
        while not self._serving():
            if self.proc.poll() is not None:
                sys.exit(f"bfd exited {self.proc.returncode}; see {self.log}")
            time.sleep(0.005)
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        if self.has_job():
            self.stub.Status(pb.JobRef(name=NAME), timeout=30)
        return time.perf_counter() - started

    def _serving(self) -> bool:
        if not self.socket.exists():
            return False
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    def has_job(self) -> bool:
        return any(job.name == NAME for job in self.stub.List(pb.ListRequest(), timeout=30).jobs)

    @property
    def stub(self) -> pb_grpc.BulkforgeStub:
        assert self.channel is not None
        return pb_grpc.BulkforgeStub(self.channel)

    def rss(self) -> int:
        assert self.proc is not None
        process = psutil.Process(self.proc.pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            total += child.memory_info().rss
        return total

    def stop(self, kill: bool = False) -> None:
        assert self.proc is not None and self.channel is not None
        self.channel.close()
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        self.proc.wait(120)


def register(daemon: Daemon, source: Path, dest: Path) -> dict:
    baseline = daemon.rss()
    started = time.perf_counter()
    spec = pb.ScenesSpec(input=str(source), key="key", url="url", dest=str(dest), shard_size=SHARD)
    daemon.stub.Submit(pb.SubmitRequest(name=NAME, scenes=spec), timeout=600)
    submit_s = time.perf_counter() - started
    pause(daemon)
    peak = baseline
    while True:
        peak = max(peak, daemon.rss())
        job = daemon.stub.Status(pb.JobRef(name=NAME), timeout=30)
        if job.registration.done:
            break
        time.sleep(SAMPLE_S)
    return {
        "submit_s": submit_s,
        "register_s": time.perf_counter() - started,
        "rows_registered": sum(job.counts.values()),
        "rss_before_mb": baseline / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_after_mb": daemon.rss() / 2**20,
    }


def pause(daemon: Daemon) -> None:
    """Hold the items back (their URLs lead nowhere), while registration goes on.

    A job between two states may refuse the pause for a moment: ask again for up to 10 s.
    """
    deadline = time.monotonic() + 10
    while True:
        try:
            daemon.stub.Pause(pb.JobRef(name=NAME), timeout=30)
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def latency(call, samples: int) -> dict:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": statistics.median(times), "p99_ms": percentile(times, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temp dir goes")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bulkforge-register-", dir=args.dir or default_dir()))
    try:
        run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    source = work / "input.parquet"
    started = time.perf_counter()
    write_input(source, args.rows)
    print(f"wrote {args.rows:,} rows in {time.perf_counter() - started:.1f} s", flush=True)
    daemon = Daemon(work)
    first_start = daemon.start()
    try:
        registered = register(daemon, source, work / "shards")
    except BaseException:
        daemon.stop(kill=True)  # never leave a bfd behind
        raise
    print(f"registered in {registered['register_s']:.1f} s", flush=True)
    status = latency(lambda: daemon.stub.Status(pb.JobRef(name=NAME), timeout=30), args.samples)
    failures = latency(
        lambda: daemon.stub.Failures(pb.FailuresRequest(name=NAME), timeout=30), args.samples
    )
    db = (daemon.state / "bulkforge.db").stat().st_size
    daemon.stop()
    restart = daemon.start()
    daemon.stop(kill=True)
    after_kill = daemon.start()
    daemon.stop()
    result = {
        "rows": args.rows,
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in registered.items()},
        "rows_per_s": round(args.rows / registered["register_s"]),
        "status": {k: round(v, 2) for k, v in status.items()},
        "failures": {k: round(v, 2) for k, v in failures.items()},
        "db_mb": round(db / 2**20),
        "first_start_s": round(first_start, 3),
        "restart_to_ready_s": round(restart, 3),
        "after_kill9_to_ready_s": round(after_kill, 3),
        "machine": machine(),
    }
    rows = [
        ("register (Submit to done)", f"{registered['register_s']:.1f} s",
         f"{result['rows_per_s']:,} rows/s; Submit answered in {registered['submit_s']:.2f} s"),
        ("bfd RSS", f"{registered['rss_peak_mb']:.0f} MB peak",
         f"{registered['rss_before_mb']:.0f} MB before, {registered['rss_after_mb']:.0f} after"),
        ("Status", f"{status['median_ms']:.1f} ms", f"p99 {status['p99_ms']:.1f} ms"),
        ("Failures", f"{failures['median_ms']:.1f} ms", f"p99 {failures['p99_ms']:.1f} ms"),
        ("restart to ready", f"{restart:.2f} s", f"after kill -9: {after_kill:.2f} s"),
        ("store", f"{result['db_mb']:,} MB", ""),
    ]  # fmt: skip
    print(table(["measure", "value", "detail"], rows))
    print(json_line("scenes_register", result))


if __name__ == "__main__":
    main()
