"""bfctl swap NAME [--dest D]: the finished disk was taken away; go on on the new one."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.submit.common import daemon_path
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import disk_to_dict, job_to_dict, print_json
from bulkforge.client.render import print_job


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "swap", "record that the finished disk was replaced, then go on", run
    )
    add_job_name(parser)
    parser.add_argument("--dest", metavar="D", help="where the new disk is mounted, if elsewhere")
    parser.set_defaults(check=check_swap)


def check_swap(args: argparse.Namespace) -> None:
    if args.dest is not None:
        args.dest = daemon_path(args.dest, remote=bool(args.target), what="--dest")


def run(args: argparse.Namespace, bfd: Client) -> int:
    response = bfd.swap(args.name, dest=args.dest or "", timeout=call_timeout(args))
    if args.json:
        print_json(
            {
                "job": job_to_dict(response.job),
                "archived": list(response.archived),
                "disk": disk_to_dict(response.disk),
                "new_disk": response.new_disk,
                "note": response.note,
            }
        )
        return 0
    archived = ", ".join(map(str, response.archived)) or "none"
    kind = "a new filesystem" if response.new_disk else "the same filesystem as before"
    print(f"archived batch(es) {archived}; {response.disk.mount} is {kind}")
    if response.note:
        print(f"note: {response.note}")
    print_job(response.job)
    return 0
