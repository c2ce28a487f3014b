"""bfctl submit download NAME (--manifest F | --s3 URL | --hf REPO | --url URL...) --dest D."""

import argparse

from bulkforge.client import flags
from bulkforge.client.api import Client
from bulkforge.client.commands.base import add_command, add_job_name
from bulkforge.client.commands.submit.common import daemon_path, print_submitted
from bulkforge.client.connection import call_timeout
from bulkforge.client.errors import UsageError
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.choices import OVERSIZE
from bulkforge.proto.inputs import UnsafeInput, check_regular


def register(kinds: argparse._SubParsersAction) -> None:
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


def add_plan_flags(parser: argparse.ArgumentParser, space_required: bool = False) -> None:
    """How batches are cut; `plan` takes the same flags (and cannot do without --space)."""
    parser.add_argument(
        "--space",
        required=space_required,
        type=flags.space,
        metavar="BYTES|auto",
        help="bytes one disk offers (10TB, 931GiB) or auto: the free space of --dest now",
    )
    parser.add_argument(
        "--safety-margin",
        type=flags.fraction,
        metavar="M",
        help="share of each disk a batch may fill, in (0, 1] (default 0.9)",
    )
    parser.add_argument(
        "--oversize",
        choices=OVERSIZE,
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
    if not args.target:
        try:  # the daemon's own rule: a regular file, never a FIFO, a device or a socket
            check_regular(args.manifest)
        except UnsafeInput as exc:
            raise UsageError(f"--manifest {exc}") from None
        except OSError:
            raise UsageError(f"--manifest {args.manifest}: no such file") from None


def check_download(args: argparse.Namespace) -> None:
    """Settle paths before connecting: bfd resolves them itself, from its own working directory.

    With --target the daemon runs on another node, so local paths mean nothing there: they must
    be absolute, and whether the manifest exists is for that node to say.
    """
    args.dest = daemon_path(args.dest, remote=bool(args.target), what="--dest")
    check_manifest(args)
    check_batching(args)


def check_batching(args: argparse.Namespace) -> None:
    """Flags that shape disk batches mean nothing without --space: said before bfd is asked."""
    if args.space:
        return
    if args.safety_margin is not None or args.oversize:
        raise UsageError("--safety-margin and --oversize need --space")
    if args.auto_proceed:
        raise UsageError("--auto-proceed needs --space: without it there is one batch")


def run_download(args: argparse.Namespace, bfd: Client) -> int:
    spec = source_spec(args)
    spec.dest = args.dest
    spec.space = args.space or ""
    spec.oversize = args.oversize or ""
    spec.auto_proceed = args.auto_proceed
    if args.safety_margin is not None:
        spec.safety_margin = args.safety_margin
    response = bfd.submit(args.name, spec, timeout=call_timeout(args, default=None))
    return print_submitted(args, response)
