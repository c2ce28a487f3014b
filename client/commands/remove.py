"""bfctl remove NAME: forget an ended job so its name is free; its files stay."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "forget an ended job (completed, failed, cancelled); its files stay"
    add_job_name(add_command(subparsers, "remove", summary, run))


def run(args: argparse.Namespace, bfd: Client) -> int:
    removed = bfd.remove(args.name, timeout=call_timeout(args))
    if args.json:
        document = {"removed": removed.name, "state": removed.state, "dest": removed.dest}
        print_json(document | {"items": removed.items})
        return 0
    print(
        f"removed job {removed.name!r} ({removed.state}, {removed.items:,} items); "
        f"its files stay in {removed.dest}"
    )
    return 0
