"""Answers as proto messages: each built from what a Control verb returned, nothing more."""

import dataclasses

from bulkforge.daemon import jobs, outputs
from bulkforge.daemon.control import Stats, SystemView
from bulkforge.daemon.disks import Disk
from bulkforge.daemon.failures import FailureGroupRow, FailureReport
from bulkforge.daemon.machines.batch import TONE as BATCH_TONE
from bulkforge.daemon.machines.batch import BatchState
from bulkforge.daemon.machines.job import TERMINAL
from bulkforge.daemon.machines.job import TONE as JOB_TONE
from bulkforge.daemon.progress import Pace
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

# A batch's counts and its end time are final once it is written.
SETTLED = (BatchState.COMPLETE, BatchState.ARCHIVED, BatchState.CANCELLED)


# Each job's last view and the message built from it: the callers that share one view
# (Control.status) share its message too, so it is built once, not once per caller.
# A removed job's goes with it (forget); emptied past BUILT_KEPT jobs.
_built: dict[int, tuple[jobs.JobView, pb.Job]] = {}
BUILT_KEPT = 1024


def job_message(view: jobs.JobView) -> pb.Job:
    """The job's message; the same (never changed) object for the same view."""
    last = _built.get(view.job.id)
    if last is not None and last[0] is view:
        return last[1]
    message = _job_message(view)
    if len(_built) >= BUILT_KEPT:
        _built.clear()
    _built[view.job.id] = (view, message)
    return message


def forget(job_id: int) -> None:
    """The job was removed: its last message goes with it."""
    _built.pop(job_id, None)


def removed_message(
    view: jobs.JobView, items: int, deleted: outputs.Deleted | None
) -> pb.RemoveResponse:
    job = view.job
    message = pb.RemoveResponse(name=job.name, state=str(job.state), dest=job.dest, items=items)
    message.item_unit = view.item_unit
    if deleted is not None:
        message.deleted.CopyFrom(
            pb.DeletedOutput(
                files=deleted.files,
                directories=deleted.directories,
                bytes=deleted.bytes,
                paths=deleted.paths,
                not_deleted=[f"{p}: {why}" for p, why in deleted.failed[: outputs.LISTED_MAX]],
            )
        )
    return message


def _job_message(view: jobs.JobView) -> pb.Job:
    job = view.job
    return pb.Job(
        name=job.name,
        kind=job.kind,
        state=str(job.state),
        tone=JOB_TONE[job.state],
        counts=view.counts,
        states=[
            pb.StateCount(state=state, count=count, tone=tone)
            for state, count, tone in view.ordered_counts()
        ],
        finished=view.finished,
        succeeded=view.succeeded,
        failed=view.failed,
        bytes_done=view.bytes_done,
        bytes_total=view.bytes_total,
        bytes_total_known=view.bytes_total_known,
        item_unit=view.item_unit,
        ended=job.state in TERMINAL,
        batch_unit=view.batch_unit,
        batches=[batch_message(b) for b in view.batches],
        dest=job.dest,
        message=job.message,
        items_total=view.items_total,
        retrying=view.retrying,
        created_at_ms=job.created_at,
        updated_at_ms=job.updated_at,
        registration=_registration(view.registration),
        tables=[pb.TableProgress(**vars(table)) for table in view.tables],
    )


def batch_message(view: jobs.BatchView) -> pb.Batch:
    state = BatchState(view.state)
    batch = pb.Batch(
        index=view.index,
        state=view.state,
        tone=BATCH_TONE[state],
        bytes=view.bytes,
        files=view.files,
        failures=view.failures,
        started_at_ms=view.started_at or 0,
        settled=state in SETTLED,
    )
    disk = Disk.from_json(view.disk)
    if disk is not None:
        batch.disk = disk.describe()
        batch.disk_info.CopyFrom(disk_message(disk))
    if state in SETTLED:
        batch.finished_at_ms = view.updated_at
    return batch


def disk_message(disk: Disk) -> pb.DiskInfo:
    return pb.DiskInfo(**dataclasses.asdict(disk))


def _registration(progress: jobs.Registration | None) -> pb.Registration | None:
    if progress is None:
        return None
    return pb.Registration(
        rows_read=progress.rows_read,
        rows_total=progress.rows_total,
        done=progress.done,
        rejected=progress.rejected,
        first_rejected=progress.first_rejected,
    )


def watch_event(job: pb.Job, pace: Pace, final: bool, observed_at: float) -> pb.WatchEvent:
    return pb.WatchEvent(
        job=job,
        bytes_per_s=pace.bytes_per_s,
        items_per_s=pace.items_per_s,
        eta_s=pace.eta_s,
        restarted=pace.restarted,
        final=final,
        observed_at=observed_at,
    )


def group_message(row: FailureGroupRow) -> pb.FailureGroup:
    return pb.FailureGroup(
        step=row.step, error_class=row.error_class, count=row.count, sample=row.sample
    )


def failures_message(report: FailureReport) -> pb.FailuresResponse:
    return pb.FailuresResponse(
        groups=[group_message(g) for g in report.groups],
        failures=[
            pb.Failure(
                item=f.item,
                url=f.url,
                step=f.step,
                error_class=f.error_class,
                error=f.error,
                attempts=f.attempts,
                retrying=f.retrying,
            )
            for f in report.failures
        ],
        total=report.total,
        item_unit=report.item_unit,
    )


def stats_message(stats: Stats) -> pb.StatsResponse:
    return pb.StatsResponse(
        job=job_message(stats.view),
        throughput=[
            pb.ThroughputBucket(start_ms=start, items=items, bytes=size, items_per_s=rate)
            for start, items, size, rate in stats.throughput
        ],
        failures=[group_message(g) for g in stats.failures],
        elapsed_s=stats.elapsed_s,
        items_per_s=stats.items_per_s,
        bytes_per_s=stats.bytes_per_s,
        bucket_s=stats.bucket_s,
        unit=stats.unit,
    )


def system_message(system: SystemView, version: str) -> pb.SystemResponse:
    fields = dataclasses.asdict(system)
    holds, disks = fields.pop("holds"), fields.pop("disks")
    return pb.SystemResponse(
        version=version,
        holds=[pb.Hold(job=job, reason=why) for job, why in holds.items()],
        disks=[pb.Disk(**disk) for disk in disks],
        **fields,
    )


def plan_message(plan, space, seconds: float) -> pb.PlanResponse:
    """A dry-run plan of disk batches (downloader.planner's Plan and Space)."""
    batches, files, size = [], 0, 0
    for batch in plan.batches:
        files, size = files + batch.files, size + batch.bytes
        batches.append(
            pb.PlannedBatch(
                index=batch.index,
                files=batch.files,
                bytes=batch.bytes,
                cumulative_files=files,
                cumulative_bytes=size,
                directories=batch.directories,
                split_directories=batch.split_directories,
                oversize=batch.oversize,
            )
        )
    return pb.PlanResponse(
        space=plan.space,
        safety_margin=plan.margin,
        batch_limit=plan.capacity,
        space_from=space.source,
        files=plan.files,
        bytes=plan.bytes,
        batches=batches,
        peak_bytes=plan.peak_bytes,
        oversize_files=plan.oversize_files,
        oversize_bytes=plan.oversize_bytes,
        oversize=[pb.SizeGroup(key=path, files=1, bytes=n) for n, path in plan.oversize_listed],
        oversize_policy=str(plan.oversize_policy),
        seconds=seconds,
    )


def analysis_message(summary, limit: int | None) -> pb.AnalyzeResponse:
    """A dry-run summary of a source (downloader.analyze's Analysis)."""
    return pb.AnalyzeResponse(
        files=summary.files,
        bytes=summary.bytes,
        unknown_size=summary.unknown_size,
        with_checksum=summary.with_checksum,
        by_extension=_size_groups(summary.by_extension),
        by_top_dir=_size_groups(summary.by_top_dir),
        largest=[pb.SizeGroup(key=path, files=1, bytes=size) for size, path in summary.largest],
        batch_limit=limit or 0,
        oversize_files=summary.oversize_files,
        oversize_bytes=summary.oversize_bytes,
        oversize=[pb.SizeGroup(key=p, files=1, bytes=n) for n, p in summary.oversize],
    )


def swap_message(view: jobs.JobView, swapped) -> pb.SwapResponse:
    return pb.SwapResponse(
        job=job_message(view),
        archived=swapped.archived,
        disk=disk_message(swapped.disk),
        new_disk=swapped.new_disk,
        note=swapped.note,
    )


def verification_message(checked, seconds: float) -> pb.VerifyResponse:
    """A re-hash of a download's batches on the disk at its dest (downloader.verify)."""
    return pb.VerifyResponse(
        dest=checked.dest,
        mounted=disk_message(checked.mounted),
        batches=[
            pb.BatchCheck(
                index=b.index,
                went_to=b.went_to.describe() if b.went_to else "",
                on_this_disk=b.went_to is not None and b.went_to.key == checked.mounted.key,
                checked=b.checked,
                missing_count=b.missing_count,
                missing=b.missing,
                changed_count=b.changed_count,
                changed=[pb.FileProblem(path=p, problem=why) for p, why in b.changed],
            )
            for b in checked.batches
        ],
        extra_count=checked.extra_count,
        extra=checked.extra,
        ok=checked.ok,
        seconds=seconds,
    )


def export_message(exported, seconds: float) -> pb.ExportResponse:
    return pb.ExportResponse(
        paths=[str(path) for path in exported.paths],
        total=exported.total,
        successful=exported.successful,
        failed=exported.failed,
        seconds=seconds,
        item_unit=exported.item_unit,
    )


def _size_groups(groups: dict) -> list[pb.SizeGroup]:
    """Biggest first, by bytes then files."""
    ordered = sorted(groups.items(), key=lambda item: (-item[1].bytes, -item[1].files, item[0]))
    return [pb.SizeGroup(key=key, files=g.files, bytes=g.bytes) for key, g in ordered]
