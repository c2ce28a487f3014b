"""`bfctl verify` checks what bfd saw: the sha256 bfd computed of every file it installed.

Whatever the source said of a file (a sha256, an md5 only, a Binance sidecar, nothing) and
however its bytes came (one stream, or parallel ranges of a large file), the store, the
batch manifest and `verify` carry the sha256 of the bytes bfd wrote. So a flipped byte in
any file is reported changed, even in one whose manifest gave no checksum at all.
"""

import contextlib
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw
import pytest
from conftest import (
    AWS_ENV,
    FAST_RETRIES,
    public_bucket,
    sha256sum_line,
    write_manifest,
)
from hf_server import HubFile, HubServer
from origin import Fault, FaultKind, Origin

MiB = 1024 * 1024
# Files larger than a segment are fetched as parallel ranges.
RANGES = ["--segment-size", "1MiB", "--segments-per-file", "4"]


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Case:
    """How a job gets its files: what the source says of each, and how they are fetched."""

    files: dict[str, bytes]
    # (services, files) -> the submit's arguments naming the source.
    source: Callable[["Services", dict[str, bytes]], list[str]]


class Services:
    """The origins every case may use, for the whole test."""

    def __init__(self, tmp_path: Path, origin: Origin, moto_endpoint: str, hub: HubServer):
        self.tmp_path, self.origin, self.moto, self.hub = tmp_path, origin, moto_endpoint, hub
        self.repos = 0
        self.resumed: list[str] = []


def manifest(checksum: str | None) -> Callable[[Services, dict[str, bytes]], list[str]]:
    def source(services: Services, files: dict[str, bytes]) -> list[str]:
        rows = []
        for name, data in files.items():
            services.origin.set_file(name, data)
            row = {"url": services.origin.url_for(name), "path": name, "size": len(data)}
            if checksum:
                row[checksum] = hashlib.new(checksum, data).hexdigest()
            rows.append(row)
        path = services.tmp_path / f"{len(list(services.tmp_path.iterdir()))}.jsonl"
        return ["--manifest", str(write_manifest(path, rows))]

    return source


def resumed(services: Services, files: dict[str, bytes]) -> list[str]:
    """No checksum, and each file's first answer breaks off mid-body: the retry resumes it
    with a Range request, and the bytes already in the partial are hashed from the disk."""
    args = manifest(None)(services, files)
    for name, data in files.items():
        services.origin.set_fault(name, Fault(FaultKind.RESET, times=1, after_bytes=len(data) // 2))
    services.resumed = list(files)
    return args


def s3(services: Services, files: dict[str, bytes]) -> list[str]:
    bucket = public_bucket(services.moto, {f"p/{name}": data for name, data in files.items()})
    return ["--s3", f"{services.moto}/{bucket}/p"]


def binance(services: Services, files: dict[str, bytes]) -> list[str]:
    objects = {}
    for name, data in files.items():
        objects[f"p/{name}"] = data
        objects[f"p/{name}.CHECKSUM"] = sha256sum_line(data, Path(name).name)
    bucket = public_bucket(services.moto, objects)
    return ["--s3", f"{services.moto}/{bucket}/p"]


def hf(services: Services, files: dict[str, bytes]) -> list[str]:
    services.repos += 1
    repo = f"acme/r{services.repos}"
    tree = {name: HubFile(data, lfs=name.endswith(".lfs")) for name, data in files.items()}
    services.hub.add_repo(repo, tree)
    return ["--hf", f"datasets/{repo}@main"]


SMALL = {f"s/{n}.bin": blob(3000 + n, n) for n in range(3)}
LARGE = {"l/big.bin": blob(2 * MiB + 77, 99), "l/small.bin": blob(5000, 98)}
CASES = {
    "manifest sha256, one stream each": Case(SMALL, manifest("sha256")),
    "manifest md5 only, one stream each": Case(SMALL, manifest("md5")),
    "manifest without checksum, one stream each": Case(SMALL, manifest(None)),
    "manifest without checksum, a large file in ranges": Case(LARGE, manifest(None)),
    "manifest without checksum, resumed after a reset mid-file": Case(
        {f"r/{n}.bin": blob(200_000 + n, 50 + n) for n in range(2)}, resumed
    ),
    "manifest md5 only, a large file in ranges": Case(LARGE, manifest("md5")),
    "manifest sha256, a large file in ranges": Case(LARGE, manifest("sha256")),
    "s3 listing (single-part ETag md5), one in ranges": Case(LARGE, s3),
    "binance zips verified by their sidecars": Case(
        {"BTC-2024-01-01.zip": blob(4000, 1), "BTC-2024-01-02.zip": blob(2 * MiB, 2)}, binance
    ),
    "hugging face: LFS sha256, plain files nothing": Case(
        {"a.lfs": blob(3000, 3), "README.md": b"# readme\n", "big.lfs": blob(2 * MiB, 4)}, hf
    ),
}


@pytest.fixture
def services(tmp_path: Path, moto_endpoint: str):
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    with Origin({}) as origin, HubServer() as hub:
        yield Services(manifests, origin, moto_endpoint, hub)


def installed(dest: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(dest)): p.read_bytes()
        for p in sorted(dest.rglob("*"))
        if p.is_file() and ".bulkforge" not in p.parts
    }


@pytest.mark.parametrize("case", CASES)
def test_verify_reports_a_flipped_byte_in_every_file_however_it_was_installed(
    make_daemon, tmp_path, services, case
):
    spec = CASES[case]
    daemon = make_daemon(*FAST_RETRIES, *RANGES)
    daemon.start(env={**AWS_ENV, "HF_ENDPOINT": services.hub.url})
    dest = tmp_path / "dest"
    args = spec.source(services, spec.files)
    submitted = daemon.bfctl(
        "submit", "download", "job", *args, "--dest", str(dest), "--space", "1GiB",
        "--auto-proceed",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job = daemon.wait_state("job", {"completed", "failed"}, timeout=120)
    assert job.state == "completed", f"{dict(job.counts)}\n{daemon.log_tail()}"
    on_disk = installed(dest)
    assert set(spec.files) <= set(on_disk), sorted(on_disk)

    for name in services.resumed:  # the case is what it says: the retry resumed
        ranges = [r.range_header for r in services.origin.requests(name) if r.range_header]
        assert ranges, f"{name} was not resumed"
    # What bfd saw, in the store and in the batch's manifest on the disk.
    seen = {name: hashlib.sha256(data).hexdigest() for name, data in on_disk.items()}
    with contextlib.closing(daemon.read_store()) as conn:
        stored = dict(conn.execute("SELECT path, seen_sha256 FROM files WHERE state = 'done'"))
    assert stored == seen
    (manifest_file,) = (dest / ".bulkforge").glob("job.batch-*.jsonl")
    rows = [json.loads(line) for line in manifest_file.read_text().splitlines()[1:]]
    assert {row["path"]: row["sha256"] for row in rows} == seen
    assert daemon.bfctl_json("verify", "job")["ok"]

    for name, data in on_disk.items():
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x01
        (dest / name).write_bytes(bytes(flipped))
    done = daemon.bfctl("--json", "verify", "job")
    assert done.returncode == 1, done.stdout
    report = json.loads(done.stdout)
    changed = {c["path"]: c["problem"] for b in report["batches"] for c in b["changed"]}
    assert changed.keys() == on_disk.keys(), report
    assert all(problem.startswith("sha256 ") for problem in changed.values()), changed
    assert daemon.stop() == 0, daemon.log_tail()


def test_a_store_of_an_older_bfd_gains_the_column_and_verify_still_uses_the_manifests(
    make_daemon, tmp_path, services
):
    """Rows installed before bfd recorded what it saw have no seen_sha256: verify falls
    back to the manifest's checksum for them, as it did."""
    daemon = make_daemon(*FAST_RETRIES).start()
    dest = tmp_path / "dest"
    args = manifest("sha256")(services, SMALL)
    daemon.bfctl("submit", "download", "old", *args, "--dest", str(dest), "--space", "1GiB")
    assert daemon.wait_state("old", {"completed", "failed"}).state == "completed"
    assert daemon.stop() == 0
    with contextlib.closing(apsw.Connection(str(daemon.state_dir / "bulkforge.db"))) as conn:
        conn.execute("UPDATE files SET seen_sha256 = NULL")
    daemon.start()
    name = sorted(SMALL)[0]
    data = bytearray((dest / name).read_bytes())
    data[10] ^= 0x01
    (dest / name).write_bytes(bytes(data))
    report = json.loads(daemon.bfctl("--json", "verify", "old").stdout)
    assert [c["path"] for b in report["batches"] for c in b["changed"]] == [name]
    assert daemon.stop() == 0
