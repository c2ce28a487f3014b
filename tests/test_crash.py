"""kill -9 at random moments: nothing done is lost, nothing unfinished is ever done."""

import hashlib
import random
import time
from pathlib import Path

import apsw
import pytest
from conftest import FAST_RETRIES, make_dataset, manifest_rows, write_manifest
from origin import Fault, FaultKind, Origin

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

KILLS = 12


def done_rows(db: Path) -> list[tuple[str, str]]:
    conn = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute("SELECT path, sha256 FROM files WHERE state = 'done'").fetchall()
    finally:
        conn.close()


def check_done_files(db: Path, dest: Path) -> int:
    """Every file the store calls done is on disk with exactly the right bytes."""
    rows = done_rows(db)
    for path, sha256 in rows:
        data = (dest / path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256, f"{path} done with wrong bytes"
    return len(rows)


@pytest.mark.slow
def test_kill_9_many_times_during_a_download(make_daemon, tmp_path: Path):
    dataset = make_dataset(300, 160_000, vary=160_000, seed=42)
    dest = tmp_path / "dest"
    rng = random.Random(2026)
    # Each file's first GET pauses half way, so transfers are in flight when the kill lands.
    slow_start = {"*": Fault(FaultKind.STALL, times=1, seconds=0.25)}
    daemon = make_daemon(*FAST_RETRIES, "--max-connections", "8")
    with Origin(dataset.files, slow_start) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.start()
        daemon.submit("crashy", manifest, dest)
        kills_mid_download = 0
        done_seen = []
        while kills_mid_download < KILLS:
            time.sleep(rng.uniform(0.05, 0.6))
            job = daemon.stub.Status(pb.JobRef(name="crashy"), timeout=10)
            if job.state != "running":
                break
            daemon.kill9()
            kills_mid_download += 1
            done_seen.append(check_done_files(daemon.state_dir / "bulkforge.db", dest))
            daemon.start()
        assert kills_mid_download >= 10, (
            f"the job finished after only {kills_mid_download} kills; slow the origin down"
        )
        job = daemon.wait_state("crashy", {"completed", "failed"}, timeout=180)
    assert job.state == "completed", dict(job.counts)
    assert dict(job.counts) == {"done": len(dataset.files)}
    assert done_seen == sorted(done_seen), "a kill lost files that were already done"
    assert daemon.stop() == 0
    for name, data in dataset.files.items():
        assert (dest / name).read_bytes() == data, name
    assert not list(dest.rglob("*.partial"))
    conn = apsw.Connection(str(daemon.state_dir / "bulkforge.db"))
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        counts = dict(conn.execute("SELECT state, files FROM file_counts WHERE files > 0"))
        actual = dict(conn.execute("SELECT state, count(*) FROM files GROUP BY state"))
        assert counts == actual
    finally:
        conn.close()
