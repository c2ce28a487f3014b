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
    with daemon.read_store() as db:
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
        daemon.submit_batched("known", manifest, tmp_path / "d", 6000)
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
        "bytes_total", "bytes_total_known", "item_unit", "ended", "items_total", "retrying",
        "dest", "message", "batch_unit", "batches", "registration", "tables", "created_at",
        "updated_at",
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
    assert (status["item_unit"], status["ended"]) == ("files", True)
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
        "job", "elapsed_s", "items_per_s", "bytes_per_s", "success_rate", "bucket_s", "unit",
        "shards", "throughput", "failures",
    }  # fmt: skip
    assert stats["unit"] == "files"
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
    assert failures.keys() == {"total", "item_unit", "groups", "failures"}
    assert failures["item_unit"] == "files"
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


def test_submit_retry_and_watch_documents(daemon, tmp_path):
    with Origin({"a.bin": b"a" * 300}) as o:  # gone.bin: 404
        rows = [{"url": o.url_for(n), "path": n, "size": 300} for n in ("a.bin", "gone.bin")]
        manifest = write_manifest(tmp_path / "m.jsonl", rows)
        argv = (
            "submit",
            "download",
            "docs",
            "--manifest",
            str(manifest),
            "--dest",
            str(tmp_path / "d"),
        )
        submitted = daemon.bfctl_json(*argv)
        assert submitted.keys() == {"created", "job"} and submitted["created"] is True
        assert submitted["job"]["name"] == "docs" and submitted["job"]["items_total"] == 2
        assert daemon.bfctl_json(*argv)["created"] is False  # the same again: nothing new
        daemon.wait_state("docs", {"failed"})
        retried = daemon.bfctl_json("retry", "docs")
        assert retried.keys() == {"retried", "job"} and retried["retried"] == 1
        assert retried["job"]["counts"].get("failed", 0) == 0
        watched = daemon.bfctl("--json", "watch", "docs")
    assert watched.returncode == 1, watched.stderr  # gone.bin is still gone: the job failed
    event = json.loads(watched.stdout)
    assert event.keys() == {"job", "bytes_per_s", "items_per_s", "eta_s", "restarted"}
    assert event["job"] == daemon.bfctl_json("status", "docs")
    assert event["job"]["state"] == "failed" and event["job"]["counts"] == {"done": 1, "failed": 1}
    for rate in ("bytes_per_s", "items_per_s", "eta_s"):
        assert event[rate] is None or event[rate] >= 0


def test_plan_and_analyze_documents_add_up_to_the_manifest(daemon, tmp_path):
    rows = [
        {"url": f"http://127.0.0.1:9/{top}/f{i}.{ext}", "path": f"{top}/f{i}.{ext}",
         "size": 100 * (i + 1), **({"sha256": "0" * 64} if i % 2 else {})}
        for i, (top, ext) in enumerate([("a", "bin"), ("a", "txt"), ("b", "bin"), ("c", "bin")])
    ]  # fmt: skip
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    sizes = [row["size"] for row in rows]
    plan = daemon.bfctl_json("plan", "--manifest", str(manifest), "--space", "500",
                             "--safety-margin", "1")  # fmt: skip
    assert (plan["space"], plan["safety_margin"], plan["batch_limit"]) == (500, 1.0, 500)
    assert (plan["files"], plan["bytes"], plan["space_from"]) == (4, sum(sizes), "given")
    assert [b["index"] for b in plan["batches"]] == list(range(len(plan["batches"])))
    assert plan["batches"][-1]["cumulative_files"] == 4
    assert plan["batches"][-1]["cumulative_bytes"] == sum(sizes)
    assert plan["peak_bytes"] == max(b["bytes"] for b in plan["batches"]) <= 500
    assert plan["peak_fill"] == plan["peak_bytes"] / 500
    for batch in plan["batches"]:
        assert batch["fill"] == batch["bytes"] / 500 and batch["oversize"] is False
    assert plan["oversize"] == {"policy": "fail", "files": 0, "bytes": 0, "largest": []}
    assert plan["seconds"] >= 0

    report = daemon.bfctl_json("analyze", "--manifest", str(manifest), "--space", "350",
                               "--safety-margin", "1", "--largest", "2")  # fmt: skip
    assert (report["files"], report["bytes"], report["unknown_size"]) == (4, sum(sizes), 0)
    assert report["with_checksum"] == 2 and report["batch_limit"] == 350
    by_ext = {g["key"]: (g["files"], g["bytes"]) for g in report["by_extension"]}
    assert by_ext == {".bin": (3, 100 + 300 + 400), ".txt": (1, 200)}
    by_top = {g["key"]: (g["files"], g["bytes"]) for g in report["by_top_dir"]}
    assert by_top == {"a/": (2, 300), "b/": (1, 300), "c/": (1, 400)}
    assert report["largest"] == [{"path": "c/f3.bin", "bytes": 400},
                                 {"path": "b/f2.bin", "bytes": 300}]  # fmt: skip
    assert report["oversize"] == {
        "files": 1, "bytes": 400, "largest": [{"path": "c/f3.bin", "bytes": 400}]
    }  # fmt: skip


def test_system_document_says_what_bfd_runs_with(daemon):
    system = daemon.bfctl_json("system")
    assert system["pid"] == daemon.proc.pid and system["uptime_s"] > 0
    assert system["state_dir"] == str(daemon.root / "state")
    assert system["socket"] == str(daemon.socket)
    assert (system["max_connections"], system["per_host_connections"]) == (16, 16)
    assert system["bandwidth"] == 0 and system["disk_threshold"] == 0.9
    assert system["memory_cap"] == 2 * 1024**3 and system["cpu_workers"] >= 1
    assert system["transfer_workers"] >= 1 and system["transfer_worker_pids"] == []
    assert system["active_transfers"] == 0 and system["holds"] == [] and system["disks"] == []
    state = daemon.root / "state"
    assert system["db_bytes"] == (state / "bulkforge.db").stat().st_size
    assert system["wal_bytes"] == (state / "bulkforge.db-wal").stat().st_size
    # Boot repair went through the writer: at least one commit, and its latency measured.
    assert system["commits"] >= 1 and system["commit_p99_ms"] > 0
    assert system["rss_bytes"] > 10 * 2**20 and "WAL" in system["durability"]
    assert system["version"]
    assert system.keys() == {
        "version", "pid", "uptime_s", "state_dir", "socket", "rss_bytes", "memory_cap",
        "cpu_workers", "disk_threshold", "bandwidth", "active_transfers", "max_connections",
        "db_bytes", "wal_bytes", "durability", "disks", "commits", "commit_p99_ms", "holds",
        "per_host_connections", "transfer_workers", "transfer_worker_pids", "metrics_address",
        "listen_address", "allow_unauthenticated",
    }  # fmt: skip
    # Started without --metrics or --listen.
    assert system["metrics_address"] == system["listen_address"] == ""
    assert system["allow_unauthenticated"] is False
