"""bfctl cancel NAME: stop a job for good; what is already on disk stays."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.status import show_job
from bulkforge.client.connection import call_timeout


def register(subparsers: argparse._SubParsersAction) -> None:
    add_job_name(add_command(subparsers, "cancel", "stop a job for good", run))


def run(args: argparse.Namespace, bfd: Client) -> int:
    job = bfd.cancel(args.name, timeout=call_timeout(args))
    show_job(job, args.json)
    return 0
