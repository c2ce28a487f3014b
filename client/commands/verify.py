"""bfctl verify NAME [--batch K]: re-hash a batch on the disk mounted now; exit 1 on problems."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json, verification_to_dict
from bulkforge.client.render import print_verification


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "verify", "re-hash a batch's files on the disk mounted now", run
    )
    add_job_name(parser)
    parser.add_argument(
        "--batch",
        type=flags.count(0),
        metavar="K",
        help="the batch to check (default: every batch that went to the disk mounted now)",
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    response = bfd.verify(args.name, batch=args.batch, timeout=call_timeout(args, default=None))
    if args.json:
        print_json(verification_to_dict(response))
    else:
        print_verification(response)
    return 0 if response.ok else 1
