"""bfctl submit scenes NAME --input F --key COL --url COL --dest D: items into shards."""

import argparse
from pathlib import Path

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.submit.common import daemon_path, print_submitted
from bulkforge.client.connection import call_timeout
from bulkforge.client.errors import UsageError
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.choices import SCENES_FORMATS, SCENES_STEPS
from bulkforge.proto.units import MAX_FETCH_TIMEOUT_S, MAX_ITEM_SIZE, MAX_SHARD_SIZE


def register(kinds: argparse._SubParsersAction) -> None:
    scenes = add_command(kinds, "scenes", "process the items of a Parquet into shards", run_scenes)
    add_job_name(scenes)
    scenes.add_argument(
        "--input", required=True, metavar="F", help="a Parquet file or a directory of *.parquet"
    )
    scenes.add_argument("--key", required=True, metavar="COL", help="the column of unique keys")
    scenes.add_argument("--url", required=True, metavar="COL", help="the column of item URLs")
    scenes.add_argument(
        "--keep",
        type=flags.names("column"),
        default=[],
        metavar="COL,...",
        help="input columns copied into each item's metadata and shard index",
    )
    scenes.add_argument(
        "--caption",
        default="",
        metavar="COL",
        help="the caption column: kept as `caption`, each sample's .txt",
    )
    scenes.add_argument("--dest", required=True, metavar="D", help="directory the shards go in")
    scenes.add_argument(
        "--shard-size",
        type=flags.count(1, MAX_SHARD_SIZE),
        default=0,
        metavar="N",
        help="items per shard (default 10000)",
    )
    scenes.add_argument(
        "--format",
        choices=SCENES_FORMATS,
        default="",
        help="shard format (default webdataset)",
    )
    scenes.add_argument(
        "--steps",
        type=flags.names_of("step", SCENES_STEPS, plugin=True),
        default="fetch",
        metavar="S,...",
        help="steps in order, fetch first: fetch, verify, decode or module:function",
    )
    scenes.add_argument(
        "--max-size",
        type=flags.size(1, MAX_ITEM_SIZE),
        default=0,
        metavar="BYTES",
        help="largest item fetch accepts (64MiB)",
    )
    scenes.add_argument(
        "--fetch-timeout",
        type=flags.seconds(high=MAX_FETCH_TIMEOUT_S),
        default=0,
        metavar="S",
        help="seconds per fetch attempt (30)",
    )
    scenes.set_defaults(check=check_scenes)


def check_scenes(args: argparse.Namespace) -> None:
    remote = bool(args.target)
    args.dest = daemon_path(args.dest, remote=remote, what="--dest")
    args.input = daemon_path(args.input, remote=remote, what="--input")
    if not remote and not Path(args.input).exists():
        raise UsageError(f"--input {args.input}: no such file or directory")


def run_scenes(args: argparse.Namespace, bfd: Client) -> int:
    spec = pb.ScenesSpec(
        input=args.input,
        key=args.key,
        url=args.url,
        keep=args.keep,
        caption=args.caption,
        dest=args.dest,
        shard_size=args.shard_size,
        format=args.format,
        steps=args.steps,
        max_size=str(args.max_size or ""),
        timeout_s=args.fetch_timeout,
    )
    response = bfd.submit(args.name, spec, timeout=call_timeout(args, default=None))
    return print_submitted(args, response)
