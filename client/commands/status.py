"""bfctl status NAME: one job's states, bytes and batches."""

import argparse

from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import job_to_dict, print_json
from bulkforge.client.render import print_job
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def register(subparsers: argparse._SubParsersAction) -> None:
    add_job_name(add_command(subparsers, "status", "show one job", run))


def run(args: argparse.Namespace, bfd: Client) -> int:
    job = bfd.status(args.name, timeout=call_timeout(args))
    show_job(job, args.json)
    return 0


def show_job(job: pb.Job, as_json: bool) -> None:
    if as_json:
        print_json(job_to_dict(job))
    else:
        print_job(job)
