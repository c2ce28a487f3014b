"""Every field of bfctl's --json documents, compared with the store after a job whose outcome
is known: a field added without a check here fails the key-set assertions."""

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from conftest import Daemon, make_dataset, manifest_rows, write_manifest
from origin import Fault, FaultKind, Origin


def iso(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def read_store(daemon: Daemon, name: str) -> dict:
    path = daemon.root / "state" / "bulkforge.db"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        job = dict(db.execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone())
        files = [dict(r) for r in db.execute("SELECT * FROM files WHERE job_id = ?", (job["id"],))]
        batches = [
            dict(row)
            for row in db.execute(
                "SELECT * FROM batches WHERE job_id = ? ORDER BY idx", (job["id"],)
            )
        ]
    return {"job": job, "files": files, "batches": batches}


def run_job(daemon: Daemon, tmp_path: Path) -> tuple[dict, dict]:
    dataset = make_dataset(6, 2000, seed=41)
    missing = sorted(dataset.files)[2]
    with Origin(dataset.files, {missing: Fault(FaultKind.STATUS_404)}) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        done = daemon.bfctl(
            "submit", "download", "known", "--manifest", str(manifest), "--dest",
            str(tmp_path / "d"), "--space", "6000", "--safety-margin", "1", "--auto-proceed",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        daemon.wait_state("known", {"failed"})
    return read_store(daemon, "known"), {"missing": missing, "dataset": dataset}


def test_status_list_stats_and_failures_say_what_the_store_says(daemon, tmp_path):
    stored, known = run_job(daemon, tmp_path)
    job, files = stored["job"], stored["files"]
    counts: dict[str, int] = {}
    for row in files:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    done = [row for row in files if row["state"] == "done"]

    status = daemon.bfctl_json("status", "known")
    assert status.keys() == {
        "name", "kind", "state", "counts", "finished", "succeeded", "failed", "bytes_done",
        "bytes_total", "bytes_total_known", "items_total", "retrying", "dest", "message",
        "batch_unit", "batches", "registration", "tables", "created_at", "updated_at",
    }  # fmt: skip
    assert (status["name"], status["kind"], status["state"]) == ("known", "download", "failed")
    assert status["counts"] == counts == {"done": 5, "failed": 1}
    assert (status["finished"], status["succeeded"], status["failed"]) == (6, 5, 1)
    assert status["bytes_done"] == sum(row["size"] for row in done)
    assert status["bytes_total"] == sum(row["size"] for row in files)
    assert status["bytes_total_known"] is True and status["items_total"] == len(files)
    assert status["retrying"] == 0 and status["dest"] == job["dest"] == str(tmp_path / "d")
    assert status["message"] == job["message"] and "1 file(s) failed" in status["message"]
    assert status["batch_unit"] == "disk" and status["registration"] is None
    assert status["tables"] == []
    assert (status["created_at"], status["updated_at"]) == (
        iso(job["created_at"]),
        iso(job["updated_at"]),
    )
    assert len(status["batches"]) == len(stored["batches"]) == 2
    for shown, row in zip(status["batches"], stored["batches"], strict=True):
        assert shown.keys() == {
            "index", "state", "bytes", "files", "disk", "disk_info", "failures", "started_at",
            "finished_at",
        }  # fmt: skip
        mine = [f for f in files if f["batch_idx"] == row["idx"]]
        assert (shown["index"], shown["state"]) == (row["idx"], row["state"])
        assert (shown["bytes"], shown["files"]) == (row["bytes"], row["files"])
        assert row["files"] == len(mine) and row["bytes"] == sum(f["size"] for f in mine)
        assert shown["failures"] == sum(f["state"] == "failed" for f in mine)
        assert shown["started_at"] == iso(row["started_at"])
        assert shown["finished_at"] == iso(row["updated_at"])
        assert shown["disk_info"]["mount"] and shown["disk"] == json_disk(row["disk"])

    assert daemon.bfctl_json("list")["jobs"] == [status]

    stats = daemon.bfctl_json("stats", "known")
    assert stats.keys() == {
        "job", "elapsed_s", "items_per_s", "bytes_per_s", "success_rate", "bucket_s", "shards",
        "throughput", "failures",
    }  # fmt: skip
    assert stats["job"] == status and stats["shards"] is None
    assert stats["success_rate"] == 5 / 6
    elapsed = (job["updated_at"] - job["created_at"]) / 1000
    assert abs(stats["elapsed_s"] - elapsed) < 0.002
    assert abs(stats["items_per_s"] - 5 / stats["elapsed_s"]) < 1e-6
    assert abs(stats["bytes_per_s"] - status["bytes_done"] / stats["elapsed_s"]) < 1e-3
    assert sum(b["items"] for b in stats["throughput"]) == 5
    assert sum(b["bytes"] for b in stats["throughput"]) == status["bytes_done"]
    for bucket in stats["throughput"]:
        assert bucket.keys() == {"start", "items", "bytes", "items_per_s"}
        # Over the part of the bucket the job lived in: never below the whole-life average
        # when the job lived in one bucket only.
        assert bucket["items_per_s"] >= bucket["items"] / stats["bucket_s"]
    if len(stats["throughput"]) == 1:
        assert abs(stats["throughput"][0]["items_per_s"] - stats["items_per_s"]) < 0.01

    failures = daemon.bfctl_json("failures", "known")
    failed = [row for row in files if row["state"] == "failed"]
    assert failures.keys() == {"total", "groups", "failures"}
    assert failures["total"] == len(failed) == 1
    assert failures["groups"] == [
        {"step": "connect", "error_class": "http_4xx", "count": 1, "sample": failed[0]["error"]}
    ]
    [listed] = failures["failures"]
    assert listed == {
        "item": known["missing"],
        "url": failed[0]["url"],
        "step": failed[0]["step"],
        "error_class": failed[0]["error_class"],
        "error": failed[0]["error"],
        "attempts": failed[0]["attempts"],
        "retrying": False,
    }
    assert stats["failures"] == failures["groups"]


def json_disk(stored: str) -> str:
    """How status shows a batch's disk: its mount, filesystem type and device."""
    disk = json.loads(stored)
    extra = "".join(f", {key} {disk[key]}" for key in ("uuid", "label") if disk.get(key))
    return f"{disk['mount']} ({disk['fstype']}, dev {disk['device']}{extra})"
