"""Scenes: bulkforge's scenes pipeline vs img2dataset on the same JPEGs, in the same run.

    python bench/scenes_bench.py [--items 200000] [--size 20480] [--shard-size 10000]
                                 [--processes 2] [--threads 16] [--runs 1]
                                 [--reencode default|skip|off] [--tools bulkforge,img2dataset]
                                 [--peer-venv D] [--work D] [--drop-caches] [--keep] [--record]

nginx (Debian package nginx or nginx-light) serves --items JPEGs of exactly --size bytes on
127.0.0.1, hard links to a few generated images under distinct names. The input is one Parquet
file with a unique string `key` and a `url` per item. Each tool turns it into webdataset shards
of --shard-size items in an empty directory, timed wall clock from its command's start to its
exit (interpreter start-up and imports included, as an operator pays them); its successes are
counted from the per-shard `*_stats.json` both tools write, then the output is deleted.

img2dataset runs from its own venv (--peer-venv, created and pip-installed on first use)
because it pins its own pyarrow, pandas and opencv; it gets output_format=webdataset,
resize_mode=no, processes_count=--processes, thread_count=--threads, wandb and EXIF
extraction off, sha256 on (bulkforge's shard index records a sha256 per item too).
With resize_mode=no img2dataset still decodes every image and re-encodes it (see PEER_RUN);
--reencode skip (skip_reencode) keeps the bytes but still decodes, --reencode off
(disable_all_reencoding) neither decodes nor re-encodes, which is what bulkforge's
fetch,verify steps do.

Both tools get the same start: nginx keeps connections open (keepalive_requests 100000) and
logs nothing, every run writes back what the previous tool left (sync), --drop-caches (root)
empties the page cache before each tool, so neither finds the JPEGs or the input already in
memory, and the order alternates run by run (run 1 in --tools order, run 2 reversed, ...), so
with --runs 2 each tool goes first once.

Prints a table, the ratio bulkforge / img2dataset and one JSON line; --record appends a
section to bench/RESULTS.md.
"""

import argparse
import json
import math
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from common import REPO, table
from download_bench import Bfd, fresh, machine, nginx, positive, size_arg

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

PEER = "img2dataset"
DEFAULT_PEER_VENV = REPO.parent / ".cache" / "bench-img2dataset"
TOOLS = ("bulkforge", PEER)
SOURCES_MIN = 8  # distinct images behind the links, so not every item is the same bytes
LINKS_PER_SOURCE = 60_000  # ext4 allows 65,000 hard links to one inode
ITEMS_PER_DIR = 1000  # keeps directories small for nginx's lookups and for rmtree
PIXELS_PER_BYTE = 5.4  # the generated images compress to ~0.19 bytes/pixel at q75
SAMPLE_S = 0.5  # CPU and RSS sampling interval of the timed process tree
POLL_S = 0.1  # how often the status of the bulkforge job is read
ENDED = {"completed", "failed", "cancelled"}

# Run by the peer venv's python: the bench's own venv has no image library, and opencv comes
# with img2dataset anyway. Smooth blobs plus mild noise compress like a photo thumbnail (a
# 20 KiB item is ~384x288), so decoding costs what a real item's would; pure noise would
# give a tiny image. Writes, for each seed, the highest quality that leaves 4 bytes for a COM
# segment (the bench pads every image to exactly --size bytes).
PEER_JPEGS = """
import sys, cv2, numpy as np
out, size, width, height, count = sys.argv[1], *map(int, sys.argv[2:])
for seed in range(count):
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    img = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    for quality in range(95, 0, -1):
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
        if len(data) <= size - 4:
            break
    else:
        sys.exit(f"cannot fit a {width}x{height} JPEG in {size} bytes")
    open(f"{out}/src-{seed}.jpg", "wb").write(data)
"""

# img2dataset's download() with keyword arguments from JSON (its fire CLI parses values
# itself). Its Resizer.__call__ (img2dataset/resizer.py, 1.47.0) returns the raw bytes only
# when disable_all_reencoding; otherwise, whatever resize_mode, it runs
#   img = cv2.imdecode(img_buf, cv2.IMREAD_UNCHANGED)
# and with skip_reencode=False (the default) also cv2.imencode at encode_quality: so the items
# must be valid images, or every one fails with "Image decoding error".
PEER_RUN = "import json, sys; from img2dataset import download; download(**json.loads(sys.argv[1]))"

REENCODE = {
    "default": {},  # decode + re-encode (JPEG q95), what resize_mode=no alone does
    "skip": {"skip_reencode": True},  # decode, keep the original bytes when already JPEG
    "off": {"disable_all_reencoding": True},  # no decode: bytes in, bytes out
}


# ---------------------------------------------------------------- inputs


def jpeg_with_size(data: bytes, size: int) -> bytes:
    """data (a JPEG) padded to exactly size bytes by COM segments right after SOI."""
    assert data[:2] == b"\xff\xd8" and len(data) + 4 <= size
    pad = size - len(data)
    segments = []
    while pad:
        # A segment is FF FE + a 2-byte length counting itself, at most 65,535.
        length = min(pad - 2, 65_535)
        if 0 < pad - 2 - length < 4:  # leave room for one more whole segment
            length -= 4
        segments.append(b"\xff\xfe" + length.to_bytes(2, "big") + b"\0" * (length - 2))
        pad -= length + 2
    return data[:2] + b"".join(segments) + data[2:]


def make_sources(python: Path, src: Path, size: int, count: int) -> list[Path]:
    """count distinct valid JPEGs of exactly size bytes in src."""
    width = max(16, round(math.sqrt(size * PIXELS_PER_BYTE * 4 / 3) / 16) * 16)
    height = width * 3 // 4
    command = [python, "-c", PEER_JPEGS, src, size, width, height, count]
    subprocess.run([str(part) for part in command], check=True)
    paths = [src / f"src-{seed}.jpg" for seed in range(count)]
    for path in paths:
        path.write_bytes(jpeg_with_size(path.read_bytes(), size))
    return paths


def item_path(index: int) -> str:
    return f"d{index // ITEMS_PER_DIR:04d}/{index:07d}.jpg"


def make_items(python: Path, source: Path, items: int, size: int) -> None:
    """source/img/<item_path> for every item: hard links, so 200,000 items take seconds."""
    count = max(SOURCES_MIN, math.ceil(items / LINKS_PER_SOURCE))
    sources = make_sources(python, fresh(source / "src"), size, count)
    images = fresh(source / "img")
    for index in range(items):
        path = images / item_path(index)
        if index % ITEMS_PER_DIR == 0:
            path.parent.mkdir()
        os.link(sources[index % count], path)


def make_input(path: Path, base: str, items: int) -> None:
    """The Parquet input: a unique string key and a URL per item, in item order."""
    keys = [f"item{index:07d}" for index in range(items)]
    urls = [f"{base}/img/{item_path(index)}" for index in range(items)]
    pq.write_table(pa.table({"key": keys, "url": urls}), path)


def prepared(args, work: Path, python: Path) -> Path:
    """WORK/www/<items>x<size>, generated unless an earlier --work run left it complete."""
    source = work / "www" / f"scenes-{args.items}x{args.size}"
    done = source / "complete"
    if done.exists():
        print(f"reusing {source}", flush=True)
        return source
    started = time.perf_counter()
    make_items(python, fresh(source), args.items, args.size)
    done.touch()
    print(f"generated {args.items:,} items in {time.perf_counter() - started:.1f} s", flush=True)
    return source


# ---------------------------------------------------------------- timing


class TreeSampler:
    """Peak CPU (100% = one core) and RSS of a process and its descendants, from outside."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds at the last sample
        self.last = time.monotonic()
        self.peak_cpu = 0.0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            with suppress(psutil.NoSuchProcess):
                self._sample()

    def _sample(self) -> None:
        used, rss, seen = 0.0, 0, {}
        for proc in [self.root, *self.root.children(recursive=True)]:
            with suppress(psutil.NoSuchProcess):  # a worker may exit between the calls
                times = proc.cpu_times()
                seen[proc.pid] = times.user + times.system
                # A process not seen last time started since: all its CPU time is new.
                used += seen[proc.pid] - self.cpu.get(proc.pid, 0.0)
                rss += proc.memory_info().rss
        now = time.monotonic()
        self.cpu, self.last, elapsed = seen, now, now - self.last
        self.peak_cpu = max(self.peak_cpu, 100 * used / elapsed)
        self.peak_rss = max(self.peak_rss, rss)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def timed_command(command: list[str], log: Path, env: dict | None = None) -> dict:
    """Run command (output to log) and measure it: wall seconds, CPU, peak RSS of its tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        sampler = TreeSampler(proc.pid)
        code = proc.wait()
        seconds = time.perf_counter() - started
        sampler.stop()
    if code:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        sys.exit(f"{shlex.join(command[:3])}... exited {code}; last lines of {log}:\n{tail}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Every descendant waited for by its parent is in RUSAGE_CHILDREN: the whole tree's CPU.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_cpu_pct": sampler.peak_cpu,
        "peak_rss_mb": sampler.peak_rss / 2**20,
    }


def count_stats(dest: Path) -> dict:
    """Successes and failures from the `*_stats.json` of every shard (both tools write them)."""
    stats = [json.loads(path.read_text()) for path in sorted(dest.glob("*_stats.json"))]
    errors: dict[str, int] = {}
    for shard in stats:
        for error, count in shard.get("status_dict", {}).items():
            if error != "success":
                errors[error] = errors.get(error, 0) + count
    return {
        "shards": len(stats),
        "successes": sum(shard["successes"] for shard in stats),
        "errors": errors,
    }


# ---------------------------------------------------------------- the tools


def run_bulkforge(args, input_parquet: Path, dest: Path) -> dict:
    """bulkforge's scenes pipeline over input_parquet into dest; the same dict as run_peer.

    bfd is started first, with --processes x --threads connections, and is up when the
    clock starts, as on a node; the clock runs from Submit until the job has ended.
    CPU and peak RSS are those of bfd (and any children), read from outside.
    """
    bfd = Bfd(dest.parent, "scenes", args.processes * args.threads)
    try:
        before = _cpu_seconds(bfd.process)
        sampler = TreeSampler(bfd.proc.pid)
        started = time.perf_counter()
        spec = pb.ScenesSpec(
            input=str(input_parquet),
            key="key",
            url="url",
            dest=str(dest),
            shard_size=args.shard_size,
            format="webdataset",
        )
        bfd.stub.Submit(pb.SubmitRequest(name="bench", scenes=spec), timeout=120)
        while (job := bfd.stub.Status(pb.JobRef(name="bench"), timeout=30)).state not in ENDED:
            time.sleep(POLL_S)
        seconds = time.perf_counter() - started
        sampler.stop()
        cpu = _cpu_seconds(bfd.process) - before
    finally:
        bfd.stop()
    if job.state != "completed":
        print(f"bulkforge job ended {job.state}: {dict(job.counts)}", flush=True)
    return {
        "seconds": seconds,
        "cpu_s": cpu,
        "peak_cpu_pct": sampler.peak_cpu,
        "peak_rss_mb": sampler.peak_rss / 2**20,
    } | count_stats(dest)


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def ensure_peer(venv: Path) -> Path:
    """The peer venv's python, creating the venv and installing img2dataset when missing."""
    python = venv / "bin" / "python"
    if python.exists() and _imports(python, PEER):
        return python
    print(f"installing {PEER} into {venv} (its own venv: it pins its own pyarrow)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, PEER], check=True)
    return python


def _imports(python: Path, module: str) -> bool:
    probe = subprocess.run([str(python), "-c", f"import {module}"], capture_output=True)
    return probe.returncode == 0


def peer_version(python: Path) -> str:
    code = f"import importlib.metadata as m; print(m.version({PEER!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


def peer_options(args, input_parquet: Path, dest: Path) -> dict:
    return {
        "url_list": str(input_parquet),
        "input_format": "parquet",
        "url_col": "url",
        # No save_additional_columns=["key"]: img2dataset names samples by shard and row
        # (000010042) and would overwrite a `key` column with that in its metadata.
        "output_folder": str(dest),
        "output_format": "webdataset",
        "resize_mode": "no",
        "processes_count": args.processes,
        "thread_count": args.threads,
        "number_sample_per_shard": args.shard_size,
        "enable_wandb": False,
        "extract_exif": False,  # an extra bulkforge does not do
        "compute_hash": "sha256",
        # dest is empty, so the default "incremental" mode starts from scratch; "overwrite"
        # cannot be used: it deletes the folder after making its _tmp/ in it, and every
        # shard then fails with FileNotFoundError on _tmp/N.feather (1.47.0).
        **REENCODE[args.reencode],
    }


def run_peer(args, python: Path, input_parquet: Path, dest: Path, log: Path) -> dict:
    options = json.dumps(peer_options(args, input_parquet, dest))
    # albumentations (imported by img2dataset) asks PyPI for a newer version in every process
    # it is imported in; the variable turns that check off.
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    command = [str(python), "-c", PEER_RUN, options]
    return timed_command(command, log, env) | count_stats(dest)


# ---------------------------------------------------------------- running


def run_all(args, work: Path, python: Path | None, input_parquet: Path) -> dict[str, list[dict]]:
    """Tool -> one result per run; a tool that is not implemented yet is dropped, saying so."""
    runners: dict[str, Callable[[Path, Path], dict]] = {
        "bulkforge": lambda dest, _log: run_bulkforge(args, input_parquet, dest),
        PEER: lambda dest, log: run_peer(args, python, input_parquet, dest, log),
    }
    results: dict[str, list[dict]] = {tool: [] for tool in args.tools}
    for run in range(args.runs):
        order = list(results) if run % 2 == 0 else list(reversed(results))
        for tool in order:
            if tool not in results:
                continue
            dest = fresh(work / f"out-{tool}")
            os.sync()  # no tool pays for the previous one's writeback
            if args.drop_caches:
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            try:
                result = runners[tool](dest, work / f"{tool}-run{run + 1}.log")
            except NotImplementedError as exc:  # a tool not built yet: the others still run
                print(f"skipping {tool}: not implemented yet ({exc})", flush=True)
                del results[tool]
                continue
            finally:
                shutil.rmtree(dest, ignore_errors=True)
            result["position"] = order.index(tool) + 1
            results[tool].append(result)
            print(f"run {run + 1}: {tool} (#{result['position']}) {line(args, result)}", flush=True)
    return results


def line(args, result: dict) -> str:
    failed = args.items - result["successes"]
    errors = f" {result['errors']}" if result["errors"] else ""
    return (
        f"{args.items / result['seconds']:,.0f} items/s ({result['seconds']:.1f} s), "
        f"{result['successes']:,} ok, {failed:,} failed{errors}, "
        f"peak CPU {result['peak_cpu_pct']:.0f}%, CPU {result['cpu_s']:.0f} s"
    )


# ---------------------------------------------------------------- reporting


def summarize(args, work: Path, results: dict[str, list[dict]], version: str | None) -> dict:
    seconds = {tool: statistics.median(r["seconds"] for r in rs) for tool, rs in results.items()}
    rate = {tool: args.items / value for tool, value in seconds.items()}
    summary = {
        "items": args.items,
        "size": args.size,
        "shard_size": args.shard_size,
        "processes": args.processes,
        "threads": args.threads,
        "reencode": args.reencode,
        "runs": args.runs,
        "drop_caches": args.drop_caches,
        "img2dataset_version": version,
        "items_per_s_median": {tool: round(value, 1) for tool, value in rate.items()},
        "per_run": {tool: [_rounded(r) for r in rs] for tool, rs in results.items()},
        "machine": machine(work),
    }
    if "bulkforge" in rate and PEER in rate:
        summary["ratio_vs_img2dataset"] = round(rate["bulkforge"] / rate[PEER], 2)
    return summary


def _rounded(result: dict) -> dict:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


def table_rows(summary: dict) -> list[tuple]:
    rows = []
    for tool, runs in summary["per_run"].items():
        seconds = statistics.median(r["seconds"] for r in runs)
        rows.append(
            (
                tool,
                f"{summary['items_per_s_median'][tool]:,.0f}",
                f"{seconds:.1f}",
                str([round(summary["items"] / r["seconds"]) for r in runs]),
                f"{min(r['successes'] for r in runs):,} / {summary['items']:,}",
                f"{max(r['peak_cpu_pct'] for r in runs):.0f}%",
                f"{statistics.median(r['cpu_s'] for r in runs):.0f}",
                f"{max(r['peak_rss_mb'] for r in runs):.0f}",
            )
        )
    return rows


HEADERS = (
    "tool",
    "items/s (median)",
    "s (median)",
    "all runs (items/s)",
    "successes (min)",
    "peak CPU",
    "CPU s",
    "peak RSS MB",
)


def note(summary: dict) -> str:
    what = {
        "default": "decodes and re-encodes every image (resize_mode=no)",
        "skip": "decodes every image, keeps its bytes (skip_reencode)",
        "off": "neither decodes nor re-encodes (disable_all_reencoding)",
    }[summary["reencode"]]
    return (
        f"img2dataset {summary['img2dataset_version']} ({summary['processes']} processes x "
        f"{summary['threads']} threads, webdataset, sha256, no EXIF, no wandb) {what}. "
        f"Wall clock of the whole command; peak CPU sampled every {SAMPLE_S} s over the "
        f"process tree (100% = one core); nginx on the same 2 cores is not counted."
    )


def title(summary: dict) -> str:
    return (
        f"{summary['items']:,} x {summary['size']:,} B JPEGs into webdataset shards "
        f"of {summary['shard_size']:,}"
    )


def report(summary: dict) -> None:
    print(f"\n{title(summary)}")
    print(table(HEADERS, table_rows(summary)))
    if "ratio_vs_img2dataset" in summary:
        print(f"bulkforge / img2dataset = {summary['ratio_vs_img2dataset']}")
    print(note(summary))
    print(json.dumps({"bench": "scenes", **summary}))


def record(summary: dict) -> None:
    command = shlex.join(["python", "bench/scenes_bench.py", *sys.argv[1:]])
    ratio = summary.get("ratio_vs_img2dataset")
    lines = [
        f"\n## Scenes: {title(summary)} from nginx on loopback ({time.strftime('%Y-%m-%d')})\n",
        f"Machine: {summary['machine']}. Command: `{command}`.\n",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
        *("| " + " | ".join(row) + " |" for row in table_rows(summary)),
        "",
        (f"bulkforge / img2dataset = **{ratio}**. " if ratio is not None else "") + note(summary),
        "",
    ]
    with Path(__file__).with_name("RESULTS.md").open("a") as handle:
        handle.write("\n".join(lines))


# ---------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bulkforge-scenes-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # nginx's workers drop to an unprivileged user when started as root: they must be able to read.
    work.chmod(0o755)
    # The peer venv also makes the images (opencv), so it is needed even with --tools bulkforge.
    python = ensure_peer(args.peer_venv)
    version = peer_version(python) if PEER in args.tools else None
    try:
        source = prepared(args, work, python)
        with nginx(work) as base:
            input_parquet = work / f"input-{args.items}.parquet"
            make_input(input_parquet, f"{base}/{source.name}", args.items)
            results = run_all(args, work, python, input_parquet)
    except BaseException:
        print(f"working directory kept for its logs: {work}", file=sys.stderr)
        raise
    if results:
        summary = summarize(args, work, results, version)
        report(summary)
        if args.record:
            record(summary)
    if not (args.keep or args.work):
        shutil.rmtree(work, ignore_errors=True)


def tools_arg(text: str) -> list[str]:
    wanted = text.split(",")
    if unknown := [tool for tool in wanted if tool not in TOOLS]:
        raise argparse.ArgumentTypeError(f"unknown tool {', '.join(unknown)}: not in {TOOLS}")
    return [tool for tool in TOOLS if tool in wanted]  # bulkforge first, as in the table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=positive, default=200_000)
    parser.add_argument("--size", type=size_arg, default=20 * 1024, help="bytes per JPEG")
    parser.add_argument("--shard-size", type=positive, default=10_000, help="items per shard")
    parser.add_argument("--processes", type=positive, default=2, help="img2dataset processes")
    parser.add_argument("--threads", type=positive, default=16, help="img2dataset threads each")
    parser.add_argument("--runs", type=positive, default=1)
    parser.add_argument(
        "--reencode",
        choices=list(REENCODE),
        default="default",
        help="img2dataset: default (decode + re-encode), skip (decode only), off (neither)",
    )
    parser.add_argument(
        "--tools",
        type=tools_arg,
        default=list(TOOLS),
        help="comma-separated subset of bulkforge,img2dataset (default both)",
    )
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=DEFAULT_PEER_VENV,
        help=f"img2dataset's own venv, created on first use (default {DEFAULT_PEER_VENV})",
    )
    parser.add_argument(
        "--work",
        help="working directory, kept with its generated items for reuse (default: "
        "a new temp dir, deleted at the end unless --keep)",
    )
    parser.add_argument(
        "--drop-caches", action="store_true", help="(root) empty the page cache before each tool"
    )
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    return parser.parse_args()


if __name__ == "__main__":
    main()
