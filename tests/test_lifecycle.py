"""A job's life as an operator drives it: names freed by `remove`, hints that work."""

import re
import sqlite3
from pathlib import Path

from conftest import Daemon, make_dataset, manifest_rows, wait_until, write_manifest
from origin import Fault, FaultKind, Origin

HINTED = re.compile(r"`bfctl ([a-z]+) ([A-Za-z0-9._-]+)`")


def submit(daemon: Daemon, name: str, manifest: Path, dest: Path) -> None:
    done = daemon.bfctl(
        "submit", "download", name, "--manifest", str(manifest), "--dest", str(dest)
    )
    assert done.returncode == 0, done.stderr


def store(daemon: Daemon) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{daemon.root / 'state' / 'bulkforge.db'}?mode=ro", uri=True)


def job_id(daemon: Daemon, name: str) -> int:
    with store(daemon) as db:
        return db.execute("SELECT id FROM jobs WHERE name = ?", (name,)).fetchone()[0]


def rows_of(daemon: Daemon, job_id: int) -> dict[str, int]:
    """Rows still naming the job, per table (read straight from the store)."""
    with store(daemon) as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        counts = {
            "jobs": db.execute("SELECT count(*) FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        }
        for table in tables:
            columns = {c[1] for c in db.execute(f"PRAGMA table_info({table})")}
            if "job_id" in columns:
                query = f"SELECT count(*) FROM {table} WHERE job_id = ?"
                counts[table] = db.execute(query, (job_id,)).fetchone()[0]
        counts["segments"] = db.execute(
            "SELECT count(*) FROM segments WHERE file_id NOT IN (SELECT id FROM files)"
        ).fetchone()[0]
    return {table: n for table, n in counts.items() if n}


def test_remove_frees_the_name_and_keeps_the_files(daemon, tmp_path):
    dataset = make_dataset(3, 4096, seed=31)
    last = "set/2/file-00002.bin"
    stall = {last: Fault(FaultKind.STALL, after_bytes=10, seconds=60)}
    with Origin(dataset.files, stall) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        other = write_manifest(tmp_path / "other.jsonl", manifest_rows(origin, dataset)[:2])
        dest = tmp_path / "dest"
        submit(daemon, "one", manifest, dest)
        wait_until(lambda: origin.requests(last), what="the stalled request")
        one = job_id(daemon, "one")
        # Running: remove is refused and says how to end it; nothing is forgotten.
        running = daemon.bfctl("remove", "one")
        assert running.returncode == 1 and "`bfctl cancel one` first" in running.stderr
        # Another submit of the name points at commands that free it.
        clash = daemon.bfctl(
            "submit", "download", "one", "--manifest", str(other), "--dest", str(dest)
        )
        assert clash.returncode == 1
        hinted = set(HINTED.findall(clash.stderr))
        assert hinted == {("remove", "one"), ("cancel", "one")}, clash.stderr
        assert daemon.bfctl_json("cancel", "one")["state"] == "cancelled"
        kept = {
            path: (dest / path).read_bytes()
            for path in dataset.files
            if path != last and (dest / path).exists()
        }
        assert kept, "no file finished before the cancel"

        removed = daemon.bfctl_json("remove", "one")
        assert removed == {"removed": "one", "state": "cancelled", "dest": str(dest), "items": 3}
        assert rows_of(daemon, one) == {}
        assert {path: (dest / path).read_bytes() for path in kept} == kept
        assert daemon.bfctl("status", "one").returncode == 1
        assert daemon.bfctl("remove", "one").returncode == 1  # once only
        assert daemon.bfctl_json("list")["jobs"] == []

        # The name is free: the other parameters are taken now, and the job runs.
        submit(daemon, "one", other, dest)
        assert daemon.wait_state("one", {"completed"}).state == "completed"
    for path in list(dataset.files)[:2]:
        assert (dest / path).read_bytes() == dataset.files[path]


def test_every_hint_names_a_command_that_works_in_that_state(daemon, tmp_path):
    """Refused verbs in each state name commands; each one is run in that state."""
    dataset = make_dataset(2, 2048, seed=32)
    faults = {
        "missing.bin": Fault(FaultKind.STATUS_404),
        "slow.bin": Fault(FaultKind.STALL, after_bytes=10, seconds=60),
    }
    files = {**dataset.files, "slow.bin": b"s" * 1000}
    with Origin(files, faults) as origin:
        ok = write_manifest(tmp_path / "ok.jsonl", manifest_rows(origin, dataset))
        bad = write_manifest(tmp_path / "bad.jsonl", [{"url": origin.url_for("missing.bin")}])
        slow = write_manifest(tmp_path / "slow.jsonl", [{"url": origin.url_for("slow.bin")}])
        submit(daemon, "done", ok, tmp_path / "a")
        submit(daemon, "broken", bad, tmp_path / "b")
        submit(daemon, "held", slow, tmp_path / "c")
        submit(daemon, "dropped", slow, tmp_path / "d")
        daemon.wait_state("done", {"completed"})
        daemon.wait_state("broken", {"failed"})
        wait_until(lambda: len(origin.requests("slow.bin")) >= 2, what="both slow requests")
        assert daemon.bfctl_json("pause", "held")["state"] == "paused"
        assert daemon.bfctl_json("cancel", "dropped")["state"] == "cancelled"
        # name: (its state, the verbs that state refuses)
        cases = {
            "done": ("completed", ("pause", "resume", "cancel", "continue")),
            "broken": ("failed", ("pause", "resume", "cancel", "continue")),
            "held": ("paused", ("pause", "continue")),
            "dropped": ("cancelled", ("pause", "resume", "cancel", "continue", "retry")),
        }
        for name, (state, verbs) in cases.items():
            hinted: set[tuple[str, str]] = set()
            for verb in verbs:
                refused = daemon.bfctl(verb, name)
                assert refused.returncode == 1, (verb, state, refused.stdout)
                assert "Traceback" not in refused.stderr
                hinted |= set(HINTED.findall(refused.stderr))
            assert hinted, f"no hint names a command for a {state} job"
            # remove last: it ends the job's life
            for command, named in sorted(hinted, key=lambda c: c[0] == "remove"):
                assert named == name
                daemon.wait_state(name, {state}, timeout=30)
                done = daemon.bfctl(command, named)
                assert done.returncode == 0, (
                    f"hint `bfctl {command} {named}` ({state}): {done.stderr}"
                )
