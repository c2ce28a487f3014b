"""Download throughput: bulkforge vs aria2c and curl on the same files, in the same run.

    python bench/download_bench.py [--scenario many|large|all] [--runs 3] [--connections 16]
                                   [--files 2000] [--size 256KiB] [--large-size 4GiB]
                                   [--work D] [--keep] [--record]

nginx (Debian package nginx or nginx-light) serves random files on 127.0.0.1; each tool
fetches them into an empty directory, which is checked (every size, a sample of sha256) and
deleted before the next tool starts. Dirty pages are flushed (sync) before every timed fetch,
so no tool pays for the previous one's writeback. bfd is started once per scenario with a fresh
state dir and gets a new job per run, timed from Submit until the job is completed (the daemon
is already up, as on a node); its peak RSS (with any child processes) and WAL are sampled.

- many: --files x --size files (default 2,000 x 256 KiB; the issue's figure is 20,000 x 64 KiB),
  sha256 for each in the manifest. bulkforge verifies sha256 and fsyncs every file and its
  directory before committing it; aria2c -j N gets the same sha256 per file (checksum=) but
  does not fsync; curl --parallel --parallel-max N (config file) verifies and fsyncs nothing.
  Reports files/s.
- large: one file of --large-size bytes (default 4 GiB), manifest with sha256 and size.
  bulkforge vs `curl -o FILE URL` (no verification); aria2c -x16 -s16 -k1M (parallel ranges,
  given the sha256) for reference. Reports MB/s (MB = 10^6 bytes). Needs free disk for twice
  the file (the source and one copy at a time).

Generated files live under WORK/www/<scenario-params>/ with a rows.json; with --work D they are
kept and reused by the next invocation with the same parameters. Prints a table and one JSON
line per scenario; --record appends a section per scenario to bench/RESULTS.md.
"""

import argparse
import hashlib
import itertools
import json
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil
from common import filesystem
from pydantic import TypeAdapter

from bulkforge.daemon.settings import Size
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc

MB = 1_000_000
BLOCK = 16 * 2**20  # the large file is generated and checked in blocks of this size
MANY_DIRS = 20
CHECK_SAMPLE = 50  # files whose sha256 is checked after each fetch (all sizes are)
POLL_S = 0.02
DROP_CACHES = False  # set by --drop-caches

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

ARIA2C_COMMON = [
    "--file-allocation=none",
    "--allow-overwrite=true",
    "--auto-file-renaming=false",
    "--console-log-level=warn",
    "--summary-interval=0",
    "--quiet=true",
]
CURL_COMMON = ["--silent", "--no-progress-meter", "--show-error", "--fail", "--create-dirs"]


@dataclass
class Scenario:
    """What one scenario fetches, how the peers fetch it, and how its results are read."""

    name: str
    title: str  # heading of its RESULTS.md section
    rows: list[dict]  # url, path, size, sha256: the manifest
    unit: str  # "files/s" or "MB/s"
    amount: float  # files or MB per run, in that unit's numerator
    peers: dict[str, list[str]]  # tool -> command that fetches everything into WORK/out-tool
    targets: dict[str, float]  # tool -> the bulkforge/tool target
    note: str  # what each tool verifies and fsyncs
    params: dict  # scenario parameters for the JSON line

    @property
    def key(self) -> str:
        """Prefix of the JSON keys holding rates: files_per_s or mb_per_s."""
        return {"files/s": "files_per_s", "MB/s": "mb_per_s"}[self.unit]


# ---------------------------------------------------------------- files and origin


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def size_label(size: int) -> str:
    """4294967296 -> '4 GiB', 65536 -> '64 KiB', 1000 -> '1000 B'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def sources(args, www: Path) -> dict[str, tuple[Path, int]]:
    """Scenario -> (directory of its generated files, their total bytes)."""
    return {
        "many": (www / f"many-{args.files}x{args.size}", args.files * args.size),
        "large": (www / f"large-{args.large_size}", args.large_size),
    }


def room_problem(work: Path, planned: list[tuple[Path, int]]) -> str | None:
    """Why the disk cannot hold the sources still to generate plus one fetched copy, if so.

    Sources stay for the whole run; a tool's copy is deleted before the next tool starts.
    """
    to_generate = sum(size for source, size in planned if not (source / "rows.json").exists())
    needed = to_generate + max(size for _, size in planned)
    free = shutil.disk_usage(work).free
    if free >= needed:
        return None
    return (
        f"not enough disk space in {work}: this run needs {needed / 2**30:.1f} GiB "
        f"({to_generate / 2**30:.1f} GiB of files to generate plus one tool's copy of the "
        f"largest at a time), {free / 2**30:.1f} GiB is free. Use --work on a bigger "
        "filesystem, or a smaller --large-size / --files."
    )


def generated(source: Path, make: Callable[[Path], list[dict]]) -> list[dict]:
    """Rows of the files under source, made by make() unless an earlier run left them."""
    index = source / "rows.json"
    if index.exists():
        print(f"reusing the files in {source}", flush=True)
        return json.loads(index.read_text())
    print(f"generating files in {source} ...", flush=True)
    started = time.perf_counter()
    rows = make(fresh(source))
    index.write_text(json.dumps(rows))  # written last: its presence means the files are whole
    print(f"  done in {time.perf_counter() - started:.1f} s", flush=True)
    return rows


def make_many(source: Path, count: int, size: int) -> list[dict]:
    for index in range(MANY_DIRS):
        (source / f"d{index:02d}").mkdir()
    rows = []
    for index in range(count):
        path = f"d{index % MANY_DIRS:02d}/f{index:06d}.bin"
        data = os.urandom(size)
        (source / path).write_bytes(data)
        rows.append({"path": path, "size": size, "sha256": hashlib.sha256(data).hexdigest()})
    return rows


def make_large(source: Path, size: int) -> list[dict]:
    """One file of random bytes, streamed and hashed in blocks so memory stays small."""
    hasher = hashlib.sha256()
    with (source / "large.bin").open("wb") as sink:
        remaining = size
        while remaining:
            block = os.urandom(min(BLOCK, remaining))
            hasher.update(block)
            sink.write(block)
            remaining -= len(block)
    return [{"path": "large.bin", "size": size, "sha256": hasher.hexdigest()}]


def with_urls(rows: list[dict], base: str, source: Path) -> list[dict]:
    """nginx serves WORK/www, the parent of every source directory."""
    prefix = f"{base}/{source.name}"
    return [{"url": f"{prefix}/{row['path']}", **row} for row in rows]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def nginx(work: Path) -> Iterator[str]:
    """nginx serving WORK/www on a free loopback port; yields its base URL."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(binary):
        sys.exit("nginx is not installed: apt-get install -y nginx-light")
    port = free_port()
    (work / "tmp").mkdir(exist_ok=True)
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(root=work, port=port))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(work)])
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit("nginx did not start; see nginx-error.log in the working directory")


# ---------------------------------------------------------------- scenarios


def many_scenario(args, work: Path, source: Path, base: str) -> Scenario:
    rows = generated(source, lambda root: make_many(root, args.files, args.size))
    rows = with_urls(rows, base, source)
    n = args.connections
    return Scenario(
        name="many",
        title=f"{args.files} x {size_label(args.size)}",
        rows=rows,
        unit="files/s",
        amount=len(rows),
        peers={
            "aria2c": aria2c(work, "many", rows, [f"-j{n}", "-x1"]),
            "curl": curl_parallel(work, rows, n),
        },
        targets={"aria2c": 2.0, "curl": 0.5},
        note=f"bulkforge verifies sha256 and fsyncs each file and its directory before "
        f"committing; aria2c -j{n} verifies sha256 without fsync; curl --parallel does neither.",
        params={"files": args.files, "size": args.size},
    )


def large_scenario(args, work: Path, source: Path, base: str) -> Scenario:
    rows = generated(source, lambda root: make_large(root, args.large_size))
    rows = with_urls(rows, base, source)
    (row,) = rows
    return Scenario(
        name="large",
        title=f"one {size_label(args.large_size)} file",
        rows=rows,
        unit="MB/s",
        amount=args.large_size / MB,
        peers={
            "curl": ["curl", *CURL_COMMON, "-o", str(work / "out-curl" / row["path"]), row["url"]],
            "aria2c": aria2c(work, "large", rows, ["-x16", "-s16", "-k1M"]),
        },
        targets={"curl": 0.9},
        note="bulkforge verifies sha256 and fsyncs before committing; curl -o does neither; "
        "aria2c -x16 -s16 -k1M (reference) fetches parallel ranges and verifies sha256 after "
        "the transfer, without fsync. MB = 10^6 bytes.",
        params={"size": args.large_size},
    )


SCENARIOS = {"many": many_scenario, "large": large_scenario}


def aria2c(work: Path, name: str, rows: list[dict], options: list[str]) -> list[str]:
    """aria2c fetching rows (each with its sha256) into WORK/out-aria2c from an input file."""
    listing = work / f"aria2c-{name}.txt"
    listing.write_text(
        "".join(
            f"{row['url']}\n  out={row['path']}\n  checksum=sha-256={row['sha256']}\n"
            for row in rows
        )
    )
    out = work / "out-aria2c"
    return ["aria2c", f"--input-file={listing}", f"--dir={out}", *options, *ARIA2C_COMMON]


def curl_parallel(work: Path, rows: list[dict], connections: int) -> list[str]:
    """curl --parallel fetching rows into WORK/out-curl from a config file."""
    config = work / "curl-many.cfg"
    out = work / "out-curl"
    config.write_text(
        "".join(f'url = "{row["url"]}"\noutput = "{out / row["path"]}"\n' for row in rows)
    )
    parallel = ["--parallel", "--parallel-max", str(connections)]
    return ["curl", *parallel, *CURL_COMMON, "--config", str(config)]


# ---------------------------------------------------------------- the daemon


class Bfd:
    """One bfd with a fresh state dir; samples its peak RSS (with children) and WAL size."""

    def __init__(self, work: Path, name: str, connections: int, extra: dict | None = None):
        self.state = fresh(work / f"bfd-state-{name}")
        self.socket_dir = Path(tempfile.mkdtemp(prefix="bfb-"))  # short: unix socket path limit
        self.log = (work / f"bfd-{name}.log").open("w")
        flags = {
            "--state-dir": self.state,
            "--socket": self.socket_dir / "bfd.sock",
            "--log-level": "WARNING",
            "--max-connections": connections,
            "--per-host-connections": connections,
            **(extra or {}),
        }
        command = [sys.executable, "-m", "bulkforge.daemon"]
        for flag, value in flags.items():
            command += [flag, str(value)]
        self.proc = subprocess.Popen(command, stderr=self.log)
        self.process = psutil.Process(self.proc.pid)
        print(f"bfd pid {self.proc.pid} (for py-spy), log {self.log.name}", flush=True)
        self.channel = grpc.insecure_channel(f"unix:{self.socket_dir / 'bfd.sock'}")
        self.stub = pb_grpc.BulkforgeStub(self.channel)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.peak_rss = 0
        self.peak_wal = 0
        # Seconds each Submit took (listing and registering the manifest), part of its time.
        self.submit_s: list[float] = []

    def download(self, name: str, manifest: Path, dest: Path) -> None:
        spec = pb.DownloadSpec(manifest=str(manifest), dest=str(dest))
        self.run_job(pb.SubmitRequest(name=name, download=spec))

    def run_job(self, request: pb.SubmitRequest) -> pb.Job:
        """Submit a job and wait for it to end; exit with its failures unless completed."""
        name = request.name
        started = time.perf_counter()
        self.stub.Submit(request, timeout=120)
        self.submit_s.append(time.perf_counter() - started)
        while True:
            job = self.stub.Status(pb.JobRef(name=name), timeout=30)
            self.sample()
            if job.state in ("completed", "failed", "cancelled"):
                break
            time.sleep(POLL_S)
        if job.state != "completed":
            failures = self.stub.Failures(pb.FailuresRequest(name=name), timeout=30)
            groups = [(g.step, g.error_class, g.count, g.sample) for g in failures.groups]
            sys.exit(f"bulkforge job ended {job.state}: {dict(job.counts)}; failures: {groups}")
        return job

    def sample(self) -> None:
        """Read from outside (psutil, stat) so sampling adds no work to the daemon."""
        rss = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            with suppress(psutil.NoSuchProcess):  # a worker may exit between the two calls
                rss += child.memory_info().rss
        self.peak_rss = max(self.peak_rss, rss)
        try:
            wal = (self.state / "bulkforge.db-wal").stat().st_size
        except FileNotFoundError:
            wal = 0
        self.peak_wal = max(self.peak_wal, wal)

    def stop(self) -> None:
        self.channel.close()
        self.proc.terminate()
        self.proc.wait(60)
        self.log.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)


# ---------------------------------------------------------------- running


def run_scenario(args, work: Path, scenario: Scenario) -> dict:
    manifest = work / f"manifest-{scenario.name}.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in scenario.rows))
    bfd = Bfd(work, scenario.name, args.connections)
    fetches = {t: f for t, f in fetchers(bfd, manifest, scenario).items() if t in args.tools}
    times: dict[str, list[float]] = {tool: [] for tool in fetches}
    try:
        for run in range(args.runs):
            for tool, fetch in fetches.items():
                times[tool].append(timed_fetch(work / f"out-{tool}", scenario.rows, fetch))
            rates = (
                f"{tool} {scenario.amount / t[-1]:,.0f} {scenario.unit}"
                for tool, t in times.items()
            )
            print(f"{scenario.name} run {run + 1}: " + ", ".join(rates), flush=True)
    finally:
        bfd.stop()
    return summarize(args, work, scenario, times, bfd)


def fetchers(bfd: Bfd, manifest: Path, scenario: Scenario) -> dict[str, Callable[[Path], object]]:
    """Tool -> a function fetching everything into the given directory; bulkforge first."""
    jobs = itertools.count()

    def bulkforge(out: Path) -> None:
        bfd.download(f"bench-{scenario.name}-{next(jobs)}", manifest, out)

    def peer(command: list[str]) -> Callable[[Path], object]:
        return lambda out: subprocess.run(command, check=True)

    return {"bulkforge": bulkforge, **{t: peer(c) for t, c in scenario.peers.items()}}


def timed_fetch(out: Path, rows: list[dict], fetch: Callable[[Path], object]) -> float:
    """Seconds fetch(out) takes into an empty out; the result is checked, then deleted."""
    fresh(out)
    os.sync()
    if DROP_CACHES:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    started = time.perf_counter()
    fetch(out)
    elapsed = time.perf_counter() - started
    check_tree(out, rows)
    shutil.rmtree(out)
    return elapsed


def check_tree(out: Path, rows: list[dict]) -> None:
    for row in rows:
        size = (out / row["path"]).stat().st_size
        if size != row["size"]:
            sys.exit(f"{out / row['path']}: {size} bytes, expected {row['size']}")
    for row in rows[:: max(1, len(rows) // CHECK_SAMPLE)]:
        with (out / row["path"]).open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != row["sha256"]:
            sys.exit(f"{out / row['path']}: sha256 {digest}, expected {row['sha256']}")


# ---------------------------------------------------------------- reporting


def summarize(
    args, work: Path, scenario: Scenario, times: dict[str, list[float]], bfd: Bfd
) -> dict:
    key = scenario.key
    rate = {tool: scenario.amount / statistics.median(t) for tool, t in times.items()}
    return {
        "scenario": scenario.name,
        **scenario.params,
        "connections": args.connections,
        "runs": args.runs,
        f"{key}_median": {tool: round(value, 1) for tool, value in rate.items()},
        f"{key}_all": {
            tool: [round(scenario.amount / t, 1) for t in values] for tool, values in times.items()
        },
        "seconds_median": {tool: round(statistics.median(t), 3) for tool, t in times.items()},
        **{
            f"ratio_vs_{tool}": round(rate["bulkforge"] / rate[tool], 2)
            for tool in scenario.peers
            if tool in rate and "bulkforge" in rate
        },
        "targets": scenario.targets,
        "bfd_peak_rss_mb": round(bfd.peak_rss / 2**20, 1),
        "bfd_peak_wal_mb": round(bfd.peak_wal / 2**20, 2),
        "bfd_submit_s": [round(t, 2) for t in bfd.submit_s],
        "machine": machine(work),
    }


def ratio_text(scenario: Scenario, result: dict, bold: str = "") -> list[str]:
    """'bulkforge / aria2c = 0.81 (target >= 1.5: 46% short)', one per peer."""
    parts = []
    for tool in scenario.peers:
        ratio = result.get(f"ratio_vs_{tool}")
        if ratio is None:
            continue  # not run (--tools)
        text = f"bulkforge / {tool} = {bold}{ratio}{bold}"
        if tool in scenario.targets:
            target = scenario.targets[tool]
            verdict = "met" if ratio >= target else f"{(1 - ratio / target):.0%} short"
            text += f" (target >= {target}: {verdict})"
        parts.append(text)
    return parts


def table_rows(scenario: Scenario, result: dict) -> list[tuple[str, str, str, str]]:
    key = scenario.key
    return [
        (
            tool,
            f"{rate:,.0f}",
            f"{result['seconds_median'][tool]:.2f}",
            str(result[f"{key}_all"][tool]),
        )
        for tool, rate in result[f"{key}_median"].items()
    ]


def report(scenario: Scenario, result: dict) -> None:
    headers = ("tool", f"{scenario.unit} (median)", "s (median)", f"all runs ({scenario.unit})")
    print(f"\n{scenario.name}: {scenario.title}")
    print(f"{headers[0]:<10} {headers[1]:>16} {headers[2]:>10}   {headers[3]}")
    for tool, rate, seconds, runs in table_rows(scenario, result):
        print(f"{tool:<10} {rate:>16} {seconds:>10}   {runs}")
    for line in ratio_text(scenario, result):
        print(line)
    print(f"bfd peak RSS {result['bfd_peak_rss_mb']} MB, peak WAL {result['bfd_peak_wal_mb']} MB")
    print(f"bfd Submit (listing and registering) took {result['bfd_submit_s']} s")
    print(json.dumps(result))


def record(scenario: Scenario, result: dict) -> None:
    command = shlex.join(["python", "bench/download_bench.py", *sys.argv[1:]])
    headers = ("tool", f"{scenario.unit} (median)", "s (median)", "all runs")
    lines = [
        f"\n## Downloads: {scenario.title} from nginx on loopback ({time.strftime('%Y-%m-%d')})\n",
        f"Machine: {result['machine']}. Command: `{command}`.\n",
        "| " + " | ".join(headers) + " |",
        "|" + "---|" * len(headers),
        *("| " + " | ".join(row) + " |" for row in table_rows(scenario, result)),
        "",
        ", ".join(ratio_text(scenario, result, bold="**"))
        + f"; bfd peak RSS {result['bfd_peak_rss_mb']} MB (with children), "
        f"peak WAL {result['bfd_peak_wal_mb']} MB. {scenario.note}\n",
    ]
    with Path(__file__).with_name("RESULTS.md").open("a") as handle:
        handle.write("\n".join(lines))


def machine(work: Path) -> str:
    disk = filesystem(work)
    return (
        f"{platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total // 2**30} GiB, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}, {disk['fstype']} on {disk['device']}"
    )


def record_section(heading: str, work: Path, text: str, details: str = "") -> None:
    """Append a results section to bench/RESULTS.md: the machine, this command, the text."""
    command = " ".join([f"python bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    section = (
        f"\n## {heading}\n\nMachine: {machine(work)}. Command: `{command}`.{details}\n\n{text}\n"
    )
    with Path(__file__).with_name("RESULTS.md").open("a") as results:
        results.write(section)


# ---------------------------------------------------------------- main


def main() -> None:
    global DROP_CACHES
    args = parse_args()
    DROP_CACHES = args.drop_caches
    work = Path(args.work or tempfile.mkdtemp(prefix="bulkforge-bench-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # nginx's workers drop to www-data when started as root: they must be able to read.
    work.chmod(0o755)
    (work / "www").mkdir(exist_ok=True)
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    planned = sources(args, work / "www")
    if problem := room_problem(work, [planned[name] for name in names]):
        if not args.work:
            shutil.rmtree(work)
        sys.exit(problem)
    try:
        with nginx(work) as base:
            for name in names:
                scenario = SCENARIOS[name](args, work, planned[name][0], base)
                result = run_scenario(args, work, scenario)
                report(scenario, result)
                if args.record:
                    record(scenario, result)
    except BaseException:
        print(f"working directory kept for its logs: {work}", file=sys.stderr)
        raise
    if not (args.keep or args.work):
        shutil.rmtree(work, ignore_errors=True)


def size_arg(text: str) -> int:
    """Bytes, as bfd reads sizes: 65536, 64KiB, 4GiB (binary), 4GB (decimal)."""
    try:
        size = int(TypeAdapter(Size).validate_python(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64KiB, 4GiB)") from exc
    return positive(str(size))


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=["many", "large", "all"], default="all")
    parser.add_argument("--runs", type=positive, default=3)
    parser.add_argument("--connections", type=positive, default=16, help="bfd, aria2c -j, curl")
    parser.add_argument("--files", type=positive, default=2000, help="many: number of files")
    parser.add_argument(
        "--size", type=size_arg, default=256 * 1024, help="many: bytes per file (e.g. 64KiB)"
    )
    parser.add_argument(
        "--large-size", type=size_arg, default=4 * 2**30, help="large: bytes (e.g. 4GiB, 64MiB)"
    )
    parser.add_argument(
        "--work",
        help="working directory, kept with its generated files for reuse (default: "
        "a new temp dir, deleted at the end unless --keep)",
    )
    parser.add_argument(
        "--tools",
        type=lambda value: value.split(","),
        default=["bulkforge", "aria2c", "curl"],
        help="comma-separated subset of bulkforge,aria2c,curl to run (default all)",
    )
    parser.add_argument(
        "--drop-caches",
        action="store_true",
        help="drop the page cache before every timed fetch (root): each tool starts alike",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    return parser.parse_args()


if __name__ == "__main__":
    main()
