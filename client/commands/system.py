"""bfctl system: what the daemon's governor sees and decides."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json, system_to_dict
from bulkforge.client.render import print_system


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "system", "show the daemon's resources and limits", run)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        type=flags.limit,
        metavar="KEY=VALUE",
        help="change a limit now: bandwidth=50MB/s, disk_threshold=0.8, memory_cap=4GiB, "
        "cpu_workers=4, max_connections=32, per_host_connections=8, transfer_workers=2 "
        "(until bfd restarts); "
        "repeat for more",
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    response = bfd.system(changes=dict(args.set), timeout=call_timeout(args))
    if args.json:
        print_json(system_to_dict(response))
    else:
        print_system(response)
    return 0
