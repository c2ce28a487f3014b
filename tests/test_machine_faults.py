"""Machine faults: the disks under bfd fill up, turn read-only or fail their fsyncs mid-run.

Each fault happens to a real filesystem the test controls (CI runs as root): a small
tmpfs, or ext4 on a loop device. This kernel may have no device-mapper, so a loop
device plays dm's `error` target: the filesystem is frozen (as `dmsetup suspend`
does), its image saved, the backing file cut to nothing and the loop device told its
new size (as `dmsetup load … error; dmsetup resume`): from then on every write the
device gets fails with EIO, while the page cache still takes writes. Healing puts the
saved image back (the device's contents as they were when it failed) and fscks it.

Whatever the fault, bfd must stop by itself with one clear log line and exit 74,
having told its clients nothing it did not persist; once the fault clears, the next
bfd repairs and finishes the job byte for byte.
"""

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import grpc
import pyarrow.parquet as pq
import pytest
from binance_data import write_trades_zip
from conftest import (
    FAST_RETRIES,
    Daemon,
    Dataset,
    make_dataset,
    manifest_rows,
    unavailable,
    wait_until,
    write_manifest,
)
from origin import Fault, FaultKind, Origin
from test_generate import SPEC
from test_scenes import items, write_input

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

EXIT_IO_ERROR = 74
# Not a speed bound: only how long a hung bfd may take before the test says so.
HANG_S = 120
# The job is slowed so the fault lands mid-run; it is injected once this many are done.
BANDWIDTH = "3MB/s"
DONE_BEFORE_FAULT = 8
JOB = "faulty"


def need(refusal: str | None) -> None:
    """A capability the test needs: `unavailable` (a skip saying why; in CI a failure)."""
    if refusal is not None:
        unavailable(refusal)


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True)


def refused(done: subprocess.CompletedProcess, what: str) -> str | None:
    return f"{what} was refused: {done.stderr.strip()}" if done.returncode else None


def undo(*command: str) -> None:
    """A step of a teardown: whatever it meets, the steps after it still run."""
    with contextlib.suppress(OSError):
        run(*command)


def must(*command: str) -> str:
    """A step of a fault or of its repair: it failing is a failure of the test."""
    done = run(*command)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stderr.strip()}"
    return done.stdout.strip()


@dataclass
class LoopDisk:
    """ext4 on a loop device over a sparse image, mounted at point."""

    image: Path
    point: Path
    device: str
    options: str

    @property
    def saved(self) -> Path:
        return self.image.with_suffix(".saved")


class Machine:
    """Filesystems a test mounts and breaks; all of them undone at teardown, failed or not."""

    def __init__(self, root: Path):
        self._root = root
        self._mounts: list[Path] = []
        self._loops: list[str] = []

    @staticmethod
    def refusal(*tools: str) -> str | None:
        """Why filesystems cannot be made here with these tools, or None."""
        if os.geteuid() != 0:
            return "mounting filesystems needs root"
        missing = [tool for tool in ("mount", *tools) if not shutil.which(tool)]
        return f"this machine has no {', '.join(missing)}" if missing else None

    def tmpfs(self, name: str, size: str) -> Path:
        need(self.refusal())
        point = self._root / name
        point.mkdir()
        mounted = run("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point))
        need(refused(mounted, "mounting a tmpfs"))
        self._mounts.append(point)
        return point

    def ext4(self, name: str, journal: bool = True, errors: str = "remount-ro") -> LoopDisk:
        """A 64 MiB ext4 on a loop device; without a journal, failed writes leave it rw."""
        need(self.refusal("losetup", "mkfs.ext4", "e2fsck", "fsfreeze"))
        image, point = self._root / f"{name}.img", self._root / name
        point.mkdir()
        with image.open("wb") as handle:
            handle.truncate(64 * 2**20)
        attached = run("losetup", "--find", "--show", str(image))
        need(refused(attached, "attaching a loop device"))
        device = attached.stdout.strip()
        self._loops.append(device)
        features = [] if journal else ["-O", "^has_journal"]
        must("mkfs.ext4", "-q", "-E", "nodiscard", *features, device)
        disk = LoopDisk(image, point, device, f"errors={errors}")
        mounted = run("mount", "-o", disk.options, device, str(point))
        need(refused(mounted, "mounting ext4 on a loop device"))
        self._mounts.append(point)
        return disk

    def fail_device(self, disk: LoopDisk) -> None:
        """From now on every write to disk's device fails with EIO (dm's `error` target)."""
        must("fsfreeze", "--freeze", str(disk.point))
        try:
            must("cp", "--sparse=always", str(disk.image), str(disk.saved))
            os.truncate(disk.image, 0)
            must("losetup", "--set-capacity", disk.device)
        finally:
            must("fsfreeze", "--unfreeze", str(disk.point))

    def turn_read_only(self, disk: LoopDisk) -> None:
        """An ext4 error: mounted errors=remount-ro, the filesystem turns read-only at once."""
        trigger = Path("/sys/fs/ext4") / Path(disk.device).name / "trigger_fs_error"
        need(None if trigger.exists() else f"this kernel has no {trigger}")
        trigger.write_text("a machine-fault test turns this filesystem read-only\n")

    def repair(self, disk: LoopDisk) -> None:
        """The operator's repair: unmount, the device back if it failed, fsck, mount.

        A bfd still running may be probing the disk (a file open for a moment): umount
        is tried again while the mount is busy.
        """
        deadline = time.monotonic() + HANG_S
        while (unmounted := run("umount", str(disk.point))).returncode != 0:
            assert time.monotonic() < deadline, f"umount: {unmounted.stderr.strip()}"
            time.sleep(0.2)
        if disk.saved.exists():
            must("losetup", "--detach", disk.device)
            self._loops.remove(disk.device)
            os.replace(disk.saved, disk.image)
            disk.device = must("losetup", "--find", "--show", str(disk.image))
            self._loops.append(disk.device)
        fsck = run("e2fsck", "-f", "-y", disk.device)
        assert fsck.returncode in (0, 1), fsck.stdout  # 1: errors corrected
        must("mount", "-o", disk.options, disk.device, str(disk.point))

    def close(self) -> None:
        for point in reversed(self._mounts):
            undo("fsfreeze", "--unfreeze", str(point))  # a frozen one would hang what is left
            undo("umount", "--lazy", str(point))
        for device in self._loops:
            undo("losetup", "--detach", device)  # detached once its last user lets go


# What can go wrong with a disk under a running bfd, beyond filling up.
FAULTS = ["filesystem turns read-only", "device fails"]


def breakable_disk(machine: Machine, name: str, fault: str) -> tuple[LoopDisk, Callable]:
    """A disk, and what breaks it.

    A device whose writes fail is played without ext4's journal: with one, ext4 aborts
    at the first failed write and turns read-only, and no fsync ever returns EIO.
    """
    if fault == "device fails":
        return machine.ext4(name, journal=False, errors="continue"), machine.fail_device
    return machine.ext4(name), machine.turn_read_only


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    made = Machine(tmp_path)
    yield made
    made.close()


# -- the run each fault lands in ---------------------------------------------------------


@dataclass
class Run:
    daemon: Daemon
    dataset: Dataset
    dest: Path
    # The most files any Status answer called done: what the client was told.
    told_done: int = 0

    def poll(self) -> None:
        try:
            job = self.daemon.stub.Status(pb.JobRef(name=JOB), timeout=5)
        except grpc.RpcError:
            return  # stopping: it tells nothing more
        self.told_done = max(self.told_done, job.counts["done"])


@contextlib.contextmanager
def download_run(make_daemon, tmp_path: Path, state: Path, dest: Path) -> Iterator[Run]:
    """bfd with its state dir under state, downloading a slowed job into dest."""
    dataset = make_dataset(120, 48_000, vary=32_000, seed=16)
    daemon = make_daemon(*FAST_RETRIES, "--bandwidth", BANDWIDTH, root=tmp_path / "bfd")
    daemon.state_dir = state / "state"
    with Origin(dataset.files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.start()
        daemon.submit(JOB, manifest, dest)
        yield Run(daemon, dataset, dest)


def wait_mid_run(run_: Run) -> None:
    """Until some files are done and the job still runs: the fault lands mid-run."""
    deadline = time.monotonic() + HANG_S
    while run_.told_done < DONE_BEFORE_FAULT:
        assert time.monotonic() < deadline, f"no progress:\n{run_.daemon.log_tail()}"
        run_.poll()
        time.sleep(0.05)
    job = run_.daemon.stub.Status(pb.JobRef(name=JOB), timeout=10)
    assert job.state == "running", f"the job ended before the fault: {dict(job.counts)}"


def expect_fatal_stop(run_: Run) -> str:
    """bfd stops by itself: exit 74 and one critical line, no traceback. Returns the line."""
    daemon = run_.daemon
    deadline = time.monotonic() + HANG_S
    while daemon.proc.poll() is None:
        assert time.monotonic() < deadline, f"bfd did not stop:\n{daemon.log_tail()}"
        run_.poll()
        time.sleep(0.05)
    log = daemon.log.read_text()
    assert daemon.proc.returncode == EXIT_IO_ERROR, daemon.log_tail()
    assert "Traceback" not in log, log
    critical = [line for line in log.splitlines() if "CRITICAL" in line]
    assert len(critical) == 1, "\n".join(critical)
    return critical[0]


def expect_nothing_told_was_lost(run_: Run) -> None:
    """The store as the fault left it: each file it calls done is whole, none told is missing."""
    with contextlib.closing(run_.daemon.read_store()) as conn:
        done = [path for (path,) in conn.execute("SELECT path FROM files WHERE state = 'done'")]
    assert len(done) >= run_.told_done, f"told {run_.told_done} done, {len(done)} persisted"
    for path in done:
        assert (run_.dest / path).read_bytes() == run_.dataset.files[path], path


def expect_finished_after_restart(run_: Run) -> None:
    daemon = run_.daemon
    logged = len(daemon.log.read_text())
    daemon.start()
    job = daemon.wait_state(JOB, {"completed", "failed"}, timeout=HANG_S)
    assert job.state == "completed", f"{dict(job.counts)}\n{daemon.log_tail()}"
    assert dict(job.counts) == {"done": len(run_.dataset.files)}
    assert daemon.stop() == 0, daemon.log_tail()
    assert f"job {JOB} was running at shutdown" in daemon.log.read_text()[logged:]
    for name, data in run_.dataset.files.items():
        assert (run_.dest / name).read_bytes() == data, name
    assert not list(run_.dest.rglob("*.partial"))


# -- the state dir's disk ----------------------------------------------------------------


@pytest.mark.slow
def test_the_state_disk_filling_up_stops_bfd_and_a_restart_finishes(machine, make_daemon, tmp_path):
    disk = machine.tmpfs("state-disk", "8m")
    with download_run(make_daemon, tmp_path, disk, tmp_path / "dest") as run_:
        wait_mid_run(run_)
        wal = run_.daemon.state_dir / "bulkforge.db-wal"
        # The WAL has not wrapped yet, so the next commit needs space the disk lacks.
        assert wal.stat().st_size < 1000 * 4096
        filler = disk / "filler"
        # Unbuffered: nothing is left to flush (and fail) when the file is closed.
        with filler.open("wb", buffering=0) as handle, contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
        line = expect_fatal_stop(run_)
        assert f"{run_.daemon.state_dir / 'bulkforge.db'}: database or disk is full" in line
        filler.unlink()
        expect_nothing_told_was_lost(run_)
        expect_finished_after_restart(run_)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
def test_an_io_error_of_the_state_disk_stops_bfd_and_a_restart_finishes(
    machine, make_daemon, tmp_path, fault
):
    """SQLite's next write is refused (read-only), or its next fsync returns EIO."""
    disk, break_it = breakable_disk(machine, "state-disk", fault)
    with download_run(make_daemon, tmp_path, disk.point, tmp_path / "dest") as run_:
        wait_mid_run(run_)
        break_it(disk)
        line = expect_fatal_stop(run_)
        assert f"{run_.daemon.state_dir / 'bulkforge.db'}: disk I/O error" in line
        machine.repair(disk)
        expect_nothing_told_was_lost(run_)
        expect_finished_after_restart(run_)


# -- a data disk: it holds its jobs, not the node -----------------------------------------
#
# For every kind: a job writing to a disk that fails mid-run is held (paused, its message,
# `bfctl system` and /metrics naming the path and the error), nothing of it is failed and
# nothing it was told done is lost; the same kind's job and another kind's job on a healthy
# disk finish meanwhile; bfd runs on with a sound store. Once the disk is repaired the held
# job goes on (by itself, found by the probe, or after `bfctl resume`) and ends with the
# bytes of the undisturbed run beside it.

HELD = "held: the disk failed"
SCENE_ITEMS, SCENE_SHARD, SCENE_STALL_S = 240, 10, 0.1
SERIES, SERIES_ROWS = 6, 60_000
GENERATED_ROWS, GENERATED_CHUNK = 400_000, 20_000
DOWNLOADED = make_dataset(120, 48_000, vary=32_000, seed=16)


@dataclass
class KindRun:
    """What a job of one kind needs: its submit, and the outputs compared at the end."""

    submit: Callable[[Daemon, str, Path], None]
    outputs: Callable[[Path], dict[str, str]]


def digests(root: Path, pattern: str = "**/*") -> dict[str, str]:
    """Every file's sha256, but the dest's job marker (it names the job, which differs)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.glob(pattern))
        if p.is_file() and p.name != ".bulkforge-job"
    }


def shard_outputs(dest: Path) -> dict[str, str]:
    """Every item's bytes and index row, whichever shard holds it.

    Which shard an item lands in, and in what order, follows the fetches' timing (an
    undisturbed run differs from itself there); what each item holds does not.
    """
    found = {}
    for shard in sorted(dest.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                data = tar.extractfile(member).read()
                found[member.name] = hashlib.sha256(data).hexdigest()
    for index in sorted(dest.glob("[0-9]*.parquet")):
        for row in pq.read_table(index).to_pylist():
            found[f"index {row['key']}"] = json.dumps(row, sort_keys=True, default=str)
    assert found, f"no shard under {dest}"
    return found


class Inputs:
    """The inputs of every kind, made once per test; origins served while it runs."""

    def __init__(self, root: Path, stack: contextlib.ExitStack):
        root.mkdir()
        self.root = root
        self.files = stack.enter_context(Origin(DOWNLOADED.files))
        scene_files = items(SCENE_ITEMS)
        stall = Fault(FaultKind.STALL, after_bytes=1, seconds=SCENE_STALL_S)
        scenes = stack.enter_context(Origin(scene_files, faults={"*": stall}))
        self.manifest = write_manifest(root / "m.jsonl", manifest_rows(self.files, DOWNLOADED))
        self.scenes = write_input(root / "scenes.parquet", scenes, list(scene_files))
        self.zips = root / "zips"
        for n in range(SERIES):
            for d in range(2):
                day = date(2024, 5, 1) + timedelta(days=d)
                write_trades_zip(self.zips, "spot", f"{chr(65 + n) * 3}USDT", day,
                                 1 + d * SERIES_ROWS, SERIES_ROWS, seed=n + d)  # fmt: skip
        self.spec = root / "school.toml"
        self.spec.write_text(SPEC)

    def kinds(self) -> dict[str, KindRun]:
        def download(daemon: Daemon, name: str, dest: Path) -> None:
            daemon.submit(name, self.manifest, dest)

        def scenes(daemon: Daemon, name: str, dest: Path) -> None:
            daemon.bfctl_json(
                "submit", "scenes", name, "--input", str(self.scenes), "--key", "key",
                "--url", "url", "--shard-size", str(SCENE_SHARD), "--dest", str(dest),
            )  # fmt: skip

        def clean(daemon: Daemon, name: str, dest: Path) -> None:
            daemon.bfctl_json("submit", "clean", name, "--input", str(self.zips),
                              "--dest", str(dest))  # fmt: skip

        def generate(daemon: Daemon, name: str, dest: Path) -> None:
            daemon.bfctl_json(
                "submit", "generate", name, "--spec", str(self.spec), "--dest", str(dest),
                "--rows", str(GENERATED_ROWS), "--chunk-rows", str(GENERATED_CHUNK),
                "--seed", "5",
            )  # fmt: skip

        return {
            "download": KindRun(download, digests),
            "scenes": KindRun(scenes, shard_outputs),
            "clean": KindRun(clean, lambda dest: digests(dest, "market=*/**/*")),
            "generate": KindRun(generate, digests),
        }


def metric(daemon: Daemon, name: str, labels: str) -> float:
    address = daemon.bfctl_json("system")["metrics_address"]
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name}{{{labels}}} in:\n{text}")


def wait_started(daemon: Daemon, name: str) -> None:
    """Until the job has finished some items and is still running: the fault lands mid-run."""
    deadline = time.monotonic() + HANG_S
    while True:
        job = daemon.stub.Status(pb.JobRef(name=name), timeout=10)
        assert job.state in ("queued", "running"), f"{name} {job.state} before the fault"
        if job.finished >= 2:
            return
        assert time.monotonic() < deadline, f"{name} made no progress:\n{daemon.log_tail()}"
        time.sleep(0.02)


def wait_held(daemon: Daemon, name: str) -> pb.Job:
    deadline = time.monotonic() + HANG_S
    while True:
        job = daemon.stub.Status(pb.JobRef(name=name), timeout=10)
        if job.state == "paused" and job.message.startswith(HELD):
            return job
        assert job.state in ("queued", "running"), f"{name} {job.state}: {job.message}"
        assert time.monotonic() < deadline, f"{name} not held:\n{daemon.log_tail()}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("kind", ["download", "scenes", "clean", "generate"])
def test_a_failed_data_disk_holds_its_jobs_and_they_finish_once_it_is_back(
    machine, make_daemon, tmp_path, kind, fault
):
    disk, break_it = breakable_disk(machine, "dest-disk", fault)
    failing, healthy = disk.point / "out", tmp_path / "healthy"
    other = "generate" if kind != "generate" else "download"
    with contextlib.ExitStack() as stack:
        kinds = Inputs(tmp_path / "inputs", stack).kinds()
        daemon = make_daemon(*FAST_RETRIES, "--bandwidth", BANDWIDTH, "--metrics",
                             "127.0.0.1:0", "--data-root", str(tmp_path)).start()  # fmt: skip
        kinds[kind].submit(daemon, "held", failing)
        wait_started(daemon, "held")
        break_it(disk)
        kinds[kind].submit(daemon, "same", healthy / "same")
        kinds[other].submit(daemon, "other", healthy / "other")
        job = wait_held(daemon, "held")

        # Held, saying where and why, and nothing of it failed.
        assert str(failing) in job.message, job.message
        assert "Input/output error" in job.message or "Read-only" in job.message, job.message
        assert "failed" not in job.counts, dict(job.counts)
        holds = {h["job"]: h["reason"] for h in daemon.bfctl_json("system")["holds"]}
        assert holds.get("held", "").startswith(HELD), holds
        assert metric(daemon, "bulkforge_held_jobs_by_reason", 'reason="disk_failed"') == 1
        # The other disk's jobs go on, and bfd with them.
        for name in ("same", "other"):
            ended = daemon.wait_state(name, {"completed", "failed"}, timeout=HANG_S)
            assert ended.state == "completed", f"{name}: {ended.message}\n{daemon.log_tail()}"
        assert daemon.proc.poll() is None
        with contextlib.closing(daemon.read_store()) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert daemon.stub.Status(pb.JobRef(name="held"), timeout=10).state == "paused"
        if fault == "device fails":
            # A submit that writes there (a generate job's SQL schema) is refused, saying why.
            refused = daemon.bfctl(
                "submit", "generate", "late", "--spec", str(tmp_path / "inputs" / "school.toml"),
                "--rows", "100", "--format", "sql", "--dest", str(disk.point / "late"),
            )  # fmt: skip
            assert refused.returncode == 1 and "the disk failed" in refused.stderr, refused
            assert "Traceback" not in daemon.log.read_text()
            # Resumed while the disk still fails: its next write holds it again, failing nothing.
            assert daemon.bfctl("resume", "held").returncode == 0
            again = wait_held(daemon, "held")
            assert "failed" not in again.counts, dict(again.counts)
        if fault == "filesystem turns read-only":
            # A bfd restarted meanwhile finds the held job by its message, and probes again.
            assert daemon.stop() == 0, daemon.log_tail()
            daemon.start()
            holds = {h["job"]: h["reason"] for h in daemon.bfctl_json("system")["holds"]}
            assert holds.get("held", "").startswith(HELD), holds
            # Started again with the disk unmounted (its bare mount point, on another
            # filesystem, holding an empty dest): the job waits for its own disk.
            assert daemon.stop() == 0, daemon.log_tail()
            must("umount", str(disk.point))
            failing.mkdir()
            daemon.start()
            wait_until(
                lambda: "is no longer on the filesystem that failed" in daemon.log.read_text(),
                timeout=HANG_S,
                what=f"the held job seen elsewhere\n{daemon.log_tail()}",
            )
            assert daemon.stub.Status(pb.JobRef(name="held"), timeout=10).state == "paused"
            assert daemon.stop() == 0, daemon.log_tail()
            assert list(failing.iterdir()) == []  # nothing of it was written there
            failing.rmdir()
            # Repaired while bfd is down (a repair under a running bfd would unmount the
            # disk beneath the job once its probe let it go on).
            must("mount", "-o", disk.options, disk.device, str(disk.point))
            machine.repair(disk)
            daemon.start()

        if fault == "device fails":  # the operator repairs and says so (read-only: repaired
            machine.repair(disk)  # above, while bfd was down; the probe finds it back)
            resumed = daemon.bfctl("resume", "held")
            assert resumed.returncode == 0 or "running" in resumed.stderr, resumed.stderr
        done = daemon.wait_state("held", {"completed", "failed"}, timeout=HANG_S)
        assert done.state == "completed", f"{done.message}\n{daemon.log_tail()}"
        assert kinds[kind].outputs(failing) == kinds[kind].outputs(healthy / "same")
        wait_until(
            lambda: metric(daemon, "bulkforge_held_jobs_by_reason", 'reason="disk_failed"') == 0,
            timeout=HANG_S,
            what=f"no hold left\n{daemon.log_tail()}",
        )
        log = daemon.log.read_text()
        assert "Traceback" not in log and "CRITICAL" not in log, daemon.log_tail()
        assert daemon.stop() == 0, daemon.log_tail()
