"""Download throughput: bulkforge vs aria2c (and curl --parallel) on the same files, same run.

    python bench/download_bench.py [--files 2000] [--size 262144] [--runs 3] [--connections 16]

nginx (Debian package nginx or nginx-light) serves N random files on 127.0.0.1; each tool
fetches all of them into an empty directory. bulkforge verifies sha256 and fsyncs every file
and its directory before committing it; aria2c is given the same sha256 per file
(checksum=sha-256=...) but does not fsync; curl verifies and fsyncs nothing. Time for
bulkforge runs from Submit until the job is completed (the daemon is already up, as on a node).
Prints a table and one JSON line; --record appends the result to bench/RESULTS.md.
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import psutil

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

NGINX_CONF = """
worker_processes 2;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 60;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_files(www: Path, count: int, size: int) -> list[dict]:
    rows = []
    for index in range(count):
        name = f"d{index % 20:02d}/f{index:06d}.bin"
        data = os.urandom(size)
        (www / name).parent.mkdir(parents=True, exist_ok=True)
        (www / name).write_bytes(data)
        rows.append({"path": name, "size": size, "sha256": hashlib.sha256(data).hexdigest()})
    return rows


def start_nginx(root: Path) -> tuple[subprocess.Popen, str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("nginx is not installed: apt-get install -y nginx-light")
    port = free_port()
    (root / "tmp").mkdir(exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=root, port=port))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root)])
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, base
        time.sleep(0.05)
    proc.kill()
    sys.exit("nginx did not start; see nginx-error.log")


def run_aria2c(work: Path, base: str, rows: list[dict], connections: int) -> float:
    out = fresh(work / "out-aria2c")
    listing = work / "aria2c.txt"
    listing.write_text(
        "".join(
            f"{base}/{row['path']}\n  out={row['path']}\n  checksum=sha-256={row['sha256']}\n"
            for row in rows
        )
    )
    started = time.perf_counter()
    subprocess.run(
        [
            "aria2c",
            f"--input-file={listing}",
            f"--dir={out}",
            f"-j{connections}",
            "-x1",
            "--file-allocation=none",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--quiet=true",
        ],
        check=True,
    )
    return time.perf_counter() - started


def run_curl(work: Path, base: str, rows: list[dict], connections: int) -> float:
    out = fresh(work / "out-curl")
    config = work / "curl.cfg"
    config.write_text(
        "".join(f'url = "{base}/{row["path"]}"\noutput = "{out}/{row["path"]}"\n' for row in rows)
    )
    started = time.perf_counter()
    subprocess.run(
        [
            "curl",
            "--parallel",
            "--parallel-max",
            str(connections),
            "--create-dirs",
            "--silent",
            "--no-progress-meter",
            "--fail",
            "--config",
            str(config),
        ],
        check=True,
    )
    return time.perf_counter() - started


class Bfd:
    def __init__(self, work: Path, connections: int):
        self.state = fresh(work / "bfd-state")
        self.socket = Path(tempfile.mkdtemp(prefix="bfb-")) / "bfd.sock"
        self.log = (work / "bfd.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bulkforge.daemon",
                "--state-dir",
                str(self.state),
                "--socket",
                str(self.socket),
                "--max-connections",
                str(connections),
                "--log-level",
                "WARNING",
            ],
            stderr=self.log,
        )
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.stub = pb_grpc.BulkforgeStub(self.channel)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.peak_rss = 0
        self.peak_wal = 0

    def download(self, name: str, manifest: Path, dest: Path) -> float:
        started = time.perf_counter()
        self.stub.Submit(
            pb.SubmitRequest(
                name=name, download=pb.DownloadSpec(manifest=str(manifest), dest=str(dest))
            ),
            timeout=120,
        )
        process = psutil.Process(self.proc.pid)
        while True:
            job = self.stub.Status(pb.JobRef(name=name), timeout=30)
            self.peak_rss = max(self.peak_rss, process.memory_info().rss)
            system = self.stub.System(pb.SystemRequest(), timeout=30)
            self.peak_wal = max(self.peak_wal, system.wal_bytes)
            if job.state in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        if job.state != "completed":
            failures = self.stub.Failures(pb.FailuresRequest(name=name), timeout=30)
            groups = [(g.step, g.error_class, g.count, g.sample) for g in failures.groups]
            sys.exit(f"bulkforge job ended {job.state}: {dict(job.counts)}; failures: {groups}")
        return elapsed

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def check_tree(out: Path, rows: list[dict]) -> None:
    for row in rows[:: max(1, len(rows) // 50)]:
        data = (out / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], row["path"]


def main() -> None:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bulkforge-bench-"))
    # nginx's workers drop to www-data when started as root: they must be able to read.
    work.chmod(0o755)
    www = fresh(work / "www")
    print(f"generating {args.files} x {args.size} B files in {www} ...", flush=True)
    rows = make_files(www, args.files, args.size)
    nginx, base = start_nginx(work)
    manifest = work / "manifest.jsonl"
    manifest.write_text(
        "".join(json.dumps({"url": f"{base}/{row['path']}", **row}) + "\n" for row in rows)
    )
    bfd = Bfd(work, args.connections)
    times: dict[str, list[float]] = {"bulkforge": [], "aria2c": [], "curl": []}
    try:
        for run in range(args.runs):
            dest = fresh(work / "out-bulkforge")
            times["bulkforge"].append(bfd.download(f"bench-{run}", manifest, dest))
            check_tree(dest, rows)
            times["aria2c"].append(run_aria2c(work, base, rows, args.connections))
            check_tree(work / "out-aria2c", rows)
            times["curl"].append(run_curl(work, base, rows, args.connections))
            check_tree(work / "out-curl", rows)
            rates = (f"{tool} {args.files / t[-1]:.0f} files/s" for tool, t in times.items())
            print(f"run {run + 1}: " + ", ".join(rates), flush=True)
    finally:
        bfd.stop()
        nginx.terminate()
        nginx.wait()
    report(args, times, bfd.peak_rss, bfd.peak_wal)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def report(args, times: dict[str, list[float]], peak_rss: int, peak_wal: int) -> None:
    rate = {tool: args.files / statistics.median(t) for tool, t in times.items()}
    result = {
        "files": args.files,
        "size": args.size,
        "connections": args.connections,
        "runs": args.runs,
        "files_per_s_median": {tool: round(value, 1) for tool, value in rate.items()},
        "files_per_s_all": {
            tool: [round(args.files / t, 1) for t in values] for tool, values in times.items()
        },
        "ratio_vs_aria2c": round(rate["bulkforge"] / rate["aria2c"], 2),
        "ratio_vs_curl": round(rate["bulkforge"] / rate["curl"], 2),
        "bfd_peak_rss_mb": round(peak_rss / 2**20, 1),
        "bfd_peak_wal_mb": round(peak_wal / 2**20, 2),
        "machine": machine(),
    }
    print()
    print(f"{'tool':<10} {'files/s (median)':>17} {'MB/s':>8}   all runs")
    for tool, value in rate.items():
        print(
            f"{tool:<10} {value:>17.0f} {value * args.size / 1e6:>8.1f}   "
            f"{result['files_per_s_all'][tool]}"
        )
    print(f"bulkforge / aria2c = {result['ratio_vs_aria2c']}")
    print(f"bulkforge / curl   = {result['ratio_vs_curl']}")
    print(json.dumps(result))
    if args.record:
        record(args, result)


def machine() -> str:
    return (
        f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def record(args, result: dict) -> None:
    path = Path(__file__).with_name("RESULTS.md")
    command = "python bench/download_bench.py " + " ".join(sys.argv[1:])
    lines = [
        f"\n## Downloads: {args.files} x {args.size // 1024} KiB from nginx on loopback "
        f"({time.strftime('%Y-%m-%d')})\n",
        f"Machine: {result['machine']}. Command: `{command}`.\n",
        "| tool | files/s (median) | all runs |",
        "|---|---|---|",
        *(
            f"| {tool} | {value:.0f} | {result['files_per_s_all'][tool]} |"
            for tool, value in result["files_per_s_median"].items()
        ),
        "",
        f"bulkforge / aria2c = **{result['ratio_vs_aria2c']}**, bulkforge / curl = "
        f"**{result['ratio_vs_curl']}**; bfd peak RSS {result['bfd_peak_rss_mb']} MB, "
        f"peak WAL {result['bfd_peak_wal_mb']} MB. "
        "bulkforge verifies sha256 and fsyncs each file and its directory before committing; "
        "aria2c verifies sha256 without fsync; curl does neither.\n",
    ]
    with path.open("a") as handle:
        handle.write("\n".join(lines))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256 * 1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--work", help="working directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    return parser.parse_args()


if __name__ == "__main__":
    main()
