"""Cleaning Binance trade zips into Parquet: bulkforge against pandas, polars and raw pyarrow.

    python bench/clean_bench.py --symbols 10 --days 10 --rows 500000 --drop-caches --record

Generates SYMBOLS x DAYS daily spot trade zips of ROWS rows each in the exact
data.binance.vision layout (once; `--work D` keeps and reuses them), then times each
tool over the same zips into an empty directory, page cache dropped before each
(`--drop-caches`, root). Rows/s counts input rows over wall time:

- bulkforge: a bfd with `--cpu-workers` = the machine's cores; from Submit of
  `bfctl submit clean --input` until the job is completed (inflate, parse, normalise the
  time unit, dedupe, sort, write partitions and every stats.json, all fsynced). Peak
  RSS sums bfd and its worker processes.
- pandas: `read_csv` of each zip (C engine, column names and dtypes given) and
  `to_parquet`, one zip per process over a pool of that many processes.
- polars: per zip `read_csv`, `unique` on id, `sort` by time and id, `write_parquet`; both
  polars' own threads over the zips in turn, and a process pool (one thread each); the
  faster is the ratio's peer.
- pyarrow: the practical limit, no dedupe or sort: `pyarrow.csv.read_csv` of each zip's CSV
  and `pyarrow.parquet.write_table`, likewise with threads or with a process pool.

Peers run in a subprocess of this script (`--peer`), so their time includes their
start; their peak RSS is the largest single process's (getrusage), not a sum.
"""

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF

import psutil
import pyarrow.parquet as pq
from common import REPO
from download_bench import Bfd, fresh, record_section

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

sys.path.insert(0, str(REPO))
from tests.binance_data import write_trades_zip

FIRST_DAY = date(2024, 3, 1)
COLUMNS = ["id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"]
TARGETS = {"pandas": 10.0, "polars": 1.0, "pyarrow": 0.8}
TOOLS = ("bulkforge", "pandas", "polars", "pyarrow")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rows", type=int, default=500_000, help="rows per daily zip")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--work", help="keep the generated zips here and reuse them")
    parser.add_argument("--drop-caches", action="store_true", help="(root) before each tool")
    parser.add_argument("--record", action="store_true", help="append the results to RESULTS.md")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


# ---------------------------------------------------------------- input


def generate(args, work: Path) -> tuple[Path, list[Path]]:
    """The input zips (made once per parameters) and their paths."""
    root = work / "in"
    marker = root / "params.json"
    params = {"symbols": args.symbols, "days": args.days, "rows": args.rows}
    jobs = [
        (f"S{n:03d}USDT", FIRST_DAY + timedelta(days=d), d * args.rows + 1, n * 1000 + d)
        for n in range(args.symbols)
        for d in range(args.days)
    ]
    if not (marker.exists() and json.loads(marker.read_text()) == params):
        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(_generate_one, [(root, *job, args.rows) for job in jobs]))
        marker.write_text(json.dumps(params))
        print(f"generated {len(jobs)} zips in {time.perf_counter() - started:.0f} s", flush=True)
    return root, sorted(root.rglob("*.zip"))


def _generate_one(job: tuple) -> None:
    root, symbol, day, first_id, seed, rows = job
    write_trades_zip(root, "spot", symbol, day, first_id, rows, seed)


# ---------------------------------------------------------------- peers (in a subprocess)


def csv_bytes(path: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(archive.namelist()[0])


def pandas_one(task: tuple[str, str]) -> int:
    import pandas as pd

    path, out = task
    frame = pd.read_csv(
        path,
        compression="zip",
        header=None,
        names=COLUMNS,
        dtype={"id": "int64", "price": "float64", "qty": "float64", "quote_qty": "float64"},
    )
    frame["time"] = pd.to_datetime(frame["time"], unit="ms", utc=True)
    frame.to_parquet(out, index=False)
    return len(frame)


def polars_one(task: tuple[str, str]) -> int:
    import polars as pl

    path, out = task
    frame = pl.read_csv(io.BytesIO(csv_bytes(path)), has_header=False, new_columns=COLUMNS)
    frame = frame.with_columns(pl.from_epoch("time", time_unit="ms").dt.replace_time_zone("UTC"))
    frame = frame.unique(subset="id", keep="first").sort(["time", "id"])
    frame.write_parquet(out)
    return frame.height


def pyarrow_one(task: tuple[str, str]) -> int:
    import pyarrow.csv as pacsv

    path, out = task
    options = pacsv.ReadOptions(column_names=COLUMNS)
    table = pacsv.read_csv(io.BytesIO(csv_bytes(path)), read_options=options)
    pq.write_table(table, out)
    return table.num_rows


PEERS = {"pandas": pandas_one, "polars": polars_one, "pyarrow": pyarrow_one}


def run_peer(args) -> None:
    """One peer over every zip: threads (the library's own, zips in turn) or processes."""
    zips = sorted(Path(args.input).rglob("*.zip"))
    out = Path(args.out)
    tasks = [(str(z), str(out / f"{z.stem}.parquet")) for z in zips]
    work = PEERS[args.peer]
    if args.mode == "threads":
        rows = sum(work(task) for task in tasks)
    else:
        if args.peer == "polars":
            os.environ["POLARS_MAX_THREADS"] = "1"
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            rows = sum(pool.map(work, tasks))
    # The largest single process: this one, or the biggest of its pool's workers.
    peak_kb = max(resource.getrusage(who).ru_maxrss for who in (RUSAGE_SELF, RUSAGE_CHILDREN))
    print(json.dumps({"rows": rows, "peak_rss_mb": round(peak_kb / 1024, 1)}))


# ---------------------------------------------------------------- timing


def settle(out: Path, drop: bool) -> None:
    fresh(out)
    os.sync()
    if drop:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")


def time_peer(args, peer: str, mode: str, root: Path, out: Path) -> dict:
    settle(out, args.drop_caches)
    command = [sys.executable, __file__, "--peer", peer, "--mode", mode]
    command += ["--input", str(root), "--out", str(out)]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(out)
    return {"s": elapsed, "rows": answer["rows"], "peak_rss_mb": answer["peak_rss_mb"]}


def time_bulkforge(args, bfd: Bfd, run: int, root: Path, out: Path) -> dict:
    settle(out, args.drop_caches)
    spec = pb.CleanSpec(input=str(root), dest=str(out))
    bfd.peak_rss = 0
    started = time.perf_counter()
    bfd.run_job(pb.SubmitRequest(name=f"clean-{run}", clean=spec))
    elapsed = time.perf_counter() - started
    stats = json.loads((out / "_jobs" / f"clean-{run}" / "stats.json").read_text())
    shutil.rmtree(out)
    return {"s": elapsed, "rows": stats["rows_out"], "peak_rss_mb": round(bfd.peak_rss / 2**20, 1)}


def main() -> None:
    args = parse_args()
    if args.peer:
        run_peer(args)
        return
    tools = [tool for tool in args.tools.split(",") if tool]
    work = Path(args.work or tempfile.mkdtemp(prefix="bulkforge-clean-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    root, zips = generate(args, work)
    total = args.symbols * args.days * args.rows
    print(f"{len(zips)} zips, {total:,} rows, {sum(z.stat().st_size for z in zips):,} bytes")
    results: dict[str, list[dict]] = {}
    bfd = None
    if "bulkforge" in tools:
        bfd = Bfd(work, "clean", 8, {"--cpu-workers": psutil.cpu_count()})
    try:
        for run in range(args.runs):
            for tool in tools:
                modes = ["bfd"] if tool == "bulkforge" else ["threads", "processes"]
                for mode in modes:
                    out = work / f"out-{tool}"
                    if tool == "bulkforge":
                        result = time_bulkforge(args, bfd, run, root, out)
                    else:
                        result = time_peer(args, tool, mode, root, out)
                    if result["rows"] != total:
                        sys.exit(f"{tool} ({mode}) wrote {result['rows']:,} rows, not {total:,}")
                    results.setdefault(f"{tool}/{mode}", []).append(result)
                    rate = total / result["s"]
                    print(
                        f"run {run + 1}: {tool} ({mode}) {result['s']:.1f} s, {rate:,.0f} rows/s, "
                        f"peak RSS {result['peak_rss_mb']} MB",
                        flush=True,
                    )
    finally:
        if bfd is not None:
            bfd.stop()
    report(args, work, total, results)


def report(args, work: Path, total: int, results: dict[str, list[dict]]) -> None:
    best = {key: min(runs, key=lambda r: r["s"]) for key, runs in results.items()}
    rates = {key: total / r["s"] for key, r in best.items()}
    lines = ["| tool (mode) | best s | rows/s | peak RSS MB |", "|---|---|---|---|"]
    for key, result in best.items():
        lines.append(f"| {key} | {result['s']:.1f} | {rates[key]:,.0f} | {result['peak_rss_mb']} |")
    ratios = {}
    if "bulkforge/bfd" in rates:
        for peer, target in TARGETS.items():
            peer_rates = [rate for key, rate in rates.items() if key.startswith(f"{peer}/")]
            if peer_rates:
                ratios[peer] = round(rates["bulkforge/bfd"] / max(peer_rates), 2)
                verdict = "met" if ratios[peer] >= target else "MISSED"
                lines.append(
                    f"\nbulkforge / {peer} (its faster mode): {ratios[peer]:.2f}x "
                    f"(target >= {target}x: {verdict})"
                )
    text = "\n".join(lines)
    print(text)
    document = {"rows": total, "best": best, "ratios": ratios, "params": vars(args)}
    print(json.dumps(document))
    if args.record:
        record_section(
            f"Clean: {total:,} Binance trade rows into Parquet",
            work,
            text,
            f" {args.symbols} symbols x {args.days} daily zips x {args.rows:,} rows.",
        )


if __name__ == "__main__":
    main()
