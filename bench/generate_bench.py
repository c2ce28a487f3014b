"""Synthetic data into Parquet: bulkforge against Faker and mimesis, on the same columns.

    python bench/generate_bench.py --rows 10000000 --peer-rows 200000 --record
    python bench/generate_bench.py --rows 100000000 --tools bulkforge --scenario students

Scenario `students`: the courses preset's students table alone (student_id, first and
last name, an email from them, birth date, phone with 15% nulls, city, enrolled year),
from the preset's own column definitions. Scenario `preset`: the whole courses preset
(seven tables, enrollments about 5.7 rows per student), counted as rows of every table.

bulkforge: a bfd with `--cpu-workers` = the cores, timed from Submit until the job is
completed (every part generated, written, fsynced); its peak RSS sums bfd and its
workers. Faker and mimesis make the same students columns row by row, as their users
do, each in a process pool of as many processes as cores (their best on this machine),
and write them to Parquet with pyarrow; they run on `--peer-rows` rows (they are slow),
compared as rows/s. Their peak RSS is the largest single process's.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from resource import RUSAGE_CHILDREN, RUSAGE_SELF

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from common import REPO
from download_bench import Bfd, fresh, record_section

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

PRESET = REPO / "daemon" / "generator" / "presets" / "courses.toml"
TARGETS = {"rows_per_s": 1_000_000, "faker": 100.0, "mimesis": 10.0}
BATCH = 50_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="students for bulkforge")
    parser.add_argument("--peer-rows", type=int, default=200_000, help="students for the peers")
    parser.add_argument("--scenario", choices=("students", "preset", "both"), default="both")
    parser.add_argument("--tools", default="bulkforge,faker,mimesis")
    parser.add_argument("--work", help="scratch directory (deleted after each tool)")
    parser.add_argument("--record", action="store_true", help="append the results to RESULTS.md")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


# ---------------------------------------------------------------- peers (in a subprocess)


def faker_rows(task: tuple[int, int, int]) -> pa.Table:
    from faker import Faker

    start, count, seed = task
    fake = Faker("en_US")
    fake.seed_instance(seed + start)
    rows = []
    for n in range(start, start + count):
        first, last = fake.first_name(), fake.last_name()
        rows.append(
            {
                "student_id": n + 1,
                "first_name": first,
                "last_name": last,
                "email": f"{first}.{last}{n + 1}@students.example.edu".lower(),
                "birth_date": fake.date_between_dates(_date(1996, 1, 1), _date(2008, 12, 31)),
                "phone": fake.phone_number() if fake.random.random() >= 0.15 else None,
                "city": fake.city(),
                "enrolled_year": fake.random_int(2021, 2026),
            }
        )
    return pa.Table.from_pylist(rows)


def mimesis_rows(task: tuple[int, int, int]) -> pa.Table:
    from mimesis import Address, Datetime, Numeric, Person
    from mimesis.locales import Locale

    start, count, seed = task
    person, address = Person(Locale.EN, seed=seed + start), Address(Locale.EN, seed=seed + start)
    when, numbers = Datetime(seed=seed + start), Numeric(seed=seed + start)
    rows = []
    for n in range(start, start + count):
        first, last = person.first_name(), person.last_name()
        rows.append(
            {
                "student_id": n + 1,
                "first_name": first,
                "last_name": last,
                "email": f"{first}.{last}{n + 1}@students.example.edu".lower(),
                "birth_date": when.date(1996, 2008),
                "phone": person.telephone() if numbers.float_number(0, 1) >= 0.15 else None,
                "city": address.city(),
                "enrolled_year": numbers.integer_number(2021, 2026),
            }
        )
    return pa.Table.from_pylist(rows)


def _date(year: int, month: int, day: int):
    from datetime import date

    return date(year, month, day)


def run_peer(args) -> None:
    make = {"faker": faker_rows, "mimesis": mimesis_rows}[args.peer]
    out = Path(args.out)
    tasks = [
        (start, min(BATCH, args.peer_rows - start), 7) for start in range(0, args.peer_rows, BATCH)
    ]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        for index, table in enumerate(pool.map(make, tasks)):
            pq.write_table(table, out / f"part-{index:05d}.parquet", compression="zstd")
    peak_kb = max(resource.getrusage(who).ru_maxrss for who in (RUSAGE_SELF, RUSAGE_CHILDREN))
    print(json.dumps({"rows": args.peer_rows, "peak_rss_mb": round(peak_kb / 1024, 1)}))


# ---------------------------------------------------------------- bulkforge


def students_spec(work: Path) -> Path:
    """The preset's students table alone, with the preset's own column definitions."""
    preset = tomllib.loads(PRESET.read_text())
    students = preset["tables"]["students"]
    path = work / "students.json"
    path.write_text(json.dumps({"tables": {"students": students}}))
    return path


def time_bulkforge(bfd: Bfd, name: str, spec: pb.GenerateSpec, out: Path) -> dict:
    fresh(out)
    os.sync()
    bfd.peak_rss = 0
    started = time.perf_counter()
    job = bfd.run_job(pb.SubmitRequest(name=name, generate=spec))
    elapsed = time.perf_counter() - started
    rows = sum(pq.read_metadata(p).num_rows for p in out.rglob("*.parquet"))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    return {
        "s": elapsed,
        "rows": rows,
        "bytes": size,
        "parts": job.items_total,
        "peak_rss_mb": round(bfd.peak_rss / 2**20, 1),
    }


def time_peer(args, peer: str, out: Path) -> dict:
    fresh(out)
    command = [sys.executable, __file__, "--peer", peer, "--peer-rows", str(args.peer_rows)]
    started = time.perf_counter()
    done = subprocess.run([*command, "--out", str(out)], check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    shutil.rmtree(out)
    return {"s": elapsed, "rows": answer["rows"], "peak_rss_mb": answer["peak_rss_mb"]}


def main() -> None:
    args = parse_args()
    if args.peer:
        run_peer(args)
        return
    tools = [tool for tool in args.tools.split(",") if tool]
    work = Path(args.work or tempfile.mkdtemp(prefix="bulkforge-generate-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    if "bulkforge" in tools:
        bfd = Bfd(work, "generate", 8, {"--cpu-workers": psutil.cpu_count()})
        try:
            scenarios = ["students", "preset"] if args.scenario == "both" else [args.scenario]
            for n, scenario in enumerate(scenarios):
                out = work / f"out-{scenario}"
                spec = pb.GenerateSpec(rows=args.rows, seed=7, dest=str(out))
                if scenario == "students":
                    path = students_spec(work)
                    spec.spec_text, spec.spec_name = path.read_text(), path.name
                else:
                    spec.preset = "courses"
                result = time_bulkforge(bfd, f"{scenario}-{n}", spec, out)
                results[f"bulkforge/{scenario}"] = result
                print(
                    f"bulkforge {scenario}: {result['rows']:,} rows in {result['s']:.1f} s = "
                    f"{result['rows'] / result['s']:,.0f} rows/s, peak RSS "
                    f"{result['peak_rss_mb']} MB",
                    flush=True,
                )
        finally:
            bfd.stop()
    for peer in ("faker", "mimesis"):
        if peer in tools:
            result = time_peer(args, peer, work / f"out-{peer}")
            results[f"{peer}/students"] = result
            print(f"{peer} students: {result['rows'] / result['s']:,.0f} rows/s", flush=True)
    report(args, work, results)


def report(args, work: Path, results: dict[str, dict]) -> None:
    rates = {key: r["rows"] / r["s"] for key, r in results.items()}
    lines = ["| tool / scenario | rows | s | rows/s | peak RSS MB |", "|---|---|---|---|---|"]
    for key, r in results.items():
        lines.append(
            f"| {key} | {r['rows']:,} | {r['s']:.1f} | {rates[key]:,.0f} | {r['peak_rss_mb']} |"
        )
    ours = rates.get("bulkforge/students")
    if ours:
        verdict = "met" if ours >= TARGETS["rows_per_s"] else "MISSED"
        lines.append(f"\nbulkforge students: {ours:,.0f} rows/s (target >= 1,000,000: {verdict})")
        for peer in ("faker", "mimesis"):
            if f"{peer}/students" in rates:
                ratio = ours / rates[f"{peer}/students"]
                verdict = "met" if ratio >= TARGETS[peer] else "MISSED"
                lines.append(
                    f"\nbulkforge / {peer}: {ratio:,.0f}x (target >= {TARGETS[peer]:g}x: {verdict})"
                )
    text = "\n".join(lines)
    print(text)
    print(json.dumps({"results": results, "params": vars(args)}))
    if args.record:
        record_section("Generate: the courses preset into Parquet", work, text)


if __name__ == "__main__":
    main()
