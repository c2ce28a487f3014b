"""bfctl continue NAME: a job awaiting a swap goes on with its next batch on the same disk."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.status import show_job
from bulkforge.client.connection import call_timeout


def register(subparsers: argparse._SubParsersAction) -> None:
    help_text = "start the next batch on the disk at dest (after freeing space on it)"
    add_job_name(add_command(subparsers, "continue", help_text, run))


def run(args: argparse.Namespace, bfd: Client) -> int:
    job = bfd.continue_(args.name, timeout=call_timeout(args))
    show_job(job, args.json)
    return 0
