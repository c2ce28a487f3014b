"""Listing sources end to end: bfctl submit --s3 / --hf through the real daemon."""

import hashlib
import uuid
from pathlib import Path

import pytest
from conftest import (
    AWS_ENV,
    FAST_RETRIES,
    Daemon,
    admin_client,
    public_bucket,
    sha256sum_line,
)
from hf_server import HubFile, HubServer


@pytest.fixture
def aws_daemon(make_daemon) -> Daemon:
    daemon = make_daemon(*FAST_RETRIES, "--max-attempts", "2")
    daemon.start(env=AWS_ENV)
    yield daemon
    assert daemon.stop() == 0, daemon.log_tail()


def test_s3_listing_with_binance_checksums(aws_daemon: Daemon, moto_endpoint: str, tmp_path):
    prefix = "data/spot/daily/klines/BTCUSDT/1m"
    good, bad = b"zip-bytes-of-day-1" * 100, b"zip-bytes-of-day-2" * 100
    objects = {
        f"{prefix}/BTCUSDT-1m-2024-01-01.zip": good,
        f"{prefix}/BTCUSDT-1m-2024-01-01.zip.CHECKSUM": sha256sum_line(
            good, "BTCUSDT-1m-2024-01-01.zip"
        ),
        f"{prefix}/BTCUSDT-1m-2024-01-02.zip": bad,
        # The sidecar says another content: the zip must fail verification, not land.
        f"{prefix}/BTCUSDT-1m-2024-01-02.zip.CHECKSUM": sha256sum_line(
            b"other", "BTCUSDT-1m-2024-01-02.zip"
        ),
        f"{prefix}/nested/readme.txt": b"hello",
    }
    bucket = public_bucket(moto_endpoint, objects)
    dest = tmp_path / "mirror"
    submitted = aws_daemon.bfctl(
        "submit", "download", "binance", "--s3", f"{moto_endpoint}/{bucket}/{prefix}",
        "--dest", str(dest),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = aws_daemon.wait_state("binance", {"completed", "failed"})
    assert dict(job.counts) == {"done": 4, "failed": 1}
    assert (dest / "BTCUSDT-1m-2024-01-01.zip").read_bytes() == good
    assert (dest / "BTCUSDT-1m-2024-01-01.zip.CHECKSUM").exists()
    assert (dest / "nested/readme.txt").read_bytes() == b"hello"
    assert not (dest / "BTCUSDT-1m-2024-01-02.zip").exists()
    (failure,) = aws_daemon.bfctl_json("failures", "binance")["failures"]
    assert failure["item"] == "BTCUSDT-1m-2024-01-02.zip"
    assert (failure["step"], failure["error_class"]) == ("verify", "checksum")


def test_s3_listing_past_1000_keys_with_include(aws_daemon: Daemon, moto_endpoint, tmp_path):
    objects = {f"part/{i // 100:02d}/k{i:05d}.bin": f"{i}".encode() for i in range(1050)}
    objects["part/skip.log"] = b"not wanted"
    bucket = public_bucket(moto_endpoint, objects)
    submitted = aws_daemon.bfctl(
        "submit", "download", "big", "--s3", f"{moto_endpoint}/{bucket}/part",
        "--include", "*.bin", "--dest", str(tmp_path / "d"),
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = aws_daemon.wait_state("big", {"completed", "failed"}, timeout=120)
    assert job.state == "completed" and job.items_total == 1050
    assert (tmp_path / "d/10/k01049.bin").read_bytes() == b"1049"
    assert not (tmp_path / "d/skip.log").exists()


def test_s3_key_escaping_the_destination_refuses_the_submit(aws_daemon, moto_endpoint, tmp_path):
    bucket = public_bucket(moto_endpoint, {"p/ok.bin": b"1", "p/../../evil.bin": b"2"})
    refused = aws_daemon.bfctl(
        "submit", "download", "evil", "--s3", f"{moto_endpoint}/{bucket}/p",
        "--dest", str(tmp_path / "d"),
    )  # fmt: skip
    assert refused.returncode == 1
    assert "evil.bin" in refused.stderr and "Traceback" not in refused.stderr
    assert aws_daemon.bfctl_json("list") == {"jobs": []}


def test_hf_repo_pinned_with_lfs_checksums(make_daemon, tmp_path: Path):
    files = {
        "README.md": b"# a dataset\n",
        "data/train-00000.parquet": HubFile(b"P" * 5000, lfs=True),
        "data/test-00000.parquet": HubFile(b"Q" * 3000, lfs=True),
    }
    with HubServer(page_size=2) as hub:
        hub.add_repo("acme/tiny", files)
        daemon = make_daemon(*FAST_RETRIES).start(env={"HF_ENDPOINT": hub.url})
        submitted = daemon.bfctl(
            "submit", "download", "hf", "--hf", "datasets/acme/tiny@main",
            "--dest", str(tmp_path / "hf"),
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        job = daemon.wait_state("hf", {"completed", "failed"})
        assert job.state == "completed", dict(job.counts)
        assert daemon.stop() == 0
    assert (tmp_path / "hf/data/train-00000.parquet").read_bytes() == b"P" * 5000
    assert (tmp_path / "hf/README.md").read_bytes() == b"# a dataset\n"


class _MislabelledLfsFile(HubFile):
    """The tree announces a sha256 the served bytes do not have."""

    @property
    def sha256(self) -> str:
        return "0" * 64


def test_hf_lfs_file_with_a_wrong_sha256_fails_as_checksum(make_daemon, tmp_path: Path):
    with HubServer(redirect_lfs=False) as hub:
        hub.add_repo("acme/broken", {"w.bin": _MislabelledLfsFile(b"W" * 100, lfs=True)})
        daemon = make_daemon(*FAST_RETRIES, "--max-attempts", "2").start(
            env={"HF_ENDPOINT": hub.url}
        )
        daemon.bfctl("submit", "download", "hfbad", "--hf", "datasets/acme/broken",
                     "--dest", str(tmp_path / "hf"))  # fmt: skip
        job = daemon.wait_state("hfbad", {"completed", "failed"})
        (failure,) = daemon.bfctl_json("failures", "hfbad")["failures"]
        assert daemon.stop() == 0
    assert job.state == "failed"
    assert (failure["step"], failure["error_class"]) == ("verify", "checksum")
    assert not (tmp_path / "hf/w.bin").exists()


def test_a_rerun_refetches_a_zip_whose_checksum_changed(aws_daemon, moto_endpoint, tmp_path):
    day1, day2 = b"day one" * 50, b"day two" * 50
    objects = {
        "k/d1.zip": day1,
        "k/d1.zip.CHECKSUM": sha256sum_line(day1, "d1.zip"),
        "k/d2.zip": day2,
        "k/d2.zip.CHECKSUM": sha256sum_line(day2, "d2.zip"),
    }
    bucket = public_bucket(moto_endpoint, objects)
    source = f"{moto_endpoint}/{bucket}/k"
    dest = str(tmp_path / "mirror")
    aws_daemon.bfctl("submit", "download", "day-1", "--s3", source, "--dest", dest)
    assert aws_daemon.wait_state("day-1", {"completed", "failed"}).state == "completed"
    # Upstream republishes d2's sidecar (same sum, binary-mode marker): a new ETag.
    inodes = {name: (tmp_path / "mirror" / name).stat().st_ino for name in ("d1.zip", "d2.zip")}
    rewritten = f"{hashlib.sha256(day2).hexdigest()} *d2.zip\n".encode()
    admin_client(moto_endpoint).put_object(
        Bucket=bucket, Key="k/d2.zip.CHECKSUM", Body=rewritten, ACL="public-read"
    )
    aws_daemon.bfctl("submit", "download", "day-2", "--s3", source, "--dest", dest)
    job = aws_daemon.wait_state("day-2", {"completed", "failed"})
    assert job.state == "completed"
    # d1 and its sidecar unchanged: skipped; d2's sidecar changed: it and its zip fetched.
    assert dict(job.counts) == {"skipped": 2, "done": 2}
    assert (tmp_path / "mirror/d2.zip.CHECKSUM").read_bytes() == rewritten
    # d2.zip was fetched again and renamed into place (a new inode); d1.zip was left alone.
    assert (tmp_path / "mirror/d2.zip").stat().st_ino != inodes["d2.zip"]
    assert (tmp_path / "mirror/d1.zip").stat().st_ino == inodes["d1.zip"]
    assert (tmp_path / "mirror/d2.zip").read_bytes() == day2


def test_a_private_bucket_is_listed_and_fetched_with_bfds_credentials(
    aws_daemon, moto_endpoint, tmp_path
):
    client = admin_client(moto_endpoint)
    bucket = f"private-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="p/secret.bin", Body=b"s" * 1000)
    assert _anonymous_get(f"{moto_endpoint}/{bucket}/p/secret.bin") == 403
    aws_daemon.bfctl(
        "submit", "download", "private", "--s3", f"{moto_endpoint}/{bucket}/p",
        "--dest", str(tmp_path / "d"),
    )  # fmt: skip
    job = aws_daemon.wait_state("private", {"completed", "failed"})
    assert job.state == "completed", aws_daemon.bfctl("failures", "private").stdout
    assert (tmp_path / "d/secret.bin").read_bytes() == b"s" * 1000


def _anonymous_get(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
