"""A Binance zip and its .CHECKSUM are one unit, and a clean --after job follows its download
even after it ended.

Upstream is caught mid-update: a zip already new, its sidecar still old. The zip fails
verification; once the sidecar is fixed upstream, `bfctl retry` fetches the pair anew and
installs the sidecar the zip was verified against, so `sha256sum -c` holds on disk. The
clean job that followed the download had ended; the retry reopens it, and it cleans the
zip the retry brought.
"""

import hashlib
import subprocess
from datetime import date, timedelta
from pathlib import Path

from conftest import AWS_ENV, FAST_RETRIES, admin_client, public_bucket, sha256sum_line, wait_until

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from tests.binance_data import trade_lines, trades, trades_path, write_zip

DAY = date(2024, 3, 1)
ENDED = {"completed", "failed"}


def test_a_retried_zip_brings_its_sidecar_and_the_ended_clean_job_cleans_it(
    make_daemon, moto_endpoint: str, tmp_path: Path
) -> None:
    daemon = make_daemon(*FAST_RETRIES, "--max-attempts", "2").start(env=AWS_ENV)
    objects: dict[str, bytes] = {}
    for n in range(3):
        day = DAY + timedelta(days=n)
        rows = trades(day, 1 + 1000 * n, 100, seed=n)
        local = write_zip(
            tmp_path / "gen", trades_path("um", "BTCUSDT", day), trade_lines(rows, "um")
        )
        key = trades_path("um", "BTCUSDT", day)
        objects[key] = local.read_bytes()
        objects[f"{key}.CHECKSUM"] = sha256sum_line(objects[key], local.name)
    # Mid-update upstream: the last day's zip is new already, its sidecar is the old one's.
    caught = trades_path("um", "BTCUSDT", DAY + timedelta(days=2))
    name = Path(caught).name
    objects[f"{caught}.CHECKSUM"] = sha256sum_line(b"the zip as it was before", name)
    bucket = public_bucket(moto_endpoint, objects)
    mirror, dest = tmp_path / "mirror", tmp_path / "out"
    submitted = daemon.bfctl(
        "submit", "download", "mirror", "--s3", f"{moto_endpoint}/{bucket}/data",
        "--dest", str(mirror),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    cleaning = daemon.bfctl("submit", "clean", "cleaned", "--after", "mirror", "--dest", str(dest))
    assert cleaning.returncode == 0, cleaning.stderr
    assert daemon.wait_state("mirror", ENDED, timeout=120).state == "failed"
    job = daemon.wait_state("cleaned", ENDED, timeout=120)
    assert job.state == "completed" and dict(job.counts) == {"done": 2}, daemon.log_tail()
    failed = daemon.bfctl_json("failures", "mirror")["failures"]
    assert [(f["item"], f["step"]) for f in failed] == [(caught.removeprefix("data/"), "verify")]

    # Upstream settles; the retry fetches the pair again and installs both.
    fixed = sha256sum_line(objects[caught], name)
    admin_client(moto_endpoint).put_object(
        Bucket=bucket, Key=f"{caught}.CHECKSUM", Body=fixed, ACL="public-read"
    )
    retried = daemon.bfctl("retry", "mirror")
    assert retried.returncode == 0, retried.stderr
    assert daemon.wait_state("mirror", ENDED, timeout=120).state == "completed"
    zip_on_disk = mirror / caught.removeprefix("data/")
    sidecar = Path(f"{zip_on_disk}.CHECKSUM")
    assert sidecar.read_bytes() == fixed
    checked = subprocess.run(
        ["sha256sum", "-c", sidecar.name], cwd=sidecar.parent, capture_output=True, text=True
    )
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stdout + checked.stderr
    assert hashlib.sha256(zip_on_disk.read_bytes()).hexdigest() == fixed.split()[0].decode()
    # What the store says of the pair is what is on disk: verify finds nothing changed.
    verified = daemon.bfctl("verify", "mirror")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # The clean job had ended: it sees the retry, cleans the zip, and ends again.
    def cleaned_all() -> bool:
        job = daemon.stub.Status(pb.JobRef(name="cleaned"), timeout=10)
        return job.state == "completed" and dict(job.counts) == {"done": 3}

    wait_until(cleaned_all, timeout=120, what="the ended clean job to clean the retried zip")
    assert "download 'mirror' changed after this job ended" in daemon.log.read_text()
    partitions = sorted(p.parent.name for p in dest.glob("market=um/**/data.parquet"))
    assert partitions == [f"date={DAY + timedelta(days=n)}" for n in range(3)]
    assert daemon.stop() == 0, daemon.log_tail()
