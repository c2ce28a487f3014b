"""The daemon's life: one instance per state dir, clean drains, systemd notify, fatal errors."""

import json
import socket
import stat
import subprocess
from pathlib import Path

import apsw
import grpc
import pytest
from conftest import (
    FAST_RETRIES,
    Daemon,
    make_dataset,
    manifest_rows,
    run_bfctl,
    wait_until,
    write_manifest,
)
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from origin import Fault, FaultKind, Origin

from bulkforge.daemon import registry, store
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def test_second_daemon_on_the_same_state_dir_is_refused(daemon: Daemon, make_daemon):
    rival = make_daemon(root=daemon.root / "rival")
    rival.state_dir = daemon.state_dir
    done = subprocess.run(rival.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "another bfd" in done.stderr and str(daemon.state_dir) in done.stderr
    assert "Traceback" not in done.stderr
    assert daemon.stub.List(pb.ListRequest(), timeout=5).jobs == []


def test_second_daemon_never_steals_the_first_ones_socket(daemon: Daemon, make_daemon):
    rival = make_daemon(root=daemon.root / "rival")
    rival.socket = daemon.socket
    done = subprocess.run(rival.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "another bfd" in done.stderr and str(daemon.socket) in done.stderr
    assert daemon.socket.exists()
    assert daemon.stub.List(pb.ListRequest(), timeout=5).jobs == []


def test_socket_is_group_only_and_health_and_reflection_answer(daemon: Daemon):
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        answers = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {
            service.name for answer in answers for service in answer.list_services_response.service
        }
    assert {"bulkforge.v1.Bulkforge", "grpc.health.v1.Health"} <= names


def test_sigterm_drains_in_flight_transfers_and_a_restart_finishes(make_daemon, tmp_path):
    dataset = make_dataset(6, 400_000, seed=5)
    # Stalls, read timeout and drain timeout all outlast stop()'s wait: bfd can only stop
    # in time by interrupting its transfers, never by waiting them out.
    stall = {"*": Fault(FaultKind.STALL, after_bytes=100_000, seconds=3600)}
    daemon = make_daemon(*FAST_RETRIES, "--read-timeout", "3600", "--drain-timeout", "3600")
    with Origin(dataset.files, stall) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.start()
        daemon.submit("drain", manifest, tmp_path / "dest")
        wait_until(lambda: len(origin.log.snapshot()) >= 6 or _stalled(origin))
        assert daemon.stop() == 0
        log = daemon.log.read_text()
        assert "stopping: draining" in log and "bfd stopped (exit 0)" in log
        origin.clear_faults()
        daemon.start()
        assert "was downloading at shutdown" not in daemon.log.read_text()
        job = daemon.wait_state("drain", {"completed", "failed"})
    assert job.state == "completed"
    for name, data in dataset.files.items():
        assert (tmp_path / "dest" / name).read_bytes() == data


def _stalled(origin: Origin) -> bool:
    return any(record.fault == "stall" for record in origin.log.snapshot())


def test_sd_notify_ready_watchdog_and_stopping(make_daemon, tmp_path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(Path(make_daemon().socket_dir) / "notify")
    listener.bind(address)
    listener.settimeout(20)
    daemon = make_daemon()
    try:
        daemon.start(env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        messages = _receive_until(listener, "WATCHDOG=1")
        assert any("READY=1" in m and "STATUS=" in m for m in messages)
        assert daemon.stop() == 0
        assert any("STOPPING=1" in m for m in _receive_until(listener, "STOPPING=1"))
    finally:
        listener.close()


def _receive_until(listener: socket.socket, wanted: str) -> list[str]:
    messages = []
    while not any(wanted in m for m in messages):
        messages.append(listener.recv(4096).decode())
    return messages


def test_json_logs_under_systemd(make_daemon):
    daemon = make_daemon("--log-format", "json")
    daemon.start()
    assert daemon.stop() == 0
    lines = [line for line in daemon.log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]
    assert any("ready on" in record["text"] for record in records)


def test_a_full_state_disk_stops_the_daemon_with_an_error(make_daemon, tmpfs, tmp_path):
    daemon = make_daemon(root=tmp_path / "d")
    daemon.state_dir = tmpfs("tiny", "600k") / "state"
    daemon.start()
    rows = [
        {"url": f"http://127.0.0.1:9/{'x' * 100}/{index}.bin", "size": index}
        for index in range(20_000)
    ]
    manifest = write_manifest(tmp_path / "big.jsonl", rows)
    answer = daemon.bfctl(
        "submit", "download", "big", "--manifest", str(manifest), "--dest", str(tmp_path / "dest")
    )
    assert answer.returncode in (1, 3)
    assert "Traceback" not in answer.stderr
    assert daemon.proc.wait(30) == 74
    assert "I/O" in daemon.log.read_text() or "full" in daemon.log.read_text().lower()


def seed_store(daemon, *statements: str) -> None:
    """The store before bfd's first start, holding rows as a crash or a newer bfd left them."""
    daemon.state_dir.mkdir(parents=True)
    conn = store.open_connection(daemon.state_dir / "bulkforge.db")
    store.apply_schema(conn, kinds=registry.schemas())
    with conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def test_boot_repair_moves_every_in_flight_row_and_logs_it(make_daemon):
    daemon = make_daemon()
    seed_store(
        daemon,
        "INSERT INTO jobs (id, name, kind, state, spec, dest, created_at, updated_at) "
        "VALUES (1, 'items', 'scenes', 'running', '{}', '/tmp', 0, 0)",
        "INSERT INTO scenes (job_id, key, state, updated_at) VALUES (1, 'token-7', 'running', 0)",
        "INSERT INTO files (job_id, url, path, state, updated_at) "
        "VALUES (1, 'http://127.0.0.1:9/a', 'a', 'verifying', 0)",
    )
    daemon.start()
    assert daemon.stop() == 0
    log = daemon.log.read_text()
    # Items are counted per job: a crash mid-shard leaves thousands of them running.
    assert "job items: 1 item(s) were running at shutdown -> pending" in log
    assert "job items file a was verifying at shutdown -> pending" in log
    conn = apsw.Connection(str(daemon.state_dir / "bulkforge.db"))
    states = conn.execute("SELECT state FROM scenes UNION ALL SELECT state FROM files").fetchall()
    conn.close()
    assert states == [("pending",), ("pending",)]


def test_a_job_of_a_kind_this_bfd_does_not_run_lists_and_is_refused(make_daemon):
    """A newer bfd may have stored a kind this one lacks: shown, never touched, never INTERNAL."""
    daemon = make_daemon()
    seed_store(
        daemon,
        # The schema lists no kinds (the registry does): a newer bfd's kind is stored as is.
        "INSERT INTO jobs (name, kind, state, spec, dest, created_at, updated_at) "
        "VALUES ('later', 'transcode', 'running', '{}', '/tmp', 0, 0)",
    )
    daemon.start()
    listed = daemon.bfctl_json("list")
    assert [(job["name"], job["kind"], job["state"]) for job in listed["jobs"]] == [
        ("later", "transcode", "running")
    ]
    paused = daemon.bfctl("pause", "later")
    assert paused.returncode == 1
    assert "transcode job, which this bfd does not run" in paused.stderr
    assert daemon.bfctl_json("status", "later")["state"] == "running"
    assert daemon.stop() == 0


def store_before_0013(path: Path, tmp_path: Path) -> apsw.Connection:
    """A store as the bfd whose last migration was 0012 left it."""
    older = tmp_path / "migrations_12"
    older.mkdir()
    for migration in store.migrations()[:12]:
        (older / f"{migration.version:04d}_{migration.name}.sql").write_text(migration.sql)
    conn = store.open_connection(path)
    baseline = store.migrations()[0]
    with conn:
        conn.execute(baseline.sql)
        conn.execute("INSERT INTO schema_migrations VALUES (1, ?, 0)", (baseline.name,))
    assert store.apply_schema(conn, older) == 12
    return conn


def newer_kind_tables(daemon, tmp_path: Path) -> str:
    seed_store(daemon)
    conn = store.open_connection(daemon.state_dir / "bulkforge.db")
    kind, tables = registry.schemas()[0]
    newer = tables.migrations[-1].version + 1
    with conn:
        conn.execute("INSERT INTO kind_migrations VALUES (?, ?, 'later', 0)", (kind, newer))
    conn.close()
    return f"{kind} tables are at schema version {newer}, newer than this bfd knows"


def orphan_before_upgrade(daemon, tmp_path: Path) -> str:
    daemon.state_dir.mkdir(parents=True)
    conn = store_before_0013(daemon.state_dir / "bulkforge.db", tmp_path)
    conn.execute("PRAGMA foreign_keys = OFF")  # as a tool other than bfd could have
    with conn:
        conn.execute("INSERT INTO batches (job_id, idx, updated_at) VALUES (99, 0, 0)")
    conn.close()
    return "rows whose parent is gone (table, rowid, parent): [('batches', 1, 'jobs')]"


@pytest.mark.slow
@pytest.mark.parametrize("make_store", [newer_kind_tables, orphan_before_upgrade])
def test_bfd_refuses_a_store_it_cannot_bring_up_and_leaves_it_as_it_was(
    make_daemon, tmp_path, make_store
):
    daemon = make_daemon()
    reason = make_store(daemon, tmp_path)
    db = daemon.state_dir / "bulkforge.db"
    before = subprocess.run(["sqlite3", db, ".dump"], capture_output=True, text=True).stdout
    ran = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=120)
    said = ran.stdout + ran.stderr
    assert ran.returncode == 1, said
    assert "refusing the state store" in said and reason in said, said
    assert "Traceback" not in said
    after = subprocess.run(["sqlite3", db, ".dump"], capture_output=True, text=True).stdout
    assert after == before


def test_bfctl_demo_runs_the_main_job_end_to_end() -> None:
    """README's first command: a local origin, a bfd of its own, files downloaded and verified."""
    done = run_bfctl("demo", "--files", "20", "--size", "8192", timeout=120)
    assert done.returncode == 0, done.stderr
    assert "demo ok: 20 files" in done.stdout and "Traceback" not in done.stderr
