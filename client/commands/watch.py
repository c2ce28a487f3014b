"""bfctl watch NAME: follow a job until it reaches a state that needs no more watching."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.documents import print_json, watch_event_to_dict
from bulkforge.client.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_REFUSED, ClientError, report
from bulkforge.client.progress import follow
from bulkforge.client.render import print_job
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

# A watch that ends on an ok tone (completed) or a held one (awaiting a disk swap: the batch
# is done and the next step is the operator's) ends well; the daemon gives each state its tone.
SUCCESS_TONES = frozenset({"ok", "held"})


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "watch", "follow a job's progress until it ends", run)
    add_job_name(parser)
    parser.add_argument(
        "--interval", type=flags.seconds(), default=1.0, metavar="S", help="seconds between updates"
    )


def run(args: argparse.Namespace, bfd: Client) -> int:
    # No deadline: a watch lasts as long as the job does.
    events = bfd.watch(args.name, interval_s=args.interval)
    try:
        event = follow(events, show=not args.json)
    except KeyboardInterrupt:
        events.close()
        return stopped_watching(args.name)
    if event is None:
        raise ClientError(f"bfd ended the watch of job {args.name!r} without any news")
    if args.json:
        print_json(watch_event_to_dict(event))
    else:
        print_job(event.job)
    return outcome(event.job)


def stopped_watching(name: str) -> int:
    report(f"stopped watching; job {name!r} goes on in bfd (`bfctl status {name}`)")
    return EXIT_INTERRUPTED


def outcome(job: pb.Job) -> int:
    """Exit 0 when the job ended well (or waits for a disk swap), else say why and exit 1."""
    if job.tone in SUCCESS_TONES:
        return EXIT_OK
    reason = f": {job.message}" if job.message else ""
    if job.tone == "bad":
        # The daemon's message usually says what to do next; add a pointer only when it is silent.
        hint = reason or f"; see `bfctl failures {job.name}`"
        report(f"job {job.name!r} {job.state}{hint}")
    elif job.tone == "idle":
        report(f"job {job.name!r} was {job.state}{reason}")
    else:
        report(f"the watch ended while job {job.name!r} is {job.state}{reason}")
    return EXIT_REFUSED
