"""State transitions per second through the store's group-committing Writer.

    python bench/store_bench.py [--n 1000000] [--dir D] [--producers 8] [--window 64]
                                [--modes FULL,NORMAL] [--keep]

For each synchronous mode, on a fresh store file in a temp dir under --dir:
1. insert N file rows for one download job with `register.create_download_job`, as one writer op
   (what Submit does; the file-count triggers run for every row);
2. push N guarded single-row transitions pending -> downloading (`store.guarded_update` with
   the file machine's check, the same write `files.claim` makes), each a separate writer op,
   submitted from --producers threads that each keep up to --window ops outstanding (a transfer
   in the daemon awaits its commit before its next move; the window stands for the many
   transfers sharing one thread). Ack latency is submit -> future resolved.

The mode is switched without touching daemon code: `PRAGMA synchronous = NORMAL` is run on
the writer's own connection (`writer._conn`; the daemon opens it with store.SYNCHRONOUS = FULL)
from the bench thread while the writer is idle between commits. It cannot run as a writer op:
every op is inside BEGIN IMMEDIATE and SQLite refuses "Safety level may not be changed inside a
transaction". A writer op then reads the pragma back to prove it took.
Commit latency (BEGIN IMMEDIATE .. COMMIT, i.e. running the ops plus the fsync) comes from the
writer's own record of its last 10,000 commits. Prints a table, then one JSON line.
"""

import argparse
import functools
import shutil
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

import apsw
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

from bulkforge.daemon import registry, store
from bulkforge.daemon.downloader import register
from bulkforge.daemon.downloader.machine import FileState, check_transition

SYNC_CODES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def to_downloading(conn: apsw.Connection, file_id: int, stamp: int) -> None:
    store.guarded_update(
        conn,
        "files",
        file_id,
        FileState.PENDING,
        FileState.DOWNLOADING,
        check_transition,
        updated_at=stamp,
    )


def run_mode(root: Path, mode: str, n: int, producers: int, window: int) -> dict:
    path = root / f"store-{mode.lower()}.db"
    fatal: list[BaseException] = []
    opened = store.Store(path, fatal.append, registry.schemas())
    opened.start()
    writer = opened.writer
    try:
        if mode != store.SYNCHRONOUS:
            # Not inside an op: SQLite refuses to change the safety level inside a
            # transaction. The writer is idle here (nothing queued), so its connection
            # is free between commits.
            writer.call_sync(lambda c: None)
            writer._conn.execute(f"PRAGMA synchronous = {mode}")
        code = writer.call_sync(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert SYNC_CODES[code] == mode, f"writer runs synchronous={SYNC_CODES[code]}, not {mode}"

        started = time.perf_counter()
        job, _ = writer.call_sync(
            lambda c: register.create_download_job(
                c, "bench", {"kind": "download", "n": n}, str(root / "dest"), file_entries(n)
            )
        )
        insert_s = time.perf_counter() - started
        ids = opened.readers.read(
            lambda c: [
                row[0]
                for row in c.execute("SELECT id FROM files WHERE job_id = ? ORDER BY id", (job.id,))
            ]
        )
        assert len(ids) == n

        commits0, ops0 = writer.commits, writer.operations
        writer._latencies_ms.clear()  # read-only use otherwise: only this run's commits count
        submitted = [0.0] * n
        resolved = [0.0] * n
        failures: list[BaseException] = []
        barrier = threading.Barrier(producers + 1)

        def on_done(index: int, future) -> None:
            resolved[index] = time.perf_counter()
            if future.exception() is not None:
                failures.append(future.exception())

        def produce(first: int) -> None:
            outstanding: deque = deque()
            stamp = store.now_ms()
            barrier.wait()
            for index in range(first, n, producers):
                if len(outstanding) >= window:
                    outstanding.popleft().result()
                submitted[index] = time.perf_counter()
                future = writer.submit(
                    functools.partial(to_downloading, file_id=ids[index], stamp=stamp)
                )
                future.add_done_callback(functools.partial(on_done, index))
                outstanding.append(future)
            for future in outstanding:
                future.result()

        threads = [threading.Thread(target=produce, args=(k,)) for k in range(producers)]
        for thread in threads:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        assert not failures, failures[:3]
        assert not fatal, fatal

        commits = writer.commits - commits0
        operations = writer.operations - ops0
        commit_ms = list(writer._latencies_ms)
        acks_ms = [(resolved[i] - submitted[i]) * 1000 for i in range(n)]
        counts = dict(
            opened.readers.read(
                lambda c: c.execute(
                    "SELECT state, files FROM file_counts WHERE job_id = ?", (job.id,)
                ).fetchall()
            )
        )
        assert counts.get("downloading") == n and not counts.get("pending"), counts
        db_bytes, wal_bytes = opened.file_sizes()
        return {
            "mode": mode,
            "n": n,
            "insert_s": round(insert_s, 3),
            "insert_rows_per_s": round(n / insert_s),
            "transitions_per_s": round(operations / elapsed),
            "elapsed_s": round(elapsed, 3),
            "commits": commits,
            "ops_per_commit": round(operations / max(1, commits), 1),
            "commit_p50_ms": round(percentile(commit_ms, 0.50), 3),
            "commit_p99_ms": round(percentile(commit_ms, 0.99), 3),
            "ack_p50_ms": round(median(acks_ms), 3),
            "ack_p99_ms": round(percentile(acks_ms, 0.99), 3),
            "db_bytes": db_bytes,
            "wal_bytes": wal_bytes,
        }
    finally:
        opened.close()


def main() -> None:
    flags = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    flags.add_argument("--n", type=int, default=1_000_000, help="file rows and transitions")
    flags.add_argument("--dir", type=Path, default=None, help="where the store files go")
    flags.add_argument("--producers", type=int, default=8, help="submitting threads")
    flags.add_argument("--window", type=int, default=64, help="outstanding ops per producer")
    flags.add_argument("--modes", default=f"{store.SYNCHRONOUS},NORMAL")
    flags.add_argument("--keep", action="store_true", help="keep the store files")
    args = flags.parse_args()
    base = args.dir or default_dir()
    base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bf-store-bench-", dir=base))
    fs = filesystem(root)
    modes = [m.strip().upper() for m in args.modes.split(",") if m.strip()]
    print(
        f"store bench: n={args.n:,} producers={args.producers} window={args.window} "
        f"dir={root} ({fs['fstype']} on {fs['device']}, mount {fs['mount']})",
        file=sys.stderr,
    )
    results = []
    try:
        for mode in modes:
            results.append(run_mode(root, mode, args.n, args.producers, args.window))
            print(f"  {mode}: done", file=sys.stderr)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(
        table(
            [
                "synchronous",
                "transitions/s",
                "commits",
                "ops/commit",
                "commit p50 ms",
                "commit p99 ms",
                "ack p50 ms",
                "ack p99 ms",
                "insert rows/s",
                "db",
                "wal",
            ],
            [
                (
                    r["mode"],
                    r["transitions_per_s"],
                    r["commits"],
                    r["ops_per_commit"],
                    r["commit_p50_ms"],
                    r["commit_p99_ms"],
                    r["ack_p50_ms"],
                    r["ack_p99_ms"],
                    r["insert_rows_per_s"],
                    human_bytes(r["db_bytes"]),
                    human_bytes(r["wal_bytes"]),
                )
                for r in results
            ],
        )
    )
    print(
        json_line(
            "store_bench",
            {
                "n": args.n,
                "producers": args.producers,
                "window": args.window,
                "filesystem": fs,
                "machine": machine(),
                "results": results,
            },
        )
    )


if __name__ == "__main__":
    main()
