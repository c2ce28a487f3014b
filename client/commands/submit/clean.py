"""bfctl submit clean NAME (--input D | --after DOWNLOAD_JOB) --dest D: Binance zips to Parquet."""

import argparse
from pathlib import Path

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.submit.common import daemon_path, print_submitted
from bulkforge.client.connection import call_timeout
from bulkforge.client.errors import UsageError
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.choices import CLEAN_KINDS, CLEAN_MARKETS


def register(kinds: argparse._SubParsersAction) -> None:
    clean = add_command(
        kinds, "clean", "clean Binance zips into partitioned, deduplicated Parquet", run_clean
    )
    add_job_name(clean)
    source = clean.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", metavar="D", help="a directory of zips in the data.binance.vision layout"
    )
    source.add_argument(
        "--after",
        metavar="DOWNLOAD_JOB",
        help="clean the zips of this download job as it verifies them",
    )
    clean.add_argument("--dest", required=True, metavar="D", help="directory the Parquet goes in")
    clean.add_argument(
        "--kinds",
        type=flags.names_of("kind", CLEAN_KINDS),
        default=[],
        metavar="K,...",
        help=f"{','.join(CLEAN_KINDS)} (default: all)",
    )
    clean.add_argument(
        "--markets",
        type=flags.names_of("market", CLEAN_MARKETS),
        default=[],
        metavar="M,...",
        help=f"{','.join(CLEAN_MARKETS)} (default: all)",
    )
    clean.set_defaults(check=check_clean)


def check_clean(args: argparse.Namespace) -> None:
    remote = bool(args.target)
    args.dest = daemon_path(args.dest, remote=remote, what="--dest")
    if args.input is not None:
        args.input = daemon_path(args.input, remote=remote, what="--input")
        if not remote and not Path(args.input).is_dir():
            raise UsageError(f"--input {args.input}: no such directory")


def run_clean(args: argparse.Namespace, bfd: Client) -> int:
    spec = pb.CleanSpec(
        input=args.input or "",
        after=args.after or "",
        dest=args.dest,
        kinds=args.kinds,
        markets=args.markets,
    )
    response = bfd.submit(args.name, spec, timeout=call_timeout(args, default=None))
    return print_submitted(args, response)
