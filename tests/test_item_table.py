"""The SQL every item table shares (daemon/item_table.py), against each kind's own table.

In process, on a real store in a temp dir: every declared ItemTable (each ItemRows kind's,
and the downloader's files) is filled with generated rows of two jobs, and each read and
move is compared with what a plain Python account of the same rows says.
"""

import random
from collections import Counter, defaultdict
from pathlib import Path

import apsw
import pytest

from bulkforge.daemon import jobs, registry, store
from bulkforge.daemon.downloader import files
from bulkforge.daemon.item_table import ItemTable
from bulkforge.daemon.pipeline import ItemRows
from bulkforge.daemon.registry import KINDS

# Every kind's item table, by kind name.
TABLES: dict[str, ItemTable] = {
    kind.name: kind.item_table for kind in KINDS if issubclass(kind, ItemRows)
} | {"download": files.FILES}
ITEM_KINDS = sorted(kind.name for kind in KINDS if issubclass(kind, ItemRows))

# What each table needs beside the shared columns, and how a failure listing names a row.
OWN_COLUMNS = {
    "scenes": ("key, url", "'k{n:03d}', 'http://o/{n}'"),
    "clean_zips": (
        "path, series, first_day, last_day, mtime_ns",
        "'z{m:03d}', 's', '2024-01-01', '2024-01-01', 0",
    ),
    "generate_parts": ("table_name, idx, start_row, rows", "'t', {n}, 0, 3"),
    "files": ("url, path", "'http://o/{n}', 'p{n:03d}'"),
}
LISTED = {
    "scenes": lambda n, m: (f"k{n:03d}", f"http://o/{n}"),
    "clean_zips": lambda n, m: (f"z{m:03d}", ""),
    "generate_parts": lambda n, m: (f"t/{n}", ""),
    "files": lambda n, m: (f"p{n:03d}", f"http://o/{n}"),
}
# What bfd showed before the shared SQL, by table: zips are listed in path order (the
# others in input order), a part's throughput is the rows it holds (3 here), and only
# done files and parts count as throughput (failed scenes items and zips count too).
LISTED_BY_PATH = {"clean_zips"}
ROWS_EACH = {"generate_parts": 3}
FINISHED = {"generate_parts": ("done",), "files": ("done",)}
STEPS = ("fetch", "write")
CLASSES = ("timeout", "http_5xx")
BUCKET_MS = 60_000


def rows_of(table: ItemTable, seed: int, count: int = 60) -> list[dict]:
    """Generated rows: every state, sizes known or not, failures of two steps and classes,
    finished times over ten minutes; `m` is a path order unlike the id order."""
    pick = random.Random(seed)
    rows = []
    for n in range(count):
        state = pick.choice(list(table.states))
        failed = state == "failed"
        rows.append(
            {
                "n": n,
                "m": (n * 37) % count,
                "state": str(state),
                "size": pick.choice([None, pick.randrange(1000)])
                if table.table != "clean_zips"
                else pick.randrange(1000),
                "step": pick.choice(STEPS) if failed else None,
                "error_class": pick.choice(CLASSES) if failed else None,
                "error": f"error {pick.randrange(5)}" if failed else None,
                "attempts": pick.randrange(4),
                "finished_at": pick.randrange(600_000)
                if state in ("done", "failed") and pick.random() < 0.9
                else None,
                "retry_at": 1 if failed and pick.random() < 0.5 else None,
            }
        )
    return rows


def insert(conn: apsw.Connection, table: ItemTable, job_id: int, rows: list[dict]) -> list[int]:
    own, values = OWN_COLUMNS[table.table]
    shared = "state, size, step, error_class, error, attempts, finished_at, updated_at"
    retry_at = ", retry_at" if table.table == "files" else ""
    holes = "?, " * 7 + "0" + (", ?" if retry_at else "")
    ids = []
    for row in rows:
        conn.execute(
            f"INSERT INTO {table.table} (job_id, {own}, {shared}{retry_at}) "
            f"VALUES (?, {values.format(**row)}, {holes})",
            (
                job_id,
                *(row[c] for c in ("state", "size", "step", "error_class", "error")),
                row["attempts"],
                row["finished_at"],
                *((row["retry_at"],) if retry_at else ()),
            ),
        )
        ids.append(conn.last_insert_rowid())
    return ids


@pytest.fixture
def conn(tmp_path: Path):
    opened = store.open_connection(tmp_path / "state.db")
    store.apply_schema(opened, kinds=registry.schemas())
    yield opened
    opened.close()


def fill(conn: apsw.Connection, kind: str):
    """(table, job id, its rows, their ids), with a second job's rows beside them."""
    table = TABLES[kind]
    with conn:
        job_id = jobs.insert_job(conn, "mine", kind, {}, "/d/mine")
        other = jobs.insert_job(conn, "other", kind, {}, "/d/other")
        rows = rows_of(table, seed=len(kind))
        ids = insert(conn, table, job_id, rows)
        insert(conn, table, other, rows_of(table, seed=99, count=20))
    return table, job_id, rows, ids


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_counts_by_state(conn: apsw.Connection, kind: str) -> None:
    table, job_id, rows, _ = fill(conn, kind)
    expected: dict[str, tuple[int, int]] = {}
    for row in rows:
        items, size = expected.get(row["state"], (0, 0))
        expected[row["state"]] = (items + 1, size + (row["size"] or 0))
    assert table.counts(conn, job_id) == expected
    assert table.failed(conn, job_id) == expected.get("failed", (0, 0))[0]
    assert table.counts(conn, job_id, "done") == {k: v for k, v in expected.items() if k == "done"}


@pytest.mark.parametrize("kind", ITEM_KINDS)
def test_unfinished_are_pending_and_running(conn: apsw.Connection, kind: str) -> None:
    table, job_id, rows, _ = fill(conn, kind)
    assert table.unfinished(conn, job_id) == sum(
        row["state"] in ("pending", "running") for row in rows
    )


@pytest.mark.parametrize("step", ["", *STEPS])
@pytest.mark.parametrize("kind", sorted(TABLES))
def test_failures_grouped_and_listed(conn: apsw.Connection, kind: str, step: str) -> None:
    table, job_id, rows, _ = fill(conn, kind)
    failed = [r for r in rows if r["state"] == "failed" and step in ("", r["step"])]
    groups: dict[tuple, list] = defaultdict(list)
    for row in failed:
        groups[row["step"], row["error_class"]].append(row["error"])
    expected_groups = sorted(
        ((s, c, len(errors), max(errors)) for (s, c), errors in groups.items()),
        key=lambda g: (-g[2], g[0], g[1]),
    )
    report = table.report(conn, job_id, step, limit=7)
    assert [(g.step, g.error_class, g.count, g.sample) for g in report.groups] == expected_groups
    assert report.total == len(failed)
    order = "m" if table.table in LISTED_BY_PATH else "n"
    listed = sorted(failed, key=lambda r: r[order])[:7]
    retries = table.table == "files"
    assert [
        (f.item, f.url, f.step, f.error_class, f.error, f.attempts, f.retrying)
        for f in report.failures
    ] == [
        (
            *LISTED[table.table](r["n"], r["m"]),
            r["step"],
            r["error_class"],
            r["error"],
            r["attempts"],
            retries and r["retry_at"] is not None,
        )
        for r in listed
    ]
    assert table.report(conn, job_id, step, limit=0).failures == []


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_throughput_buckets(conn: apsw.Connection, kind: str) -> None:
    table, job_id, rows, _ = fill(conn, kind)
    measure = ROWS_EACH.get(table.table, 1)
    finished = FINISHED.get(table.table, ("done", "failed"))
    buckets: Counter = Counter()
    sizes: Counter = Counter()
    for row in rows:
        if row["state"] in finished and row["finished_at"] is not None:
            start = row["finished_at"] // BUCKET_MS * BUCKET_MS
            buckets[start] += measure
            sizes[start] += row["size"] or 0
    assert table.throughput(conn, job_id, BUCKET_MS) == [
        (start, buckets[start], sizes[start]) for start in sorted(buckets)
    ]


# The downloader's files retry and repair by their own rules (not an archived batch's
# files; partials, verifying batches): only the item kinds' are the ItemTable's.
@pytest.mark.parametrize("step", ["", "write"])
@pytest.mark.parametrize("kind", ITEM_KINDS)
def test_retry_sends_the_matching_failed_back_to_pending(
    conn: apsw.Connection, kind: str, step: str
) -> None:
    table, job_id, rows, _ = fill(conn, kind)
    matching = sum(r["state"] == "failed" and step in ("", r["step"]) for r in rows)
    with conn:
        assert table.retry(conn, job_id, step, "") == matching
    assert table.failed(conn, job_id) == sum(r["state"] == "failed" for r in rows) - matching
    resets = " AND ".join(f"{column} IS ?" for column in table.retry_resets) or "1"
    (reset,) = conn.execute(
        f"SELECT count(*) FROM {table.table} WHERE job_id = ? AND state = 'pending' "
        "AND step IS NULL AND error_class IS NULL AND error IS NULL AND finished_at IS NULL "
        f"AND {resets}",
        (job_id, *table.retry_resets.values()),
    ).fetchone()
    assert reset >= matching


@pytest.mark.parametrize("kind", ITEM_KINDS)
def test_repair_and_release_send_running_back_to_pending(conn: apsw.Connection, kind: str) -> None:
    table, job_id, rows, ids = fill(conn, kind)
    running = [i for i, r in zip(ids, rows, strict=True) if r["state"] == "running"]
    with conn:
        table.release(conn, ids[:10])  # those of the ten still running; no other moves
    released = sum(r["state"] == "running" for r in rows[:10])
    assert table.counts(conn, job_id, "running").get("running", (0, 0))[0] == (
        len(running) - released
    )
    (others,) = conn.execute(
        f"SELECT count(*) FROM {table.table} WHERE job_id != ? AND state = 'running'", (job_id,)
    ).fetchone()
    with conn:
        repaired = dict(table.repair(conn))
    assert repaired == {
        name: count
        for name, count in (("mine", len(running) - released), ("other", others))
        if count
    }
    assert table.counts(conn, job_id, "running") == {}
