"""bfctl pause NAME: stop the job; transfers in flight stop too, keeping their partials."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.status import show_job
from bulkforge.client.connection import call_timeout


def register(subparsers: argparse._SubParsersAction) -> None:
    add_job_name(
        add_command(
            subparsers, "pause", "stop a job (transfers stop, partials are kept for resume)", run
        )
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    job = bfd.pause(args.name, timeout=call_timeout(args))
    show_job(job, args.json)
    return 0
