"""bfctl stats NAME: throughput over time and failures by step and error class."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import print_json, stats_to_dict
from bulkforge.client.render import print_stats


def register(subparsers: argparse._SubParsersAction) -> None:
    add_job_name(add_command(subparsers, "stats", "show a job's throughput and failures", run))


def run(args: argparse.Namespace, bfd: Client) -> int:
    response = bfd.stats(args.name, timeout=call_timeout(args))
    if args.json:
        print_json(stats_to_dict(response))
    else:
        print_stats(response)
    return 0
