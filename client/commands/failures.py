"""bfctl failures NAME: what failed, grouped by step and error class, and the items."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import failures_to_dict, print_json
from bulkforge.client.render import print_failures
from bulkforge.proto.choices import FAILURE_STEPS
from bulkforge.proto.units import MAX_FAILURES_LIMIT


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "failures", "show a job's failed items", run)
    add_job_name(parser)
    parser.add_argument(
        "--step",
        type=flags.one_of("step", FAILURE_STEPS, plugin=True),
        default="",
        help=f"only failures of this step ({', '.join(FAILURE_STEPS)} or a MODULE:FUNCTION)",
    )
    parser.add_argument(
        "--limit",
        type=flags.count(1, MAX_FAILURES_LIMIT),
        default=0,
        metavar="N",
        help="how many failed items to list besides the groups (default: the daemon's, 100)",
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    response = bfd.failures(args.name, step=args.step, limit=args.limit, timeout=call_timeout(args))
    if args.json:
        print_json(failures_to_dict(response))
    else:
        print_failures(response, args.name)
    return 0
