"""bfctl retry NAME: move failed items back to pending, optionally only some of them."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import job_to_dict, print_json
from bulkforge.client.render import item_unit, print_job
from bulkforge.proto.choices import FAILURE_STEPS
from bulkforge.proto.units import count_text


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "retry", "queue a job's failed items again", run)
    add_job_name(parser)
    parser.add_argument(
        "--step",
        type=flags.one_of("step", FAILURE_STEPS, plugin=True),
        default="",
        help=f"only failures of this step ({', '.join(FAILURE_STEPS)} or a MODULE:FUNCTION)",
    )
    parser.add_argument(
        "--error",
        default="",
        metavar="SUBSTRING",
        help="only failures whose error class or message contains this",
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    response = bfd.retry(args.name, step=args.step, error=args.error, timeout=call_timeout(args))
    if args.json:
        print_json({"retried": response.retried, "job": job_to_dict(response.job)})
    else:
        unit = item_unit(response.job)
        print(f"{count_text(response.retried)} failed {unit} queued again")
        print_job(response.job)
    return 0
