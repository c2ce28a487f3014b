"""Load: Status latency and the download throughput lost while clients poll bfd.

    python bench/load_bench.py [--files 20000] [--size 64KiB] [--runs 3] [--clients 20]
                               [--watches 5] [--think-ms 100,0] [--idle-s 10]
                               [--connections 16] [--drop-caches] [--work D] [--keep]
                               [--record]

nginx serves --files random files of --size bytes on 127.0.0.1 (the download bench's origin
and files). One bfd downloads them as a new job per timed fetch, from Submit until the job is
completed (as `download_bench.py` times it, polling Status every 20 ms), in each condition in
turn, the order rotated run by run:

- alone: nothing else talks to bfd;
- loaded, one condition per --think-ms value: from the moment Submit returns until the job
  ends, --clients processes each call `Status` on the job in a loop over the unix socket,
  pausing that many milliseconds after each answer (0: the next call as soon as the answer
  arrives, the issue's probe), and --watches processes each hold a `Watch` stream on it
  open and read every event (interval 1 s, the default).

Every client is its own process, started (and connected) before the first run, so neither
the harness's GIL nor its start-up is in what is measured; they share the machine's cores
with bfd, as the probe of issue 16 did. Without think time the clients call as fast as bfd
answers: the call rate rises as Status gets cheaper, so that condition measures how much a
saturating poller costs; a think time offers a bounded rate (20 clients at 100 ms: at most
200 calls/s, the rate the probe saw) and measures latency at that load. After the runs, the
same clients poll the last (completed) job for --idle-s seconds with nothing downloading:
Status latency on this machine with bfd otherwise idle, the floor the loaded figures sit on.

Reports per condition the download's files/s (median of the runs) and the throughput lost
against alone, Status latency p50/p99/max over every call of its runs, Status calls per
second, and the CPU seconds bfd (with its transfer workers) and the clients spent per run,
plus the load average of the machine. With --drop-caches (root) the page cache is dropped
before each fetch; dirty pages are flushed before each either way.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import suppress
from multiprocessing.connection import Connection
from pathlib import Path

import download_bench
import grpc
import psutil
from common import percentile
from download_bench import (
    POLL_S,
    Bfd,
    generated,
    machine,
    make_many,
    nginx,
    positive,
    record_section,
    size_arg,
    size_label,
    timed_fetch,
    with_urls,
)

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

TARGET_P99_MS = 100.0
TARGET_LOST = 0.10
WATCH_INTERVAL_S = 1.0
CALL_TIMEOUT_S = 30.0
ENDED = ("completed", "failed", "cancelled")
ALONE = "alone"
IDLE = "bfd idle (no download)"


# ---------------------------------------------------------------- the load clients


def status_client(socket: str, orders: Connection, running) -> None:
    """One process: per run, Status on the job in a loop while `running` is set, pausing
    think_s after each answer.

    Answers the run's latencies (seconds) and how many calls failed.
    """
    stub = pb_grpc.BulkforgeStub(_connected(socket))
    orders.send("ready")
    while (order := orders.recv()) is not None:
        name, think_s = order
        running.wait()
        latencies, errors = [], 0
        while running.is_set():
            started = time.perf_counter()
            try:
                stub.Status(pb.JobRef(name=name), timeout=CALL_TIMEOUT_S)
                latencies.append(time.perf_counter() - started)
            except grpc.RpcError:
                errors += 1
            if think_s:
                time.sleep(think_s)
        orders.send((latencies, errors))


def watch_client(socket: str, orders: Connection, running) -> None:
    """One process: per run, a Watch stream on the job read to its end; answers the events."""
    stub = pb_grpc.BulkforgeStub(_connected(socket))
    orders.send("ready")
    while (order := orders.recv()) is not None:
        name, _ = order
        running.wait()
        stream = stub.Watch(pb.WatchRequest(name=name, interval_s=WATCH_INTERVAL_S))
        # Wait in a thread for the run's end, then cancel the stream if the job has not ended it.
        stopper = threading.Thread(target=_cancel_when_cleared, args=(running, stream))
        stopper.start()
        events, errors = 0, 0
        try:
            for _ in stream:
                events += 1
        except grpc.RpcError as exc:
            errors += exc.code() != grpc.StatusCode.CANCELLED
        stopper.join()
        orders.send((events, errors))


def _connected(socket: str) -> grpc.Channel:
    channel = grpc.insecure_channel(f"unix:{socket}")
    grpc.channel_ready_future(channel).result(timeout=60)
    return channel


def _cancel_when_cleared(running, stream) -> None:
    while running.is_set():
        time.sleep(0.05)
    stream.cancel()


class Load:
    """The client processes, started once; each run gives them a job name and a start."""

    def __init__(self, socket: Path, clients: int, watches: int):
        context = multiprocessing.get_context("spawn")
        self.running = context.Event()
        self.status_pipes: list[Connection] = []
        self.watch_pipes: list[Connection] = []
        self.processes = []
        for index in range(clients + watches):
            ours, theirs = context.Pipe()
            if index < clients:
                target, args = status_client, (str(socket), theirs, self.running)
                self.status_pipes.append(ours)
            else:
                target, args = watch_client, (str(socket), theirs, self.running)
                self.watch_pipes.append(ours)
            process = context.Process(target=target, args=args, daemon=True)
            process.start()
            self.processes.append(process)
        for pipe in self.pipes:
            if not pipe.poll(120) or pipe.recv() != "ready":
                sys.exit("a load client did not connect to bfd within 120 s")
        self.handles = [psutil.Process(process.pid) for process in self.processes]

    @property
    def pipes(self) -> list[Connection]:
        return self.status_pipes + self.watch_pipes

    def start(self, name: str, think_s: float) -> None:
        for pipe in self.pipes:
            pipe.send((name, think_s))
        self.running.set()

    def stop(self) -> tuple[list[float], int, int, int]:
        """Latencies of every Status call, failed Status calls, Watch events, failed watches."""
        self.running.clear()
        latencies, status_errors, events, watch_errors = [], 0, 0, 0
        for pipe in self.status_pipes:
            run, errors = pipe.recv()
            latencies += run
            status_errors += errors
        for pipe in self.watch_pipes:
            seen, errors = pipe.recv()
            events += seen
            watch_errors += errors
        return latencies, status_errors, events, watch_errors

    def cpu_s(self) -> float:
        return sum(sum(handle.cpu_times()[:2]) for handle in self.handles)

    def close(self) -> None:
        for pipe in self.pipes:
            with suppress(OSError):
                pipe.send(None)
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.kill()


# ---------------------------------------------------------------- the runs


class Runs:
    """Times each fetch in each condition, and keeps what the load clients measured."""

    def __init__(self, bfd: Bfd, load: Load, manifest: Path, rows: list[dict], work: Path):
        self.bfd, self.load, self.manifest, self.rows, self.work = bfd, load, manifest, rows, work
        self.seconds: dict[str, list[float]] = {}
        self.bfd_cpu_s: dict[str, list[float]] = {}
        self.client_cpu_s: dict[str, list[float]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.calls_per_s: dict[str, list[float]] = {}
        self.tally: dict[str, Counter] = {}
        self.last_job = ""  # the name of the last job run, which idle() polls

    def run(self, index: int, think_ms: float | None) -> None:
        """One timed download, alone (think_ms None) or loaded."""
        condition = condition_of(think_ms)
        name = f"load-{index}-{'alone' if think_ms is None else f'think{think_ms:g}'}"
        bfd_before, clients_before = self._bfd_cpu_s(), self.load.cpu_s()
        seconds = timed_fetch(
            self.work / "out", self.rows, lambda out: self._download(name, out, think_ms)
        )
        self._keep(self.seconds, condition, seconds)
        self._keep(self.bfd_cpu_s, condition, self._bfd_cpu_s() - bfd_before)
        self._keep(self.client_cpu_s, condition, self.load.cpu_s() - clients_before)
        print(f"run {index} {condition}: {len(self.rows) / seconds:,.0f} files/s", flush=True)
        self.last_job = name

    def idle(self, seconds: float) -> None:
        """The clients, without think time, on the last (ended) job while bfd does nothing."""
        self.load.start(self.last_job, 0.0)
        time.sleep(seconds)
        self._collect(IDLE, seconds)

    def _download(self, name: str, out: Path, think_ms: float | None) -> None:
        """Submit, load bfd from the moment Submit returns, and wait for the job to end."""
        spec = pb.DownloadSpec(manifest=str(self.manifest), dest=str(out))
        self.bfd.stub.Submit(pb.SubmitRequest(name=name, download=spec), timeout=120)
        started = time.perf_counter()
        if think_ms is not None:
            self.load.start(name, think_ms / 1000)
        try:
            job = self._wait_for_end(name)
        finally:
            if think_ms is not None:
                self._collect(condition_of(think_ms), time.perf_counter() - started)
        if job.state != "completed":
            sys.exit(f"job {name} ended {job.state}: {dict(job.counts)}")

    def _wait_for_end(self, name: str) -> pb.Job:
        while True:
            job = self.bfd.stub.Status(pb.JobRef(name=name), timeout=CALL_TIMEOUT_S)
            self.bfd.sample()
            if job.state in ENDED:
                return job
            time.sleep(POLL_S)

    def _collect(self, condition: str, seconds: float) -> None:
        latencies, status_errors, events, watch_errors = self.load.stop()
        self.latencies.setdefault(condition, []).extend(latencies)
        self._keep(self.calls_per_s, condition, len(latencies) / seconds)
        self.tally.setdefault(condition, Counter()).update(
            {
                "failed_status_calls": status_errors,
                "watch_events": events,
                "failed_watches": watch_errors,
            }
        )

    @staticmethod
    def _keep(into: dict[str, list[float]], condition: str, value: float) -> None:
        into.setdefault(condition, []).append(value)

    def _bfd_cpu_s(self) -> float:
        """bfd's CPU seconds with its transfer workers (children that exited are counted)."""
        process = self.bfd.process
        own = process.cpu_times()
        total = own.user + own.system + own.children_user + own.children_system
        for child in process.children(recursive=True):
            with suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total


def condition_of(think_ms: float | None) -> str:
    if think_ms is None:
        return ALONE
    return f"loaded, {think_ms:g} ms think" if think_ms else "loaded, no think time"


# ---------------------------------------------------------------- reporting


def summary(args, runs: Runs, load_before: tuple, load_after: tuple) -> dict:
    files = len(runs.rows)
    alone = files / statistics.median(runs.seconds[ALONE])
    conditions = {}
    for condition in [*runs.seconds, *([IDLE] if IDLE in runs.latencies else [])]:
        entry: dict = {}
        if condition in runs.seconds:
            rate = files / statistics.median(runs.seconds[condition])
            entry["files_per_s"] = round(rate, 1)
            entry["files_per_s_all"] = [round(files / s, 1) for s in runs.seconds[condition]]
            entry["lost"] = round(1 - rate / alone, 3)
            entry["bfd_cpu_s"] = round(statistics.median(runs.bfd_cpu_s[condition]), 1)
            entry["client_cpu_s"] = round(statistics.median(runs.client_cpu_s[condition]), 1)
        if condition in runs.latencies:
            ms = [latency * 1000 for latency in runs.latencies[condition]]
            entry["status_calls"] = len(ms)
            entry["status_ms"] = [
                round(percentile(ms, 0.50), 1),
                round(percentile(ms, 0.99), 1),
                round(max(ms, default=0.0), 1),
            ]
            entry["status_calls_per_s"] = round(statistics.median(runs.calls_per_s[condition]), 1)
            entry["clients"] = dict(runs.tally[condition])
        if condition in runs.seconds and condition in runs.latencies:
            entry["bfd_cpu_ms_per_call"] = cpu_per_call(runs, condition)
        conditions[condition] = entry
    return {
        "files": files,
        "size": args.size,
        "runs": args.runs,
        "clients": args.clients,
        "watches": args.watches,
        "conditions": conditions,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


def cpu_per_call(runs: Runs, condition: str) -> float:
    """bfd's CPU (ms) per Status call: what a loaded run used beyond a run alone, over the
    calls of a run (the watches' share included)."""
    extra_s = statistics.median(runs.bfd_cpu_s[condition]) - statistics.median(
        runs.bfd_cpu_s[ALONE]
    )
    calls_per_run = len(runs.latencies[condition]) / len(runs.seconds[condition])
    return round(1000 * extra_s / max(1.0, calls_per_run), 2)


def verdicts(result: dict) -> list[str]:
    """'loaded, 100 ms think: Status p99 42 ms (target <= 100: met), lost 3.0% (...)'."""
    lines = []
    for condition, entry in result["conditions"].items():
        if condition in (ALONE, IDLE):
            continue
        p99, lost = entry["status_ms"][1], entry["lost"]
        p99_verdict = "met" if p99 <= TARGET_P99_MS else "not met"
        lost_verdict = "met" if lost <= TARGET_LOST else "not met"
        lines.append(
            f"{condition}: Status p99 {p99} ms (target <= {TARGET_P99_MS:.0f}: {p99_verdict}), "
            f"throughput lost {lost:.1%} (target <= {TARGET_LOST:.0%}: {lost_verdict})"
        )
    return lines


def result_table(result: dict) -> list[str]:
    headers = (
        "condition",
        "files/s (median)",
        "all runs",
        "lost",
        "Status p50 / p99 / max ms",
        "Status calls/s",
        "bfd CPU s",
        "bfd CPU ms per call",
        "clients CPU s",
    )
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for condition, entry in result["conditions"].items():
        downloading = "files_per_s" in entry
        polled = "status_ms" in entry
        cells = (
            condition,
            f"{entry['files_per_s']:,.0f}" if downloading else "-",
            str(entry["files_per_s_all"]) if downloading else "-",
            f"{entry['lost']:.1%}" if downloading and condition != ALONE else "-",
            " / ".join(str(ms) for ms in entry["status_ms"]) if polled else "-",
            str(entry["status_calls_per_s"]) if polled else "-",
            str(entry["bfd_cpu_s"]) if downloading else "-",
            str(entry.get("bfd_cpu_ms_per_call", "-")),
            str(entry["client_cpu_s"]) if downloading and condition != ALONE else "-",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def note(result: dict) -> str:
    tally = Counter()
    for entry in result["conditions"].values():
        tally.update(entry.get("clients", {}))
    return (
        f"{result['clients']} Status clients and {result['watches']} Watch streams (interval "
        f"{WATCH_INTERVAL_S:.0f} s), each its own process on the same cores; "
        f"{tally['failed_status_calls']} Status calls failed, {tally['failed_watches']} Watch "
        f"streams failed, {tally['watch_events']:,} Watch events read. CPU seconds are medians per "
        f"run (bfd with its transfer workers). Load average (1, 5, 15 min) before / after: "
        f"{result['loadavg_before']} / {result['loadavg_after']}."
    )


def report(result: dict) -> None:
    print()
    print("\n".join(result_table(result)))
    print("\n".join(verdicts(result)))
    print(note(result))
    print(json.dumps({"bench": "load", **result}))


def record(result: dict, work: Path, title: str) -> None:
    text = "\n".join([*result_table(result), "", "; ".join(verdicts(result)) + ".", note(result)])
    heading = f"Load: Status and Watch clients during {title} from nginx on loopback"
    record_section(f"{heading} ({time.strftime('%Y-%m-%d')})", work, text)


# ---------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    download_bench.DROP_CACHES = args.drop_caches
    work = Path(args.work or tempfile.mkdtemp(prefix="bulkforge-load-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # nginx's workers drop to www-data when started as root
    source = work / "www" / f"many-{args.files}x{args.size}"
    try:
        with nginx(work) as base:
            rows = generated(source, lambda root: make_many(root, args.files, args.size))
            result = measure(args, work, with_urls(rows, base, source))
    except BaseException:
        print(f"working directory kept for its logs: {work}", file=sys.stderr)
        raise
    report(result)
    if args.record:
        record(result, work, f"{args.files:,} x {size_label(args.size)}")
    if not (args.keep or args.work):
        shutil.rmtree(work, ignore_errors=True)


def measure(args, work: Path, rows: list[dict]) -> dict:
    manifest = work / "manifest-load.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    bfd = Bfd(work, "load", args.connections)
    load = None
    try:
        load = Load(bfd.socket_dir / "bfd.sock", args.clients, args.watches)
        runs = Runs(bfd, load, manifest, rows, work)
        load_before = os.getloadavg()
        print(f"machine: {machine(work)}; load average {load_before}", flush=True)
        conditions = [None, *args.think_ms]
        for index in range(1, args.runs + 1):
            shift = (index - 1) % len(conditions)
            for think_ms in conditions[shift:] + conditions[:shift]:
                runs.run(index, think_ms)
        if args.idle_s:
            runs.idle(args.idle_s)
        return summary(args, runs, load_before, os.getloadavg())
    finally:
        if load is not None:
            load.close()
        bfd.stop()


def think_times(text: str) -> list[float]:
    try:
        values = [float(value) for value in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not milliseconds: {text!r} (e.g. 100,0)") from exc
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"think times must be 0 or more: {text!r}")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=positive, default=20000)
    parser.add_argument("--size", type=size_arg, default=64 * 1024, help="bytes per file")
    parser.add_argument("--runs", type=positive, default=3, help="runs of each condition")
    parser.add_argument("--clients", type=positive, default=20, help="Status polling processes")
    parser.add_argument("--watches", type=int, default=5, help="Watch stream processes")
    parser.add_argument(
        "--think-ms",
        type=think_times,
        default=[100.0, 0.0],
        help="comma-separated: one loaded condition per pause of each Status client after an "
        "answer (default 100,0)",
    )
    parser.add_argument(
        "--idle-s", type=float, default=10.0, help="seconds of polling bfd idle at the end"
    )
    parser.add_argument("--connections", type=positive, default=16)
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache (root)")
    parser.add_argument("--work", help="working directory, kept with its files for reuse")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    return parser.parse_args()


if __name__ == "__main__":
    main()
