"""bfctl stats NAME: throughput over time and failures by step and error class."""

import argparse

from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json, stats_to_dict
from bulkforge.client.render import print_stats
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def register(subparsers: argparse._SubParsersAction) -> None:
    add_job_name(add_command(subparsers, "stats", "show a job's throughput and failures", run))


def run(args: argparse.Namespace, stub) -> int:
    response = stub.Stats(pb.JobRef(name=args.name), timeout=call_timeout(args))
    if args.json:
        print_json(stats_to_dict(response))
    else:
        print_stats(response)
    return 0
