"""bfctl system: what the daemon's governor sees and decides."""

import argparse

from bulkforge.client.commands.base import add_command
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json, system_to_dict
from bulkforge.client.render import print_system
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def register(subparsers: argparse._SubParsersAction) -> None:
    add_command(subparsers, "system", "show the daemon's resources and limits", run)


def run(args: argparse.Namespace, stub) -> int:
    response = stub.System(pb.SystemRequest(), timeout=call_timeout(args))
    if args.json:
        print_json(system_to_dict(response))
    else:
        print_system(response)
    return 0
