"""bfctl resume NAME: let a paused job take work again."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.status import show_job
from bulkforge.client.connection import call_timeout


def register(subparsers: argparse._SubParsersAction) -> None:
    add_job_name(add_command(subparsers, "resume", "let a paused job run again", run))


def run(args: argparse.Namespace, bfd: Client) -> int:
    job = bfd.resume(args.name, timeout=call_timeout(args))
    show_job(job, args.json)
    return 0
