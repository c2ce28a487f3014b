"""bfctl list: every job the daemon knows, one line each."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import job_to_dict, print_json
from bulkforge.client.render import print_jobs
from bulkforge.proto.choices import JOB_KINDS, JOB_STATES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "list", "list jobs", run)
    parser.add_argument(
        "--state",
        action="append",
        type=flags.names_of("state", JOB_STATES),
        default=[],
        metavar="S[,S...]",
        help="only jobs in these states (running, failed, completed …); repeatable",
    )
    parser.add_argument(
        "--kind",
        type=flags.one_of("kind", JOB_KINDS),
        default="",
        metavar="K",
        help=f"only jobs of this kind ({', '.join(JOB_KINDS)})",
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    states = [state for given in args.state for state in given]
    response = bfd.list(states=states, kind=args.kind, timeout=call_timeout(args))
    if args.json:
        print_json({"jobs": [job_to_dict(job) for job in response.jobs]})
    else:
        print_jobs(response.jobs)
    return 0
