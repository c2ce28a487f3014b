"""bfctl export NAME --dest D: an item job's successes, failures and progress as files."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.submit.common import daemon_path
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json
from bulkforge.proto.units import duration_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers,
        "export",
        "write successful_tokens.parquet, failed_tokens.parquet and progress.json",
        run,
    )
    add_job_name(parser)
    parser.add_argument("--dest", required=True, metavar="D", help="directory bfd writes them in")
    parser.set_defaults(check=check)


def check(args: argparse.Namespace) -> None:
    args.dest = daemon_path(args.dest, remote=bool(args.target), what="--dest")


def run(args: argparse.Namespace, bfd: Client) -> int:
    response = bfd.export(args.name, args.dest, timeout=call_timeout(args, default=None))
    if args.json:
        print_json(
            {
                "paths": list(response.paths),
                "total": response.total,
                "successful": response.successful,
                "failed": response.failed,
                "seconds": response.seconds,
            }
        )
        return 0
    print(
        f"exported {response.successful:,} successful and {response.failed:,} failed of "
        f"{response.total:,} {response.item_unit or 'items'} in {duration_text(response.seconds)}:"
    )
    for path in response.paths:
        print(f"  {path}")
    return 0
