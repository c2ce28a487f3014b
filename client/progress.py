"""Following a Watch stream: a live display on a terminal, a plain line now and then elsewhere.

Rates and ETA come from the daemon's events rather than being estimated here: the daemon sees
every finished item, the client only sees snapshots.
"""

import sys
import time
from collections import deque
from collections.abc import Iterable

from bulkforge.client.render import byte_progress, human_duration, item_unit
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import count_text, per_second_text, percent_text, rate_text

# Often enough to show life in a log, rarely enough not to flood it.
PLAIN_LINE_EVERY_S = 5.0


def follow(events: Iterable[pb.WatchEvent], show: bool = True) -> pb.WatchEvent | None:
    """Consume the stream to its end and return the last event (None if there was none)."""
    if not show:
        return last_event(events)
    if sys.stdout.isatty():
        return follow_live(events)
    return follow_plain(events)


def last_event(events: Iterable[pb.WatchEvent]) -> pb.WatchEvent | None:
    tail = deque(events, maxlen=1)
    return tail[0] if tail else None


def progress_fields(event: pb.WatchEvent) -> dict[str, str]:
    job = event.job
    eta = human_duration(event.eta_s) if event.eta_s >= 0 else "?"
    if event.final:
        eta = "-"
    return {
        "state": job.state,
        "bytes": byte_progress(job),
        "items": f"{count_text(job.finished)}/{count_text(job.items_total)} {item_unit(job)}",
        "rate": rate(event),
        "eta": f"ETA {eta}",
    }


def rate(event: pb.WatchEvent) -> str:
    """Items and bytes per second, never negative: work that went back (a file an origin
    made start over) says "restarted" and is measured afresh from there."""
    restarted = "restarted, " if event.restarted else ""
    if event.items_per_s < 0 or event.bytes_per_s < 0:
        return f"rate: {restarted}measuring"
    items = per_second_text(event.items_per_s, item_unit(event.job))
    shown = f"{items}  {rate_text(event.bytes_per_s)}"
    return f"{shown} ({restarted.rstrip(', ')})" if restarted else shown


def bar_position(job: pb.Job) -> tuple[float | None, float]:
    """(total, completed) of the bar: bytes when sizes are known, else items, else unknown."""
    if job.bytes_total_known and job.bytes_total:
        return job.bytes_total, job.bytes_done
    if job.items_total:
        return job.items_total, job.finished
    return None, 0


def follow_live(events: Iterable[pb.WatchEvent]) -> pb.WatchEvent | None:
    from rich.live import Live

    from bulkforge.client.render import console

    last = None
    # Redrawn on each event, not on a timer: nothing changes between events.
    with Live(console=console(), auto_refresh=False) as live:
        for last in events:
            live.update(live_view(last), refresh=True)
    return last


def live_view(event: pb.WatchEvent):
    """Two lines, so it fits 80 columns: name, state, bar, ETA; then amounts and rates."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    from bulkforge.client.render import state_text, styled

    total, completed = bar_position(event.job)
    fields = progress_fields(event)
    share = percent_text(completed, total, digits=0) if total else ""
    top = Table.grid(padding=(0, 1), expand=True)
    top.add_column(no_wrap=True)
    top.add_column(no_wrap=True)
    top.add_column(ratio=1)
    top.add_column(no_wrap=True, justify="right")
    top.add_row(
        styled(event.job.name, "bold"),
        state_text(event.job.state, event.job.tone),
        ProgressBar(total=total, completed=completed),
        styled(f"{share} {fields['eta']}"),
    )
    bottom = styled(f"  {fields['bytes']}   {fields['items']}   {fields['rate']}", "dim")
    tables = [styled(f"  {line}", "dim") for line in table_lines(event.job)]
    return Group(top, bottom, *tables)


def table_lines(job: pb.Job) -> list[str]:
    """A line per table of a job that writes tables: rows done of all, and rows/s now."""
    return [
        f"{table.name}: {count_text(table.rows_done)}/{count_text(table.rows_total)} rows  "
        f"{per_second_text(table.rows_per_s, 'rows')}"
        for table in job.tables
    ]


def plain_line(event: pb.WatchEvent) -> str:
    job = event.job
    fields = progress_fields(event)
    tables = "".join(f"\n  {line}" for line in table_lines(job))
    return (
        f"{time.strftime('%H:%M:%S')} {job.name}: {fields['state']}  {fields['items']}  "
        f"{fields['bytes']}  {fields['rate']}  {fields['eta']}{tables}"
    )


def follow_plain(events: Iterable[pb.WatchEvent]) -> pb.WatchEvent | None:
    last = None
    printed_at = float("-inf")
    for last in events:
        now = time.monotonic()
        if last.final or now - printed_at >= PLAIN_LINE_EVERY_S:
            print(plain_line(last), flush=True)
            printed_at = now
    return last
