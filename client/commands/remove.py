"""bfctl remove NAME [--delete-output]: forget an ended job so its name is free; its files
stay, unless --delete-output deletes what it wrote first."""

import argparse
import sys

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json
from bulkforge.proto.units import size_text


def register(subparsers: argparse._SubParsersAction) -> None:
    summary = "forget an ended job (completed, failed, cancelled); its files stay"
    parser = add_command(subparsers, "remove", summary, run)
    add_job_name(parser)
    parser.add_argument(
        "--delete-output",
        action="store_true",
        help="delete what the job wrote first (its files, shards, parts or partitions and "
        "its own sidecars, as its rows name them; nothing else in the dest)",
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    removed = bfd.remove(args.name, delete_output=args.delete_output, timeout=call_timeout(args))
    deleted = removed.deleted if removed.HasField("deleted") else None
    if args.json:
        document = {"removed": removed.name, "state": removed.state, "dest": removed.dest}
        document["items"] = removed.items
        if deleted is not None:
            document["deleted"] = {
                "files": deleted.files,
                "directories": deleted.directories,
                "bytes": deleted.bytes,
                "paths": list(deleted.paths),
                "not_deleted": list(deleted.not_deleted),
            }
        print_json(document)
        return 1 if deleted is not None and deleted.not_deleted else 0
    if deleted is None:
        what = f"its files stay in {removed.dest}"
    else:
        what = (
            f"deleted {deleted.files:,} files and {deleted.directories:,} directories "
            f"({size_text(deleted.bytes)}) it wrote in {removed.dest}"
        )
    forgotten = f"{removed.items:,} {removed.item_unit or 'items'}"
    print(f"removed job {removed.name!r} ({removed.state}, {forgotten}); {what}")
    if deleted is None or not deleted.not_deleted:
        return 0
    print("these could not be deleted; delete them by hand:", file=sys.stderr)
    for line in deleted.not_deleted:
        print(f"  {line}", file=sys.stderr)
    return 1
