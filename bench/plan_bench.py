"""Batch planning at scale: `bfctl plan` of a 1,000,000-file manifest through the real bfd.

    python bench/plan_bench.py [--files 1000000] [--space 3TB] [--runs 3] [--dir D]

Writes a JSONL manifest of --files rows (paths in 1,000 directories under 20 top-level
ones, sizes log-normal around 4 MiB, a sha256 each), starts bfd on a temporary state dir,
and times the Plan RPC (reading the manifest, validating every row, planning) and, apart,
the planner on its own over the same sizes. There is no peer a user would otherwise pick for
this; the figure to meet is the issue's "seconds, not minutes". Also reports bfd's RSS after.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import psutil
from pydantic import TypeAdapter

from bulkforge.daemon.downloader.planner import FileSizes, capacity, plan
from bulkforge.daemon.settings import Size
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc


def write_manifest(path: Path, count: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(2026)
    sizes = rng.lognormal(mean=15.2, sigma=1.2, size=count).astype(np.int64) + 1
    paths = [f"part-{i % 20:02d}/dir-{i % 1000:04d}/file-{i:07d}.bin" for i in range(count)]
    digest = "0" * 64
    with path.open("w") as handle:
        for name, size in zip(paths, sizes.tolist(), strict=True):
            row = {"url": f"http://127.0.0.1:9/{name}", "path": name, "size": size}
            handle.write(json.dumps(row | {"sha256": digest}) + "\n")
    return paths, sizes


def start_bfd(root: Path) -> tuple[subprocess.Popen, pb_grpc.BulkforgeStub]:
    socket = root / "bfd.sock"
    command = [sys.executable, "-m", "bulkforge.daemon", "--state-dir", str(root / "state")]
    command += ["--socket", str(socket), "--log-level", "WARNING"]
    process = subprocess.Popen(command)
    stub = pb_grpc.BulkforgeStub(grpc.insecure_channel(f"unix:{socket}"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            stub.List(pb.ListRequest(), timeout=1)
            return process, stub
        except grpc.RpcError:
            time.sleep(0.05)
    process.kill()
    sys.exit("bfd did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1_000_000)
    parser.add_argument("--space", default="3TB")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="working directory (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bulkforge-plan-", dir=args.dir))
    manifest = root / "manifest.jsonl"
    started = time.perf_counter()
    paths, sizes = write_manifest(manifest, args.files)
    print(f"manifest of {args.files:,} rows in {time.perf_counter() - started:.1f} s")
    space = int(TypeAdapter(Size).validate_python(args.space))
    planner_s = []
    for _ in range(args.runs):
        started = time.perf_counter()
        gathered = FileSizes(capacity(space, 0.9))
        for path, size in zip(paths, sizes.tolist(), strict=True):
            gathered.add(path, size)
        result = plan(gathered, space, 0.9)
        planner_s.append(time.perf_counter() - started)
    process, stub = start_bfd(root)
    try:
        rpc_s, daemon_s = [], []
        for _ in range(args.runs):
            request = pb.PlanRequest(
                source=pb.DownloadSpec(manifest=str(manifest)), space=args.space
            )
            started = time.perf_counter()
            answer = stub.Plan(request, timeout=600)
            rpc_s.append(time.perf_counter() - started)
            daemon_s.append(answer.seconds)
        rss = psutil.Process(process.pid).memory_info().rss
    finally:
        process.terminate()
        process.wait(timeout=60)
    figures = {
        "files": args.files,
        "space": space,
        "batches": len(answer.batches),
        "peak_fill": round(answer.peak_bytes / space, 4),
        "plan_rpc_s_median": round(statistics.median(rpc_s), 2),
        "plan_rpc_s_all": [round(t, 2) for t in rpc_s],
        "daemon_side_s_median": round(statistics.median(daemon_s), 2),
        "planner_alone_s_median": round(statistics.median(planner_s), 2),
        "bfd_rss_mb_after": round(rss / 2**20, 1),
        "batches_in_process": len(result.batches),
    }
    print(
        f"{args.files:,} files into {figures['batches']} batches of {args.space} x 0.9: "
        f"Plan RPC {figures['plan_rpc_s_median']} s (median of {args.runs}; reading and "
        f"validating the manifest included), planner alone {figures['planner_alone_s_median']} s,"
        f" peak disk fill {figures['peak_fill']:.1%}, bfd RSS after {figures['bfd_rss_mb_after']}"
        " MiB"
    )
    print(json.dumps(figures))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
