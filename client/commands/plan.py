"""bfctl plan SOURCE --space BYTES|auto: the disk-sized batches a download would run in."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command
from bulkforge.client.commands.submit.download import (
    add_plan_flags,
    add_source_flags,
    check_manifest,
    daemon_path,
    source_spec,
)
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import plan_to_dict, print_json
from bulkforge.client.errors import UsageError
from bulkforge.client.render import print_plan


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "plan", "cut a source into batches that fit one disk", run)
    add_source_flags(parser)
    add_plan_flags(parser, space_required=True)
    parser.add_argument("--dest", metavar="D", help="the disk --space auto measures")
    # A dry run: with no bfd running here, a private one answers (__main__.run_privately).
    parser.set_defaults(check=check_plan, dry_run=True)


def check_plan(args: argparse.Namespace) -> None:
    check_manifest(args)
    if args.space == "auto" and not args.dest:
        raise UsageError("--space auto measures the free space of --dest: give --dest")
    if args.dest is not None:
        args.dest = daemon_path(args.dest, remote=bool(args.target), what="--dest")


def run(args: argparse.Namespace, bfd: Client) -> int:
    source = source_spec(args)
    if args.dest:
        source.dest = args.dest
    response = bfd.plan(
        source,
        space=args.space or "",
        oversize=args.oversize or "",
        safety_margin=args.safety_margin,
        timeout=call_timeout(args, default=None),
    )
    if args.json:
        print_json(plan_to_dict(response))
    else:
        print_plan(response)
    return 0
