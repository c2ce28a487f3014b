"""Tables for people. rich is imported inside the functions so --json runs never load it."""

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bulkforge.client.documents import shard_rows
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import (
    count_text,
    duration_text,
    number_text,
    per_second_text,
    percent_text,
    rate_text,
    size_text,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

# Colours by the tone bfd gives each state; the states themselves are bfd's to know.
TONE_STYLES = {
    "waiting": "blue",
    "active": "cyan",
    "held": "yellow",
    "ok": "green",
    "bad": "red",
    "idle": "dim",
}
MAX_THROUGHPUT_ROWS = 30
MAX_SHARD_ROWS = 10


def human_duration(seconds: float) -> str:
    """'0.4 s', '42 s', '1m05s', '2h03m': proto.units.duration_text, for the renderings."""
    return duration_text(seconds)


def item_unit(job: pb.Job) -> str:
    """What the job's items are, plural ("files", "parts"); "items" from a bfd that does
    not say."""
    return job.item_unit or "items"


def ago(ms: int) -> str:
    if not ms:
        return "-"
    return human_duration(max(0.0, time.time() - ms / 1000)) + " ago"


def byte_progress(job: pb.Job) -> str:
    """'1.00 MB / 4.00 MB (25.0%)'; without a known total '1.00 MB so far' while the job
    can still grow, and '1.00 MB' once it has ended (all it wrote)."""
    if not job.bytes_total_known:
        return size_text(job.bytes_done) + ("" if job.ended else " so far")
    done, total = job.bytes_done, job.bytes_total
    return f"{size_text(done)} / {size_text(total)} ({percent_text(done, total)})"


def console(stderr: bool = False) -> "Console":
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def styled(value: Any, style: str = "") -> "Text":
    """A cell shown as it is: names and messages from the daemon are not rich markup."""
    from rich.text import Text

    return Text(str(value), style=style)


def state_text(state: str, tone: str) -> "Text":
    return styled(state, TONE_STYLES.get(tone, ""))


def print_job(job: pb.Job) -> None:
    out = console()
    out.print(job_summary(job))
    if job.tables:
        out.print(tables_table(job))
    if job.batch_unit == "shard":
        if job.batches:
            out.print(shards_table(job, MAX_SHARD_ROWS))
    elif job.batches:
        out.print(batches_table(job.batches))


def tables_table(job: pb.Job) -> Any:
    """A job that writes tables: rows and parts done per table, and rows/s now."""
    from rich.table import Table

    table = Table(title="tables", title_justify="left")
    table.add_column("table")
    for column in ("rows", "of", "parts", "rows/s"):
        table.add_column(column, justify="right")
    for row in job.tables:
        table.add_row(
            row.name,
            count_text(row.rows_done),
            count_text(row.rows_total),
            f"{count_text(row.parts_done)}/{count_text(row.parts_total)}",
            number_text(row.rows_per_s) if row.rows_per_s else "-",
        )
    return table


def shards_table(job: pb.Job, limit: int) -> Any:
    """The last `limit` shards of an item job."""
    from rich.table import Table

    rows = shard_rows(job)
    shown = rows[-limit:]
    title = "shards" if len(shown) == len(rows) else f"last {len(shown)} of {len(rows)} shards"
    table = Table(title=title, title_justify="left")
    table.add_column("shard", justify="right")
    table.add_column("state")
    unit = item_unit(job)
    for column in (unit, "ok", "failed", "bytes", f"{unit}/s"):
        table.add_column(column, justify="right")
    for row in shown:
        rate = row["items_per_s"]
        table.add_row(
            str(row["shard"]),
            state_text(row["state"], row["tone"]),
            count_text(row["items"]),
            "-" if row["successes"] is None else count_text(row["successes"]),
            "-" if row["failures"] is None else count_text(row["failures"]),
            size_text(row["bytes"]),
            number_text(rate) if rate else "-",
        )
    return table


def job_summary(job: pb.Job) -> Any:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    title = styled(f"{job.name} ({job.kind}) ", "bold")
    title.append_text(state_text(job.state, job.tone))
    grid.add_row("job", title)
    counts = "  ".join(f"{entry.state} {count_text(entry.count)}" for entry in job.states)
    grid.add_row(
        item_unit(job),
        styled(
            f"{count_text(job.finished)}/{count_text(job.items_total)} finished "
            f"({count_text(job.succeeded)} ok, {count_text(job.failed)} failed)   {counts}"
        ),
    )
    grid.add_row(
        "bytes",
        styled(byte_progress(job)),
    )
    if job.HasField("registration") and not job.registration.done:
        registration = job.registration
        grid.add_row(
            "input",
            styled(
                f"{registration.rows_read:,}/{registration.rows_total:,} rows registered "
                f"({percent_text(registration.rows_read, registration.rows_total)})"
            ),
        )
    if job.HasField("registration") and job.registration.rejected:
        grid.add_row(
            "skipped",
            styled(f"{job.registration.rejected:,} input rows: {job.registration.first_rejected}"),
        )
    if job.retrying:
        waiting = f"{count_text(job.retrying)} failed {item_unit(job)} wait for their backoff"
        grid.add_row("retrying", styled(waiting))
    if job.dest:
        grid.add_row("dest", styled(job.dest))
    if job.message:
        grid.add_row("message", styled(job.message))
    grid.add_row("updated", styled(ago(job.updated_at_ms)))
    return grid


def batches_table(batches: Iterable[pb.Batch]) -> Any:
    from rich.table import Table

    table = Table(title="batches", title_justify="left")
    for column in ("batch", "state", "files", "bytes"):
        table.add_column(column, justify="left" if column == "state" else "right")
    table.add_column("disk")
    for batch in batches:
        table.add_row(
            str(batch.index),
            state_text(batch.state, batch.tone),
            count_text(batch.files),
            size_text(batch.bytes),
            styled(batch.disk or "-"),
        )
    return table


def print_jobs(jobs: Iterable[pb.Job]) -> None:
    from rich.table import Table

    table = Table()
    table.add_column("name")
    table.add_column("kind")
    table.add_column("state")
    # Jobs of every kind in one table: each cell names its kind's items ("3/70 parts").
    table.add_column("finished", justify="right")
    table.add_column("bytes", justify="right")
    table.add_column("updated", justify="right")
    rows = 0
    for job in jobs:
        rows += 1
        table.add_row(
            styled(job.name),
            styled(job.kind),
            state_text(job.state, job.tone),
            f"{count_text(job.finished)}/{count_text(job.items_total)} {item_unit(job)}",
            byte_progress(job),
            ago(job.updated_at_ms),
        )
    if rows:
        console().print(table)
    else:
        console().print("no jobs (submit one with `bfctl submit download NAME ...`)")


def failure_groups_table(groups: Iterable[pb.FailureGroup]) -> Any:
    from rich.table import Table

    table = Table(title="failures by step and error", title_justify="left")
    table.add_column("step")
    table.add_column("error class")
    table.add_column("count", justify="right")
    table.add_column("sample", overflow="fold")
    for group in groups:
        table.add_row(
            styled(group.step),
            styled(group.error_class),
            count_text(group.count),
            styled(group.sample),
        )
    return table


def print_failures(response: pb.FailuresResponse, name: str) -> None:
    from rich.table import Table

    out = console()
    if not response.total:
        out.print(styled(f"no failures in job {name!r}"))
        return
    out.print(failure_groups_table(response.groups))
    unit = response.item_unit or "items"
    table = Table(title=f"failed {unit}", title_justify="left")
    table.add_column(unit.removesuffix("s"), overflow="fold")
    table.add_column("step")
    table.add_column("error class")
    table.add_column("tries", justify="right")
    table.add_column("retrying")
    table.add_column("error", overflow="fold")
    for failure in response.failures:
        table.add_row(
            styled(failure.item),
            styled(failure.step),
            styled(failure.error_class),
            count_text(failure.attempts),
            "yes" if failure.retrying else "no",
            styled(failure.error),
        )
    out.print(table)
    out.print(
        styled(
            f"{count_text(response.total)} failed {unit}, {count_text(len(response.failures))} "
            "shown; "
            f"`bfctl retry {name}` queues them again"
        )
    )


def print_stats(response: pb.StatsResponse) -> None:
    from rich.table import Table

    out = console()
    out.print(job_summary(response.job))
    job = response.job
    shown_rate = f"   {percent_text(job.succeeded, job.finished)} succeeded" if job.finished else ""
    # What the throughput counts: the job's items, or rows (a generate job's parts hold rows).
    unit = response.unit or "items"
    out.print(
        styled(
            f"elapsed {human_duration(response.elapsed_s)}, on average "
            f"{per_second_text(response.items_per_s, unit)}   {rate_text(response.bytes_per_s)}"
            f"{shown_rate}"
        )
    )
    buckets = list(response.throughput)[-MAX_THROUGHPUT_ROWS:]
    if buckets:
        bucket_s = response.bucket_s or 60
        table = Table(title=f"throughput per {bucket_s} s (UTC)", title_justify="left")
        table.add_column("from")
        table.add_column(unit, justify="right")
        table.add_column(f"{unit}/s", justify="right")
        table.add_column("bytes", justify="right")
        for bucket in buckets:
            table.add_row(
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(bucket.start_ms / 1000)),
                count_text(bucket.items),
                number_text(bucket.items_per_s),
                size_text(bucket.bytes),
            )
        out.print(table)
    if response.failures:
        out.print(failure_groups_table(response.failures))
    if response.job.tables:
        out.print(tables_table(response.job))
    if response.job.batch_unit == "shard" and response.job.batches:
        out.print(shards_table(response.job, MAX_THROUGHPUT_ROWS))


# How a SystemResponse field is shown; fields not listed are shown as they are.
SYSTEM_FORMATS = {
    "uptime_s": human_duration,
    "rss_bytes": size_text,
    "memory_cap": size_text,
    "db_bytes": size_text,
    "wal_bytes": size_text,
    "bandwidth": lambda rate: rate_text(rate) if rate else "no cap",
    "disk_threshold": lambda fraction: percent_text(fraction, 1),
    "commit_p99_ms": lambda ms: f"{number_text(ms)} ms",
    # An identifier, not a count: shown as the kernel writes it.
    "pid": str,
}


def system_value(field: str, value: object) -> str:
    """A SystemResponse field for people: by SYSTEM_FORMATS, else counts thousands
    separated and the rest as they are."""
    if field in SYSTEM_FORMATS:
        return SYSTEM_FORMATS[field](value)
    if isinstance(value, int) and not isinstance(value, bool):
        return count_text(value)
    return str(value)


def system_label(field: str) -> str:
    """uptime_s -> uptime: the unit is in the value once it is formatted."""
    for unit in ("_bytes", "_ms", "_s"):
        field = field.removesuffix(unit)
    return field.replace("_", " ")


def print_system(response: pb.SystemResponse) -> None:
    from rich.table import Table

    from bulkforge.client.documents import scalar_fields

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for field, value in scalar_fields(response).items():
        grid.add_row(system_label(field), styled(system_value(field, value)))
    running = (
        ", ".join(map(str, response.transfer_worker_pids))
        or "none (they start with the first transfer)"
    )
    grid.add_row(system_label("transfer_worker_pids"), styled(running))
    out = console()
    out.print(grid)
    if response.disks:
        table = Table(title="disks", title_justify="left")
        table.add_column("path")
        for column in ("total", "free", "used"):
            table.add_column(column, justify="right")
        for disk in response.disks:
            used = disk.total_bytes - disk.free_bytes
            table.add_row(
                styled(disk.path),
                size_text(disk.total_bytes),
                size_text(disk.free_bytes),
                percent_text(used, disk.total_bytes),
            )
        out.print(table)
    for hold in response.holds:
        out.print(f"holding back {hold.job}: ", styled(hold.reason))


def print_analysis(response: pb.AnalyzeResponse) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"{response.files:,} files, {size_text(response.bytes)}"
        + (f" ({response.unknown_size:,} of unknown size)" if response.unknown_size else "")
        + f"; {response.with_checksum:,} with a checksum to verify against"
    )
    for title, groups in (
        ("by extension", response.by_extension),
        ("by top-level directory", response.by_top_dir),
    ):
        table = Table(title=title, title_justify="left")
        table.add_column("")
        table.add_column("files", justify="right")
        table.add_column("bytes", justify="right")
        for group in list(groups)[:20]:
            table.add_row(styled(group.key), f"{group.files:,}", size_text(group.bytes))
        out.print(table)
    out.print(files_table("largest files", response.largest))
    if response.batch_limit:
        out.print(
            f"{response.oversize_files:,} file(s), {size_text(response.oversize_bytes)}, are "
            f"larger than one batch ({size_text(response.batch_limit)}) could hold"
        )
        if response.oversize:
            out.print(files_table("larger than one batch", response.oversize))


def files_table(title: str, files: Iterable[pb.SizeGroup]) -> Any:
    """Paths and their sizes, as the daemon listed them."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("path")
    table.add_column("bytes", justify="right")
    for group in files:
        table.add_row(styled(group.key), size_text(group.bytes))
    return table


OVERSIZE_CHOICES = {
    "fail": "they would end failed (reason oversize); --oversize skip|own-batch chooses",
    "skip": "they would be recorded as skipped, never fetched",
    "own-batch": "each would get a batch of its own, for a disk large enough",
}


def print_plan(response: pb.PlanResponse) -> None:
    from rich.table import Table

    out = console()
    out.print(
        f"{response.files:,} files, {size_text(response.bytes)} -> "
        f"{len(response.batches)} batch(es) of at most {size_text(response.batch_limit)} "
        f"({response.safety_margin:g} of {size_text(response.space)}, {response.space_from})"
    )
    table = Table(title="timeline", title_justify="left")
    for column in ("batch", "files", "bytes", "fill", "total files", "total bytes", "dirs (split)"):
        table.add_column(column, justify="right")
    for batch in response.batches:
        table.add_row(
            str(batch.index) + (" (oversize)" if batch.oversize else ""),
            f"{batch.files:,}",
            size_text(batch.bytes),
            percent_text(batch.bytes, response.space),
            f"{batch.cumulative_files:,}",
            size_text(batch.cumulative_bytes),
            f"{batch.directories:,} ({batch.split_directories:,})",
        )
    out.print(table)
    peak = percent_text(response.peak_bytes, response.space)
    out.print(f"peak disk use {size_text(response.peak_bytes)} ({peak} of one disk)")
    if response.oversize_files:
        out.print(
            f"{response.oversize_files:,} file(s), {size_text(response.oversize_bytes)}, "
            f"are larger than one batch: {OVERSIZE_CHOICES[response.oversize_policy]}"
        )
        out.print(files_table("oversize files", response.oversize))
    out.print(f"planned in {duration_text(response.seconds)}")


def print_verification(response: pb.VerifyResponse) -> None:
    out = console()
    mounted = response.mounted
    out.print(f"checked {response.dest}: {mounted.mount} ({mounted.fstype}, dev {mounted.device})")
    for batch in response.batches:
        where = "" if batch.on_this_disk else f" (it went to {batch.went_to or 'no disk'})"
        out.print(
            f"batch {batch.index}{where}: {batch.checked:,} file(s) checked, "
            f"{batch.missing_count:,} missing, {batch.changed_count:,} changed"
        )
        for path in batch.missing:
            out.print("  missing ", styled(path))
        for changed in batch.changed:
            out.print("  changed ", styled(changed.path), styled(f": {changed.problem}"))
    out.print(f"{response.extra_count:,} extra file(s) that no batch put there")
    for path in response.extra:
        out.print("  extra   ", styled(path))
    out.print("ok" if response.ok else "PROBLEMS FOUND", f"in {duration_text(response.seconds)}")
