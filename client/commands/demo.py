"""bfctl demo: the whole path on loopback, with nothing to set up.

Generated files on a local HTTP origin, a real bfd on a private socket and state directory, one
download job followed like `watch` does, and every file checked against what was generated.
"""

import argparse
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bulkforge.client import flags
from bulkforge.client.api import BulkforgeError, Client, Endpoint
from bulkforge.client.commands.base import add_command
from bulkforge.client.documents import job_to_dict, print_json
from bulkforge.client.errors import ClientError, from_api_error, report
from bulkforge.client.private_daemon import running_daemon
from bulkforge.client.progress import follow
from bulkforge.client.render import print_failures, print_job
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import count_text, duration_text, per_second_text, size_text

JOB_NAME = "demo"
CHUNK = 1 << 20
FILES_PER_DIRECTORY = 100


@dataclass(frozen=True)
class DemoFile:
    path: str
    size: int
    sha256: str


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(
        subparsers, "demo", "download generated files through a real bfd on loopback", run
    )
    parser.add_argument(
        "--files", type=flags.count(1), default=200, metavar="N", help="how many files (200)"
    )
    parser.add_argument(
        "--size",
        type=flags.size(0),
        default=262144,
        metavar="BYTES",
        help=f"bytes per file, e.g. 1MB ({size_text(262144)})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    # The demo starts its own daemon, so main must not connect to one first.
    parser.set_defaults(standalone=True)


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bulkforge-demo-"))
    try:
        return run_in(workdir, args)
    finally:
        if args.keep:
            print(f"kept {workdir} (bfd.log, manifest.jsonl, state/, dest/)", file=note(args))
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def note(args: argparse.Namespace):
    """Where remarks go: stdout for people, stderr when stdout carries the JSON document."""
    return sys.stderr if args.json else sys.stdout


def run_in(workdir: Path, args: argparse.Namespace) -> int:
    if not args.json:
        print(f"generating {count_text(args.files)} files of {size_text(args.size)} in {workdir}")
    files = generate_files(workdir / "origin", args.files, args.size)
    from bulkforge.client.demo_origin import Origin

    with Origin(workdir / "origin") as origin:
        manifest = write_manifest(workdir / "manifest.jsonl", origin.base_url, files)
        with running_daemon(workdir) as endpoint:
            if not args.json:
                print(f"origin {origin.base_url}, bfd on {endpoint.shown}")
            return download_and_verify(endpoint, manifest, workdir / "dest", files, args)


def generate_files(root: Path, count: int, size: int) -> list[DemoFile]:
    return [generate_file(root, number, size) for number in range(count)]


def generate_file(root: Path, number: int, size: int) -> DemoFile:
    """File `number` always has the same bytes, so a failed run can be compared with a good one."""
    relative = f"d{number // FILES_PER_DIRECTORY:03d}/f{number:05d}.bin"
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    generator = random.Random(f"bulkforge-demo-{number}")
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for offset in range(0, size, CHUNK):
            chunk = generator.randbytes(min(CHUNK, size - offset))
            digest.update(chunk)
            out.write(chunk)
    return DemoFile(relative, size, digest.hexdigest())


def write_manifest(path: Path, base_url: str, files: list[DemoFile]) -> Path:
    with path.open("w") as out:
        for file in files:
            row = {"url": f"{base_url}/{file.path}", "path": file.path}
            row |= {"size": file.size, "sha256": file.sha256}
            out.write(json.dumps(row) + "\n")
    return path


def download_and_verify(
    endpoint: Endpoint, manifest: Path, dest: Path, files: list[DemoFile], args
) -> int:
    started = time.monotonic()
    job = download(endpoint, manifest, dest, show=not args.json)
    bad = unverified(dest, files)
    seconds = time.monotonic() - started
    ok = job.tone == "ok" and not bad
    total = sum(file.size for file in files)
    if args.json:
        print_json(
            {
                "ok": ok,
                "files": len(files),
                "bytes": total,
                "seconds": round(seconds, 3),
                "files_per_s": round(len(files) / seconds, 1),
                "job": job_to_dict(job),
            }
        )
    elif ok:
        pace = per_second_text(len(files) / seconds, "files")
        print(
            f"demo ok: {count_text(len(files))} files, {size_text(total)} downloaded and "
            f"verified in {duration_text(seconds)} ({pace})"
        )
    if not ok:
        report(
            f"demo failed: job {job.state}, {count_text(len(bad))} of {count_text(len(files))} "
            "files did not verify"
        )
        for problem in bad[:10]:
            report(f"  {problem}")
    return 0 if ok else 1


def download(endpoint: Endpoint, manifest: Path, dest: Path, show: bool) -> pb.Job:
    """Submit the job and follow it to its end; the final job as the daemon last reported it."""
    spec = pb.DownloadSpec(manifest=str(manifest), dest=str(dest))
    try:
        with Client.at(endpoint) as bfd:
            bfd.submit(JOB_NAME, spec, timeout=30)
            event = follow(bfd.watch(JOB_NAME), show=show)
            if event is None:
                raise ClientError("bfd ended the watch without any news of the job")
            if show:
                print_job(event.job)
            if show and event.job.tone != "ok":
                print_failures(bfd.failures(JOB_NAME, limit=10, timeout=30), JOB_NAME)
    except BulkforgeError as exc:
        raise from_api_error(exc, endpoint.shown) from None
    return event.job


def unverified(dest: Path, files: list[DemoFile]) -> list[str]:
    """Every file that is not on disk exactly as generated, with what is wrong with it."""
    problems = []
    for file in files:
        target = dest / file.path
        if not target.is_file():
            problems.append(f"{file.path}: missing")
            continue
        with target.open("rb") as data:
            digest = hashlib.file_digest(data, "sha256").hexdigest()
        if digest != file.sha256:
            problems.append(f"{file.path}: sha256 {digest}, expected {file.sha256}")
    return problems
