"""bfctl submit generate NAME (--spec F | --preset courses) --rows N --dest D: synthetic tables."""

import argparse
from pathlib import Path

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.submit.common import daemon_path, print_submitted
from bulkforge.client.connection import call_timeout
from bulkforge.client.errors import UsageError
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.choices import GENERATE_FORMATS, PRESETS, SQL_DIALECTS
from bulkforge.proto.inputs import UnsafeInput, read_regular
from bulkforge.proto.units import MAX_CHUNK_ROWS, MAX_ROWS, MAX_SEED

MAX_SPEC_BYTES = 1024**2


def register(kinds: argparse._SubParsersAction) -> None:
    generate = add_command(
        kinds, "generate", "generate related synthetic tables from a spec", run_generate
    )
    add_job_name(generate)
    source = generate.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", metavar="F", help="the tables and columns (.toml, .json, .yaml)")
    source.add_argument(
        "--preset", choices=PRESETS, help="a bundled spec (courses: students = --rows)"
    )
    generate.add_argument(
        "--rows", required=True, type=flags.count(1, MAX_ROWS), metavar="N", help="rows to scale by"
    )
    generate.add_argument(
        "--seed", type=flags.count(0, MAX_SEED), default=0, metavar="S", help="the seed (default 0)"
    )
    generate.add_argument("--format", choices=GENERATE_FORMATS, default="", help="(parquet)")
    generate.add_argument("--sql-dialect", choices=SQL_DIALECTS, default="", help="(sqlite)")
    generate.add_argument("--dest", required=True, metavar="D", help="one folder per table")
    generate.add_argument(
        "--chunk-rows",
        type=flags.count(1, MAX_CHUNK_ROWS),
        default=0,
        metavar="K",
        help="rows per part file (1,000,000)",
    )
    generate.set_defaults(check=check_generate)


def check_generate(args: argparse.Namespace) -> None:
    if args.sql_dialect and args.format != "sql":
        raise UsageError(
            f"--sql-dialect {args.sql_dialect} is for --format sql only "
            f"(this job's format is {args.format or 'parquet'}): leave it out"
        )
    args.dest = daemon_path(args.dest, remote=bool(args.target), what="--dest")
    args.spec_text = ""
    if args.spec is None:
        return
    path = Path(args.spec)
    try:  # a regular file only (a FIFO would hang bfctl, /dev/zero never end), size-bounded
        args.spec_text = read_regular(path, MAX_SPEC_BYTES).decode("utf-8")
    except UnsafeInput as exc:
        raise UsageError(f"--spec {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--spec {path}: cannot be read ({exc})") from None
    if not args.spec_text.strip():
        raise UsageError(f"--spec {path}: the file is empty: it defines no tables")


def run_generate(args: argparse.Namespace, bfd: Client) -> int:
    spec = pb.GenerateSpec(
        spec_text=args.spec_text,
        spec_name=Path(args.spec).name if args.spec else "",
        preset=args.preset or "",
        rows=args.rows,
        seed=args.seed,
        format=args.format,
        sql_dialect=args.sql_dialect,
        dest=args.dest,
        chunk_rows=args.chunk_rows,
    )
    response = bfd.submit(args.name, spec, timeout=call_timeout(args, default=None))
    return print_submitted(args, response)
