"""Which HTTP client carries the bytes: aiohttp or libcurl (pycurl), in 1 or N processes.

    python bench/client_bench.py [--files 20000] [--size 64KiB] [--connections 16]
                                 [--processes 1,2] [--clients aiohttp,pycurl] [--runs 2]
                                 [--drop-caches] [--work D]

The transfer engine's byte path is to run in worker processes, each with its own event loop
(aiohttp) or libcurl multi handle (pycurl). This measures the candidates alone, on the same
files from nginx on loopback (the download bench's nginx and files): each fetches every file
into an empty directory, hashing the body with sha256 as it arrives and writing it under its
name, with --connections connections split evenly over the processes, and checks every
digest. No fsync: the durability path costs the same whatever client carries the bytes
(dirty pages are written back before each candidate starts).
Reports files/s (median of --runs) and the CPU seconds of the processes; candidates run in
turn within each run, the order reversed every other run, the page cache dropped before each
with --drop-caches (root). Prints a table and one JSON line.
"""

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from common import table
from download_bench import fresh, generated, machine, make_many, nginx, positive, size_arg

CHUNK = 256 * 1024


def aiohttp_share(base: str, rows: list[dict], dest: str, connections: int) -> tuple[int, float]:
    """Fetch rows with one aiohttp session on one loop; returns (bad digests, CPU s)."""
    import aiohttp

    async def main() -> int:
        connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
        bad = 0
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            todo = iter(rows)

            async def worker() -> None:
                nonlocal bad
                for row in todo:
                    hasher = hashlib.sha256()
                    with open(f"{dest}/{row['name']}", "wb") as sink:
                        async with session.get(f"{base}/{row['path']}") as response:
                            async for chunk in response.content.iter_chunked(CHUNK):
                                hasher.update(chunk)
                                sink.write(chunk)
                    bad += hasher.hexdigest() != row["sha256"]

            await asyncio.gather(*(worker() for _ in range(connections)))
        return bad

    started = time.process_time()
    return asyncio.run(main()), time.process_time() - started


def pycurl_share(base: str, rows: list[dict], dest: str, connections: int) -> tuple[int, float]:
    """Fetch rows with one libcurl multi handle of `connections` easy handles."""
    import pycurl

    started = time.process_time()
    multi = pycurl.CurlMulti()
    multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, connections)
    idle = [pycurl.Curl() for _ in range(connections)]
    active: dict = {}
    todo = iter(rows)
    bad = 0

    def start(handle) -> bool:
        row = next(todo, None)
        if row is None:
            return False
        sink = open(f"{dest}/{row['name']}", "wb")  # noqa: SIM115 - closed when the handle ends
        hasher = hashlib.sha256()

        def write(data: bytes) -> None:
            hasher.update(data)
            sink.write(data)

        handle.setopt(pycurl.URL, f"{base}/{row['path']}")
        handle.setopt(pycurl.WRITEFUNCTION, write)
        handle.setopt(pycurl.NOSIGNAL, 1)
        multi.add_handle(handle)
        active[handle] = (row, sink, hasher)
        return True

    for handle in list(idle):
        if start(handle):
            idle.remove(handle)
    while active:
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, finished, failed = multi.info_read()
            ended = [(handle, False) for handle in finished]
            ended += [(handle, True) for handle, _code, _message in failed]
            for handle, broke in ended:
                row, sink, hasher = active.pop(handle)
                sink.close()
                multi.remove_handle(handle)
                bad += broke or hasher.hexdigest() != row["sha256"]
                if not start(handle):
                    idle.append(handle)
            if not queued:
                break
        if active:
            multi.select(1.0)
    return bad, time.process_time() - started


SHARES = {"aiohttp": aiohttp_share, "pycurl": pycurl_share}


def run_candidate(client: str, processes: int, base: str, rows: list[dict], dest: Path, args):
    """Wall seconds, CPU seconds and bad digests of one candidate over every row."""
    per_process = max(1, args.connections // processes)
    shares = [rows[index::processes] for index in range(processes)]
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = [
            pool.submit(SHARES[client], base, share, str(dest), per_process) for share in shares
        ]
        outcomes = [future.result() for future in futures]
    seconds = time.perf_counter() - started
    return seconds, sum(cpu for _, cpu in outcomes), sum(bad for bad, _ in outcomes)


def main() -> None:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bulkforge-client-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    source = work / "www" / f"many-{args.files}x{args.size}"
    rows = generated(source, lambda path: make_many(path, args.files, args.size))
    for row in rows:
        row["name"] = row["path"].replace("/", "_")
    candidates = [(client, n) for client in args.clients for n in args.processes]
    results: dict[str, list[tuple[float, float]]] = {f"{c} x{n}": [] for c, n in candidates}
    with nginx(work) as base:
        base = f"{base}/{source.name}"
        for run in range(args.runs):
            order = candidates if run % 2 == 0 else list(reversed(candidates))
            for client, processes in order:
                dest = fresh(work / "out")
                os.sync()  # no candidate pays for the previous one's writeback
                if args.drop_caches:
                    Path("/proc/sys/vm/drop_caches").write_text("3\n")
                seconds, cpu, bad = run_candidate(client, processes, base, rows, dest, args)
                if bad:
                    raise SystemExit(f"{client} x{processes}: {bad} file(s) arrived wrong")
                results[f"{client} x{processes}"].append((seconds, cpu))
                print(
                    f"run {run + 1}: {client} x{processes}: {len(rows) / seconds:,.0f} files/s, "
                    f"CPU {cpu:.1f} s",
                    flush=True,
                )
    report(args, work, rows, results)


def report(args, work: Path, rows: list[dict], results: dict) -> None:
    lines, summary = [], {}
    for name, runs in results.items():
        rate = len(rows) / statistics.median(seconds for seconds, _ in runs)
        cpu = statistics.median(cpu for _, cpu in runs)
        summary[name] = {
            "files_per_s": round(rate),
            "cpu_s": round(cpu, 1),
            "all": [round(len(rows) / s) for s, _ in runs],
        }
        lines.append((name, f"{rate:,.0f}", f"{cpu:.1f}", str(summary[name]["all"])))
    print(f"\n{args.files:,} x {args.size:,} B from nginx, {args.connections} connections")
    print(table(("candidate", "files/s", "CPU s", "runs"), lines))
    print(
        json.dumps(
            {
                "bench": "client",
                "files": args.files,
                "size": args.size,
                "connections": args.connections,
                "drop_caches": args.drop_caches,
                "results": summary,
                "machine": machine(work),
            }
        )
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=positive, default=20_000)
    parser.add_argument("--size", type=size_arg, default=64 * 1024)
    parser.add_argument("--connections", type=positive, default=16)
    parser.add_argument(
        "--processes", type=lambda t: [int(n) for n in t.split(",")], default=[1, 2]
    )
    parser.add_argument("--clients", type=lambda t: t.split(","), default=list(SHARES))
    parser.add_argument("--runs", type=positive, default=2)
    parser.add_argument("--drop-caches", action="store_true", help="(root) before each candidate")
    parser.add_argument("--work", type=Path, default=None, help="kept; files are reused")
    return parser.parse_args()


if __name__ == "__main__":
    main()
