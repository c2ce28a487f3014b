"""What every `bfctl submit KIND` module shares: paths for bfd, and the answer printed."""

import argparse
import os

from bulkforge.client.documents import job_to_dict, print_json
from bulkforge.client.errors import UsageError
from bulkforge.client.render import print_job
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def daemon_path(path: str, remote: bool, what: str) -> str:
    if os.path.isabs(path):
        return path
    if remote:
        raise UsageError(f"{what} {path}: with --target, give an absolute path on bfd's node")
    return os.path.abspath(path)


def print_submitted(args: argparse.Namespace, response: pb.SubmitResponse) -> int:
    if args.json:
        print_json({"created": response.created, "job": job_to_dict(response.job)})
        return 0
    if response.created:
        print(f"created job {args.name!r}; follow it with `bfctl watch {args.name}`")
    else:
        print(f"job {args.name!r} already exists with these parameters; nothing changed")
    print_job(response.job)
    return 0
