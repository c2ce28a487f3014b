"""bfctl submit KIND NAME ...: create a job. Submitting the same again changes nothing."""

import argparse
import os
from pathlib import Path

from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.connection import call_timeout
from bulkforge.client.documents import job_to_dict, print_json
from bulkforge.client.errors import UsageError
from bulkforge.client.render import print_job
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "submit", "create a job (idempotent by name)", None)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    download = add_command(kinds, "download", "download files into a directory", run_download)
    add_job_name(download)
    add_source_flags(download)
    download.add_argument("--dest", required=True, metavar="D", help="directory the files land in")
    add_plan_flags(download)
    download.add_argument(
        "--auto-proceed",
        action="store_true",
        help="start each next batch at once instead of waiting for `continue` or `swap`",
    )
    download.set_defaults(check=check_download)
    register_scenes(kinds)


def register_scenes(kinds: argparse._SubParsersAction) -> None:
    scenes = add_command(kinds, "scenes", "process the items of a Parquet into shards", run_scenes)
    add_job_name(scenes)
    scenes.add_argument(
        "--input", required=True, metavar="F", help="a Parquet file or a directory of *.parquet"
    )
    scenes.add_argument("--key", required=True, metavar="COL", help="the column of unique keys")
    scenes.add_argument("--url", required=True, metavar="COL", help="the column of item URLs")
    scenes.add_argument(
        "--keep",
        default="",
        metavar="COL,...",
        help="input columns copied into each item's metadata and shard index",
    )
    scenes.add_argument("--dest", required=True, metavar="D", help="directory the shards go in")
    scenes.add_argument(
        "--shard-size", type=int, default=0, metavar="N", help="items per shard (default 10000)"
    )
    scenes.add_argument(
        "--format",
        choices=("files", "webdataset", "parquet"),
        default="",
        help="shard format (default webdataset)",
    )
    scenes.add_argument(
        "--steps",
        default="fetch",
        metavar="S,...",
        help="steps in order, fetch first: fetch, verify, decode or module:function",
    )
    scenes.add_argument(
        "--max-size", default="", metavar="BYTES", help="largest item fetch accepts (64MiB)"
    )
    scenes.add_argument(
        "--timeout", type=float, default=0, metavar="S", help="seconds per fetch attempt (30)"
    )
    scenes.set_defaults(check=check_scenes)


def check_scenes(args: argparse.Namespace) -> None:
    remote = bool(args.target)
    args.dest = daemon_path(args.dest, remote=remote, what="--dest")
    args.input = daemon_path(args.input, remote=remote, what="--input")
    if not remote and not Path(args.input).exists():
        raise UsageError(f"--input {args.input}: no such file or directory")
    if args.shard_size < 0:
        raise UsageError("--shard-size must be positive")


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def run_scenes(args: argparse.Namespace, stub) -> int:
    spec = pb.ScenesSpec(
        input=args.input,
        key=args.key,
        url=args.url,
        keep=_names(args.keep),
        dest=args.dest,
        shard_size=args.shard_size,
        format=args.format,
        steps=_names(args.steps),
        max_size=args.max_size,
        timeout_s=args.timeout,
    )
    response = stub.Submit(
        pb.SubmitRequest(name=args.name, scenes=spec), timeout=call_timeout(args, default=None)
    )
    return _print_submitted(args, response)


def add_source_flags(parser: argparse.ArgumentParser) -> None:
    """The source of a download; `analyze` takes the same flags."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--manifest", metavar="F", help="JSONL, CSV or Parquet with url[, path, size, sha256, ...]"
    )
    source.add_argument(
        "--url", action="append", metavar="URL", help="a file to fetch; repeat for more"
    )
    source.add_argument(
        "--s3", metavar="URL", help="an S3-compatible listing: http(s)://host[:port]/bucket/prefix"
    )
    source.add_argument(
        "--hf", metavar="REPO[@REV]", help="a Hugging Face repo, e.g. datasets/ORG/NAME@main"
    )
    parser.add_argument(
        "--include", action="append", default=[], metavar="GLOB", help="only listed paths matching"
    )
    parser.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip listed paths matching"
    )


def add_plan_flags(parser: argparse.ArgumentParser) -> None:
    """How batches are cut; `plan` takes the same flags."""
    parser.add_argument(
        "--space",
        metavar="BYTES|auto",
        help="bytes one disk offers (10TB, 931GiB) or auto: the free space of --dest now",
    )
    parser.add_argument(
        "--safety-margin",
        type=float,
        metavar="M",
        help="share of each disk a batch may fill, in (0, 1] (default 0.9)",
    )
    parser.add_argument(
        "--oversize",
        choices=("fail", "skip", "own-batch"),
        help="files larger than one batch: fail them (default), skip them, or a batch each",
    )


def source_spec(args: argparse.Namespace) -> pb.DownloadSpec:
    spec = pb.DownloadSpec(include=args.include, exclude=args.exclude)
    if args.manifest is not None:
        spec.manifest = args.manifest
    elif args.s3 is not None:
        spec.s3 = args.s3
    elif args.hf is not None:
        spec.hf = args.hf
    else:
        spec.urls.urls.extend(args.url)
    return spec


def check_manifest(args: argparse.Namespace) -> None:
    if args.manifest is None:
        return
    args.manifest = daemon_path(args.manifest, remote=bool(args.target), what="--manifest")
    if not args.target and not Path(args.manifest).is_file():
        raise UsageError(f"--manifest {args.manifest}: no such file")


def check_download(args: argparse.Namespace) -> None:
    """Settle paths before connecting: bfd resolves them itself, from its own working directory.

    With --target the daemon runs on another node, so local paths mean nothing there: they must
    be absolute, and whether the manifest exists is for that node to say.
    """
    args.dest = daemon_path(args.dest, remote=bool(args.target), what="--dest")
    check_manifest(args)


def daemon_path(path: str, remote: bool, what: str) -> str:
    if os.path.isabs(path):
        return path
    if remote:
        raise UsageError(f"{what} {path}: with --target, give an absolute path on bfd's node")
    return os.path.abspath(path)


def run_download(args: argparse.Namespace, stub) -> int:
    spec = source_spec(args)
    spec.dest = args.dest
    spec.space = args.space or ""
    spec.oversize = args.oversize or ""
    spec.auto_proceed = args.auto_proceed
    if args.safety_margin is not None:
        spec.safety_margin = args.safety_margin
    request = pb.SubmitRequest(name=args.name, download=spec)
    response = stub.Submit(request, timeout=call_timeout(args, default=None))
    return _print_submitted(args, response)


def _print_submitted(args: argparse.Namespace, response: pb.SubmitResponse) -> int:
    if args.json:
        print_json({"created": response.created, "job": job_to_dict(response.job)})
        return 0
    if response.created:
        print(f"created job {args.name!r}; follow it with `bfctl watch {args.name}`")
    else:
        print(f"job {args.name!r} already exists with these parameters; nothing changed")
    print_job(response.job)
    return 0
