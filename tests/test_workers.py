"""The governor governs every CPU worker, against a real bfd, for every kind that runs CPU
work (clean, generate): a worker killed mid-task is replaced and the task run again up to a
bound, then failed with its reason while later work runs; a task over its memory share
fails alone as `memory`; pause and cancel end a job's CPU work within seconds; and no worker
outlives bfd, whatever the moment it is killed.
"""

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import psutil
import pytest
from conftest import FAST_RETRIES, Daemon, gone, wait_until
from test_clean import outputs
from test_generate import SPEC, digests

from bulkforge.daemon.cpu_pool import RETRIES
from tests.binance_data import write_trades_zip

CPU_WORKER = "bulkforge.daemon.cpu_worker"
ENDED = {"completed", "failed", "cancelled"}
# "Within seconds": generous on a loaded machine, far below a task's length.
STOP_WITHIN_S = 10
DAY = date(2024, 6, 1)


def processes_of(daemon: Daemon, module: str) -> list[int]:
    """bfd's children running `python -m module` now (not their zombies)."""
    found = []
    assert daemon.proc is not None
    for child in psutil.Process(daemon.proc.pid).children():
        with contextlib.suppress(psutil.Error):
            if module in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found


def cpu_workers(daemon: Daemon) -> list[int]:
    return processes_of(daemon, CPU_WORKER)


def fresh_worker(daemon: Daemon, seen: list[int], timeout: float = 120) -> int:
    """A CPU worker not seen before: the governor starts one only for a task in hand."""

    def fresh() -> list[int]:
        return [pid for pid in cpu_workers(daemon) if pid not in seen]

    wait_until(lambda: bool(fresh()), timeout=timeout, what="a fresh CPU worker")
    return fresh()[0]


def cpu_seconds(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def wait_all_gone(pids: list[int], what: str) -> None:
    wait_until(lambda: all(map(gone, pids)), timeout=STOP_WITHIN_S, what=what)


def marked(mark: str) -> list[int]:
    """Every process of the machine whose environment holds mark: a bfd started with it, and
    whatever it started, even one it started after it was last looked at."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.environ().get("BF_TEST_MARK") == mark and not gone(process.pid):
                found.append(process.pid)
    return found


# -- the work of each kind -----------------------------------------------------------------


@dataclass(frozen=True)
class Work:
    """A job of one kind: how to submit it (name, dest, its size), and its output's digests."""

    kind: str
    submit: Callable[[Daemon, str, Path, int], None]
    output: Callable[[Path], dict[str, str]]
    # Items that fail when one task fails: the zips of a series, or one part.
    items_per_task: int


def submit_clean(daemon: Daemon, name: str, dest: Path, rows: int) -> None:
    """Three series, each of two daily zips of `rows` trades: one task per series."""
    root = dest.parent / f"zips-{rows}"  # one input for every job of a test
    if not root.exists():
        for n in range(3):
            for d in range(2):
                write_trades_zip(root, "spot", f"{chr(65 + n) * 3}USDT", DAY + timedelta(days=d),
                                 1 + d * rows, rows, seed=n * 2 + d)  # fmt: skip
    done = daemon.bfctl("submit", "clean", name, "--input", str(root), "--dest", str(dest))
    assert done.returncode == 0, done.stderr


def submit_generate(daemon: Daemon, name: str, dest: Path, rows: int) -> None:
    """rows students in three parts (and a part of departments): one task per part."""
    spec = dest.parent / "school.toml"
    spec.write_text(SPEC)
    dest.mkdir(parents=True, exist_ok=True)
    done = daemon.bfctl(
        "submit", "generate", name, "--spec", str(spec), "--dest", str(dest),
        "--rows", str(rows), "--chunk-rows", str(-(-rows // 3)), "--seed", "3",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


WORK = {
    "clean": Work("clean", submit_clean, outputs, items_per_task=2),
    "generate": Work("generate", submit_generate, digests, items_per_task=1),
}
# Sizes: tasks of about a second, and tasks long enough to act on while they run.
SMALL = {"clean": 100_000, "generate": 150_000}
LONG = {"clean": 1_000_000, "generate": 3_000_000}


def failure_classes(daemon: Daemon, name: str) -> dict[str, int]:
    report = daemon.bfctl_json("failures", name)
    return {group["error_class"]: group["count"] for group in report["groups"]}


def failure_messages(daemon: Daemon, name: str) -> list[str]:
    return [failure["error"] for failure in daemon.bfctl_json("failures", name)["failures"]]


# -- a dead worker is replaced -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(WORK))
def test_a_worker_killed_mid_task_is_replaced_until_the_bound_and_later_work_runs(
    make_daemon, tmp_path: Path, kind: str
) -> None:
    work = WORK[kind]
    daemon = make_daemon(*FAST_RETRIES, "--cpu-workers", "1").start()
    work.submit(daemon, "hit", tmp_path / "hit", SMALL[kind])
    killed: list[int] = []
    for _ in range(RETRIES + 1):  # the same task each time: it goes first again
        pid = fresh_worker(daemon, killed)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    job = daemon.wait_state("hit", ENDED, timeout=300)
    assert job.state == "failed" and job.counts["failed"] == work.items_per_task, job
    assert failure_classes(daemon, "hit") == {"worker_died": work.items_per_task}
    assert all(f"died {RETRIES + 1} times" in m for m in failure_messages(daemon, "hit"))
    log = daemon.log.read_text()
    assert all(f"running it again on a fresh worker ({n} of {RETRIES})" in log for n in (1, 2))
    # Later work is unaffected: the failed task on retry, and a new job.
    assert daemon.bfctl("retry", "hit").returncode == 0
    assert daemon.wait_state("hit", ENDED, timeout=300).state == "completed"
    work.submit(daemon, "after", tmp_path / "after", SMALL[kind])
    assert daemon.wait_state("after", ENDED, timeout=300).state == "completed"
    assert work.output(tmp_path / "hit") == work.output(tmp_path / "after") != {}
    assert not set(cpu_workers(daemon)) & set(killed)
    assert daemon.stop() == 0, daemon.log_tail()


# -- the memory cap bounds each task -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(WORK))
def test_a_task_over_its_memory_share_fails_alone_as_memory_and_runs_once_raised(
    make_daemon, tmp_path: Path, kind: str
) -> None:
    """The share is memory_cap / cpu_workers. The cap is lowered while the job is paused,
    as an operator may, so that its tasks no longer fit (a submit-time estimate, made
    against the higher cap, let them in): each fails alone, as `memory`."""
    work = WORK[kind]
    daemon = make_daemon(*FAST_RETRIES, "--cpu-workers", "2", "--memory-cap", "8GiB").start()
    work.submit(daemon, "big", tmp_path / "big", LONG[kind])
    assert daemon.bfctl("pause", "big").returncode == 0
    daemon.bfctl_json("system", "--set", "memory_cap=200MiB")  # 100 MiB a task
    assert daemon.bfctl("resume", "big").returncode == 0
    job = daemon.wait_state("big", ENDED, timeout=200)
    assert job.state == "failed", job
    classes = failure_classes(daemon, "big")
    assert set(classes) == {"memory"} and classes["memory"] >= work.items_per_task, classes
    # Each names the bound it met: the worker's hard limit (the share), or for a zip the
    # inflated bytes a cleaning task may hold (a quarter of it), checked before inflating.
    bounds = ("memory limit of 105 MB", "past the 26.2 MB one cleaning task")
    messages = failure_messages(daemon, "big")
    assert all(any(bound in m for bound in bounds) for m in messages), messages
    assert daemon.bfctl_json("status", "big")["counts"].get("done", 0) < job.items_total
    daemon.bfctl_json("system", "--set", "memory_cap=8GiB")
    assert daemon.bfctl("retry", "big").returncode == 0
    assert daemon.wait_state("big", ENDED, timeout=600).state == "completed"
    assert daemon.stop() == 0, daemon.log_tail()


# -- pause and cancel stop the work inside the workers --------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["pause", "cancel"])
@pytest.mark.parametrize("kind", sorted(WORK))
def test_pause_and_cancel_end_the_jobs_cpu_work_within_seconds(
    make_daemon, tmp_path: Path, kind: str, verb: str
) -> None:
    work = WORK[kind]
    daemon = make_daemon(*FAST_RETRIES, "--cpu-workers", "1", "--memory-cap", "0").start()
    work.submit(daemon, "long", tmp_path / "long", LONG[kind])
    busy = fresh_worker(daemon, [])
    wait_until(lambda: cpu_seconds(busy) > 1.0, what="the worker well into its task")
    assert daemon.bfctl(verb, "long").returncode == 0
    wait_all_gone([busy], what=f"the worker of the job given `{verb}`")
    expected = "paused" if verb == "pause" else "cancelled"
    assert daemon.wait_state("long", {expected}).state == expected
    assert all(cpu_seconds(pid) < 1.0 for pid in cpu_workers(daemon)), "work went on"
    if verb == "pause":
        assert daemon.bfctl("resume", "long").returncode == 0
        assert daemon.wait_state("long", ENDED, timeout=600).state == "completed"
        work.submit(daemon, "ref", tmp_path / "ref", LONG[kind])
        assert daemon.wait_state("ref", ENDED, timeout=600).state == "completed"
        assert work.output(tmp_path / "long") == work.output(tmp_path / "ref") != {}
    assert not list((tmp_path / "long").rglob("*.tmp"))
    assert daemon.stop() == 0, daemon.log_tail()


# -- workers end with bfd --------------------------------------------------------------------

BFD_KILLS = 8


@pytest.mark.slow
def test_no_worker_outlives_a_bfd_killed_at_any_moment(make_daemon, tmp_path: Path) -> None:
    """bfd is killed at random moments while clean and generate tasks run or start (a worker
    being started as bfd dies included): every process it started is gone within seconds,
    and the jobs still complete with the bytes of an undisturbed run."""
    seed = int(os.environ.get("BF_WORKERS_SEED") or random.randrange(2**32))
    print(f"seed {seed}: replay with BF_WORKERS_SEED={seed}")
    rng = random.Random(seed)
    mark = {"BF_TEST_MARK": f"workers-{seed}-{os.getpid()}"}
    daemon = make_daemon(*FAST_RETRIES, "--cpu-workers", "2", "--memory-cap", "0").start(mark)
    for kind, work in WORK.items():
        work.submit(daemon, kind, tmp_path / kind, LONG[kind] // 3)
    for kill in range(BFD_KILLS):
        running = [k for k in WORK if daemon.bfctl_json("status", k)["state"] not in ENDED]
        assert running, f"the jobs ended after {kill} kills: give them more work"
        if kill % 2:  # half the time while tasks run, half the time as workers start
            fresh_worker(daemon, [])
        time.sleep(rng.uniform(0, 0.5))
        started = daemon.workers()
        daemon.kill9()
        wait_all_gone(started, what=f"kill {kill}: every process bfd started")
        # Also one started after the list was taken, as bfd died (a resource tracker, say).
        wait_until(lambda: not marked(mark["BF_TEST_MARK"]), timeout=STOP_WITHIN_S,
                   what=f"kill {kill}: every process of bfd's environment")  # fmt: skip
        daemon.start(mark)
    for kind, work in WORK.items():
        assert daemon.wait_state(kind, ENDED, timeout=600).state == "completed"
        work.submit(daemon, f"{kind}-ref", tmp_path / f"{kind}-ref", LONG[kind] // 3)
        assert daemon.wait_state(f"{kind}-ref", ENDED, timeout=600).state == "completed"
        assert work.output(tmp_path / kind) == work.output(tmp_path / f"{kind}-ref") != {}
    assert daemon.stop() == 0, daemon.log_tail()
