"""How exactly bfd holds its bandwidth cap over a long window.

    python bench/bandwidth_bench.py [--cap 20MB/s] [--seconds 60] [--files 400]

Serves random files from our test origin on 127.0.0.1 (the cap, not the origin, is the
limit), starts bfd with --bandwidth CAP, and samples the job's bytes_done once a second.
Reports the rate over the whole window (from the first byte until the window ends) and the
worst 10-second window, each as a deviation from the cap. The issue's target: within
+-5% over 60 s.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import Daemon, make_dataset, manifest_rows, write_manifest
from origin import Origin

from bulkforge.daemon.settings import load_settings
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def main() -> None:
    args = parse_args()
    cap = int(load_settings({"bandwidth": args.cap}).bandwidth)
    # Enough bytes that the job outlasts the window at the cap.
    size = int(cap * args.seconds * 1.3 / args.files)
    dataset = make_dataset(args.files, size, seed=5)
    with tempfile.TemporaryDirectory(prefix="bf-bw-") as tmp:
        root = Path(tmp)
        daemon = Daemon(root / "d", ["--bandwidth", args.cap])
        daemon.root.mkdir()
        with Origin(dataset.files) as origin:
            manifest = write_manifest(root / "m.jsonl", manifest_rows(origin, dataset))
            daemon.start()
            try:
                samples = sample(daemon, manifest, root / "dest", args.seconds)
            finally:
                daemon.stop()
                daemon.cleanup()
    report(args, cap, samples)


def sample(daemon: Daemon, manifest: Path, dest: Path, seconds: float) -> list[tuple]:
    daemon.submit("bw", manifest, dest)
    samples = []
    started = None
    while True:
        job = daemon.stub.Status(pb.JobRef(name="bw"), timeout=10)
        now = time.monotonic()
        if started is None and job.bytes_done > 0:
            started = now
        if started is not None:
            samples.append((now - started, job.bytes_done))
            if now - started >= seconds:
                return samples
        time.sleep(1.0 - (time.monotonic() - now) % 1.0)


def report(args, cap: int, samples: list[tuple]) -> None:
    (t0, b0), (t1, b1) = samples[0], samples[-1]
    overall = (b1 - b0) / (t1 - t0)
    windows = [
        (later[1] - earlier[1]) / (later[0] - earlier[0])
        for earlier, later in zip(samples, samples[10:], strict=False)
    ]
    worst = max(windows, key=lambda rate: abs(rate - cap)) if windows else overall
    result = {
        "cap_bytes_per_s": cap,
        "window_s": round(t1 - t0, 1),
        "overall_bytes_per_s": round(overall),
        "overall_deviation_pct": round((overall / cap - 1) * 100, 2),
        "worst_10s_deviation_pct": round((worst / cap - 1) * 100, 2),
        "machine": f"{os.cpu_count()} cores",
    }
    print(f"cap {args.cap}: {overall / 1e6:.2f} MB/s over {t1 - t0:.1f} s "
          f"({result['overall_deviation_pct']:+.2f}%), worst 10 s window "
          f"{result['worst_10s_deviation_pct']:+.2f}%")  # fmt: skip
    print(json.dumps(result))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", default="20MB/s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--files", type=int, default=400)
    return parser.parse_args()


if __name__ == "__main__":
    main()
