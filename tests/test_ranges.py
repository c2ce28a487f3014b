"""Large files as parallel byte ranges: each range resumable on its own, the whole verified."""

import random
import re
from pathlib import Path

import apsw
import pytest
from conftest import FAST_RETRIES, Dataset, manifest_rows, wait_until, write_manifest
from origin import Fault, FaultKind, Origin

MiB = 1024 * 1024
RANGES = ["--segment-size", "1MiB", "--segments-per-file", "4"]


def big_file(size: int, seed: int = 1) -> dict[str, bytes]:
    return {"big/blob.bin": random.Random(seed).randbytes(size)}


def served_ranges(origin: Origin, name: str) -> list[tuple[int, int]]:
    spans = []
    for record in origin.requests(name):
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", record.range_header or "")
        if match and record.status == 206:
            spans.append((int(match.group(1)), int(match.group(2)) + 1))
    return spans


def done_segments(db: Path) -> set[tuple[int, int]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return set(conn.execute("SELECT start, stop FROM segments WHERE done = 1"))
    finally:
        conn.close()


def test_a_large_file_is_fetched_as_parallel_ranges(make_daemon, tmp_path):
    files = big_file(8 * MiB + 123)
    daemon = make_daemon(*FAST_RETRIES, *RANGES).start()
    with Origin(files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, Dataset(files)))
        daemon.submit("big", manifest, tmp_path / "dest")
        assert daemon.wait_state("big", {"completed", "failed"}).state == "completed"
        spans = served_ranges(origin, "big/blob.bin")
    assert (tmp_path / "dest/big/blob.bin").read_bytes() == files["big/blob.bin"]
    assert sorted(spans) == [(i * MiB, min((i + 1) * MiB, 8 * MiB + 123)) for i in range(9)]
    assert daemon.stop() == 0


@pytest.mark.slow
def test_kill_9_mid_ranges_fetches_only_the_missing_ones(make_daemon, tmp_path):
    size = 24 * MiB
    files = big_file(size, seed=2)
    name = "big/blob.bin"
    daemon = make_daemon(*FAST_RETRIES, *RANGES, "--bandwidth", "6MB/s").start()
    db = daemon.state_dir / "bulkforge.db"
    with Origin(files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, Dataset(files)))
        daemon.submit("big", manifest, tmp_path / "dest")
        wait_until(lambda: len(done_segments(db)) >= 6, what="six ranges done")
        daemon.kill9()
        before = done_segments(db)
        served_before = origin.bytes_served(name)
        origin.log.clear()
        daemon.start()
        assert daemon.wait_state("big", {"completed", "failed"}, timeout=60).state == "completed"
        after = served_ranges(origin, name)
        served_after = origin.bytes_served(name)
    assert (tmp_path / "dest" / name).read_bytes() == files[name]
    assert len(before) < 24, "killed after every range was done: the test proves nothing"
    assert not set(after) & before, "a range done before the kill was fetched again"
    missing = size - sum(stop - start for start, stop in before)
    assert served_after == missing
    # In all, no more than what was in flight at the kill (4 ranges) was fetched twice.
    assert served_before + served_after <= size + 4 * MiB
    assert daemon.stop() == 0


def test_an_origin_ignoring_range_gets_the_file_in_one_stream(make_daemon, tmp_path):
    files = big_file(4 * MiB, seed=3)
    daemon = make_daemon(*FAST_RETRIES, *RANGES).start()
    with Origin(files, {"big/blob.bin": Fault(FaultKind.IGNORE_RANGE)}) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, Dataset(files)))
        daemon.submit("norange", manifest, tmp_path / "dest")
        assert daemon.wait_state("norange", {"completed", "failed"}).state == "completed"
        last = origin.requests("big/blob.bin")[-1]
        served = origin.bytes_served("big/blob.bin")
    assert (tmp_path / "dest/big/blob.bin").read_bytes() == files["big/blob.bin"]
    # The ranged requests got 200s and were dropped; then one plain stream carried the file.
    assert (last.range_header, last.status, last.bytes_sent) == (None, 200, 4 * MiB)
    assert served <= 4 * MiB + 4 * 4 * MiB
    assert daemon.stop() == 0


def test_a_corrupt_range_fails_the_whole_file_check_and_is_retried(make_daemon, tmp_path):
    files = big_file(4 * MiB, seed=4)
    daemon = make_daemon(*FAST_RETRIES, *RANGES).start()
    with Origin(files, {"big/blob.bin": Fault(FaultKind.CORRUPT, times=1)}) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, Dataset(files)))
        daemon.submit("corrupt", manifest, tmp_path / "dest")
        assert daemon.wait_state("corrupt", {"completed", "failed"}).state == "completed"
    assert (tmp_path / "dest/big/blob.bin").read_bytes() == files["big/blob.bin"]
    assert "sha256 mismatch" in daemon.log.read_text()
    assert daemon.stop() == 0
