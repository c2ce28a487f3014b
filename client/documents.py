"""The JSON documents `--json` prints: snake_case keys, integers as numbers, ISO 8601 UTC times.

Built field by field rather than with protobuf's MessageToDict, which turns int64 into strings
and drops fields that hold their default value; scripts should not have to care about either.
"""

import json
import sys
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def iso_utc(ms: int) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC; None when the daemon left it unset (0)."""
    if not ms:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_to_dict(job: pb.Job) -> dict[str, Any]:
    return {
        "name": job.name,
        "kind": job.kind,
        "state": job.state,
        "counts": dict(sorted(job.counts.items())),
        "finished": job.finished,
        "succeeded": job.succeeded,
        "failed": job.failed,
        "bytes_done": job.bytes_done,
        "bytes_total": job.bytes_total,
        "bytes_total_known": job.bytes_total_known,
        "item_unit": job.item_unit,
        "ended": job.ended,
        "items_total": job.items_total,
        "retrying": job.retrying,
        "dest": job.dest,
        "message": job.message,
        "batch_unit": job.batch_unit,
        "batches": [
            {
                "index": batch.index,
                "state": batch.state,
                "bytes": batch.bytes,
                "files": batch.files,
                "disk": batch.disk,
                "disk_info": disk_to_dict(batch.disk_info) if batch.HasField("disk_info") else None,
                "failures": batch.failures,
                "started_at": iso_utc(batch.started_at_ms) if batch.started_at_ms else None,
                "finished_at": iso_utc(batch.finished_at_ms) if batch.finished_at_ms else None,
            }
            for batch in job.batches
        ],
        "registration": scalar_fields(job.registration) if job.HasField("registration") else None,
        "tables": [scalar_fields(table) for table in job.tables],
        "created_at": iso_utc(job.created_at_ms),
        "updated_at": iso_utc(job.updated_at_ms),
    }


def shard_rows(job: pb.Job) -> list[dict[str, Any]]:
    """Per shard of an item job: items, successes, failures, bytes, how long it took."""
    rows = []
    for batch in job.batches:
        seconds = None
        if batch.started_at_ms and batch.finished_at_ms:
            seconds = max(0.001, (batch.finished_at_ms - batch.started_at_ms) / 1000)
        rows.append(
            {
                "shard": batch.index,
                "state": batch.state,
                "tone": batch.tone,
                "items": batch.files,
                # Counted when the shard is written; None while it is being filled.
                "successes": batch.files - batch.failures if batch.settled else None,
                "failures": batch.failures if batch.settled else None,
                "bytes": batch.bytes,
                "seconds": seconds,
                "items_per_s": batch.files / seconds if seconds else None,
            }
        )
    return rows


def failure_group_to_dict(group: pb.FailureGroup) -> dict[str, Any]:
    return {
        "step": group.step,
        "error_class": group.error_class,
        "count": group.count,
        "sample": group.sample,
    }


def failures_to_dict(response: pb.FailuresResponse) -> dict[str, Any]:
    return {
        "total": response.total,
        "item_unit": response.item_unit,
        "groups": [failure_group_to_dict(group) for group in response.groups],
        "failures": [
            {
                "item": failure.item,
                "url": failure.url,
                "step": failure.step,
                "error_class": failure.error_class,
                "error": failure.error,
                "attempts": failure.attempts,
                "retrying": failure.retrying,
            }
            for failure in response.failures
        ],
    }


def stats_to_dict(response: pb.StatsResponse) -> dict[str, Any]:
    return {
        "job": job_to_dict(response.job),
        "elapsed_s": response.elapsed_s,
        "items_per_s": response.items_per_s,
        "bytes_per_s": response.bytes_per_s,
        "success_rate": success_rate(response.job),
        "bucket_s": response.bucket_s,
        "unit": response.unit,
        "shards": shard_rows(response.job) if response.job.batch_unit == "shard" else None,
        "throughput": [
            {
                "start": iso_utc(bucket.start_ms),
                "items": bucket.items,
                "bytes": bucket.bytes,
                "items_per_s": bucket.items_per_s,
            }
            for bucket in response.throughput
        ],
        "failures": [failure_group_to_dict(group) for group in response.failures],
    }


def success_rate(job: pb.Job) -> float | None:
    """Successes among the items that ended, or None before any did."""
    return job.succeeded / job.finished if job.finished else None


def scalar_fields(message: Message) -> dict[str, Any]:
    """Every non-message, non-repeated field by its proto (snake_case) name."""
    return {
        field.name: getattr(message, field.name)
        for field in message.DESCRIPTOR.fields
        if field.message_type is None and not field.is_repeated
    }


def system_to_dict(response: pb.SystemResponse) -> dict[str, Any]:
    # Generic over the scalar fields so a field added to the proto shows up without a change here.
    document = scalar_fields(response)
    document["disks"] = [scalar_fields(disk) for disk in response.disks]
    document["holds"] = [scalar_fields(hold) for hold in response.holds]
    document["transfer_worker_pids"] = list(response.transfer_worker_pids)
    return document


def watch_event_to_dict(event: pb.WatchEvent) -> dict[str, Any]:
    return {
        "job": job_to_dict(event.job),
        "bytes_per_s": event.bytes_per_s if event.bytes_per_s >= 0 else None,
        "items_per_s": event.items_per_s if event.items_per_s >= 0 else None,
        "eta_s": event.eta_s if event.eta_s >= 0 else None,
        "restarted": event.restarted,
    }


def analysis_to_dict(response: pb.AnalyzeResponse) -> dict[str, Any]:
    def groups(items) -> list[dict[str, Any]]:
        return [{"key": g.key, "files": g.files, "bytes": g.bytes} for g in items]

    return {
        "files": response.files,
        "bytes": response.bytes,
        "unknown_size": response.unknown_size,
        "with_checksum": response.with_checksum,
        "by_extension": groups(response.by_extension),
        "by_top_dir": groups(response.by_top_dir),
        "largest": [{"path": g.key, "bytes": g.bytes} for g in response.largest],
        "batch_limit": response.batch_limit or None,
        "oversize": {
            "files": response.oversize_files,
            "bytes": response.oversize_bytes,
            "largest": [{"path": g.key, "bytes": g.bytes} for g in response.oversize],
        },
    }


def disk_to_dict(disk: pb.DiskInfo) -> dict[str, str]:
    return scalar_fields(disk)


def verification_to_dict(response: pb.VerifyResponse) -> dict[str, Any]:
    return {
        "ok": response.ok,
        "dest": response.dest,
        "mounted": disk_to_dict(response.mounted),
        "batches": [
            {
                "index": b.index,
                "went_to": b.went_to,
                "on_this_disk": b.on_this_disk,
                "checked": b.checked,
                "missing_count": b.missing_count,
                "missing": list(b.missing),
                "changed_count": b.changed_count,
                "changed": [{"path": c.path, "problem": c.problem} for c in b.changed],
            }
            for b in response.batches
        ],
        "extra_count": response.extra_count,
        "extra": list(response.extra),
        "seconds": response.seconds,
    }


def plan_to_dict(response: pb.PlanResponse) -> dict[str, Any]:
    return {
        "space": response.space,
        "space_from": response.space_from,
        "safety_margin": response.safety_margin,
        "batch_limit": response.batch_limit,
        "files": response.files,
        "bytes": response.bytes,
        "batches": [
            {
                "index": b.index,
                "files": b.files,
                "bytes": b.bytes,
                "cumulative_files": b.cumulative_files,
                "cumulative_bytes": b.cumulative_bytes,
                "fill": b.bytes / response.space if response.space else 0.0,
                "directories": b.directories,
                "split_directories": b.split_directories,
                "oversize": b.oversize,
            }
            for b in response.batches
        ],
        "peak_bytes": response.peak_bytes,
        "peak_fill": response.peak_bytes / response.space if response.space else 0.0,
        "oversize": {
            "policy": response.oversize_policy,
            "files": response.oversize_files,
            "bytes": response.oversize_bytes,
            "largest": [{"path": g.key, "bytes": g.bytes} for g in response.oversize],
        },
        "seconds": response.seconds,
    }


def print_json(document: Any) -> None:
    """The one JSON document of a --json run: the only thing written on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
