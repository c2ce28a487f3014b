"""The governor's limits change at runtime, the memory cap holds new work back and bounds
each CPU task, and a CPU worker that dies is replaced."""

import os
import signal
import subprocess
import sys
import zlib

import grpc
import psutil
import pytest
from conftest import gone, make_dataset, manifest_rows, wait_until, write_manifest
from origin import Origin

from bulkforge.daemon.cpu_pool import ARROW_THREADS_PER_WORKER, RETRIES
from bulkforge.daemon.failures import worker_failure
from bulkforge.daemon.governor import Governor, TaskStopped, WorkerDied, settled
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb
from bulkforge.proto.units import size_text


def test_limits_change_at_runtime_all_or_none(daemon):
    changed = daemon.bfctl_json(
        "system", "--set", "bandwidth=50MB/s", "--set", "disk_threshold=0.8",
        "--set", "memory_cap=3GiB", "--set", "cpu_workers=3",
    )  # fmt: skip
    assert changed["bandwidth"] == 50_000_000
    assert changed["disk_threshold"] == 0.8
    assert changed["memory_cap"] == 3 * 1024**3
    assert changed["cpu_workers"] == 3
    for bad, expected in (
        ({"disk_threshold": "1.5", "bandwidth": "1MB/s"}, "disk_threshold: 1.5 is not in (0, 1]"),
        ({"bandwidth": "fast"}, "bandwidth: 'fast' is not a size"),
        ({"nosuch": "1"}, "'nosuch' is not a limit bfd has (the limits are bandwidth"),
    ):
        # bfd refuses all of them (bfctl, which checks the same way, never sends them).
        with pytest.raises(grpc.RpcError) as refused:
            daemon.stub.System(pb.SystemRequest(set=bad), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in refused.value.details()
        done = daemon.bfctl("system", *(f"--set={k}={v}" for k, v in bad.items()))
        assert done.returncode == 2 and expected in done.stderr, done.stderr
    after = daemon.bfctl_json("system")
    assert after["bandwidth"] == 50_000_000 and after["disk_threshold"] == 0.8
    usage = daemon.bfctl("system", "--set", "bandwidth")
    assert usage.returncode == 2 and "KEY=VALUE" in usage.stderr


# A limit that holds every new download, what it says, and the setting that lifts it.
HOLDS = {
    "memory cap": ("memory_cap=1MB", "memory cap", "memory_cap=8GiB"),  # far below bfd's RSS
    "disk threshold": ("disk_threshold=0.0001", "waiting for space", "disk_threshold=1"),
}


@pytest.mark.parametrize("sized", [True, False], ids=["sizes known", "sizes unknown"])
@pytest.mark.parametrize("hold", HOLDS)
def test_a_limit_holds_new_downloads_until_it_is_raised(daemon, tmp_path, hold, sized):
    """Whether the manifest gives sizes or not: a file of unknown size is no exception."""
    lower, says, raise_ = HOLDS[hold]
    dataset = make_dataset(10, 20_000, seed=31)
    daemon.bfctl_json("system", "--set", lower)
    with Origin(dataset.files) as origin:
        rows = manifest_rows(origin, dataset, with_sha=sized)
        if not sized:
            rows = [{k: v for k, v in row.items() if k != "size"} for row in rows]
        manifest = write_manifest(tmp_path / "m.jsonl", rows)
        daemon.submit("capped", manifest, tmp_path / "dest")
        wait_until(lambda: says in daemon.bfctl_json("status", "capped")["message"])
        holds = daemon.bfctl_json("system")["holds"]
        assert [h["job"] for h in holds] == ["capped"] and says in holds[0]["reason"]
        assert daemon.bfctl_json("status", "capped")["counts"] == {"pending": 10}
        assert len(origin.log) == 0  # nothing was fetched while held
        daemon.bfctl_json("system", "--set", raise_)
        job = daemon.wait_state("capped", {"completed", "failed"})
    assert job.state == "completed"
    assert daemon.bfctl_json("status", "capped")["message"] == ""


def test_the_memory_cap_counts_every_process_under_bfd():
    # The processes the governor adds up are the ones psutil finds by walking the machine.
    from bulkforge.daemon.governor import _descendants

    nested = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"
    children = [subprocess.Popen(["sleep", "60"]), subprocess.Popen([sys.executable, "-c", nested])]
    try:
        expected = {children[0].pid, children[1].pid}
        wait_until(
            lambda: len(psutil.Process().children(recursive=True)) >= 3, what="the grandchild"
        )
        found = set(_descendants(os.getpid()))
        assert found == {child.pid for child in psutil.Process().children(recursive=True)}
        assert expected < found  # the grandchild is counted too
    finally:
        for process in psutil.Process().children(recursive=True):
            process.kill()


# -- the CPU workers: each task bounded, a dead worker replaced ------------------------------

SHARE = 256 * 1024**2  # each task's memory share in these tests: cap / cpu_workers
GIB = 1024**3


def zlib_bomb(size: int) -> bytes:
    """size zero bytes, deflated (about a thousandth of size): a zip member inflating to size."""
    squeeze = zlib.compressobj()
    block = bytes(1 << 20)
    return b"".join(squeeze.compress(block) for _ in range(size >> 20)) + squeeze.flush()


# Every way a task may take memory: (function run in the worker, its arguments).
ALLOCATIONS = {
    "bytes": ("builtins:bytearray", lambda: (2 * GIB,)),
    "python objects": ("builtins:list", lambda: (range(200_000_000),)),
    "numpy": ("numpy:ones", lambda: (300_000_000,)),
    "pyarrow": ("pyarrow:allocate_buffer", lambda: (2 * GIB,)),
    "inflating": ("zlib:decompress", lambda: (zlib_bomb(GIB),)),
}


@pytest.fixture
def governor():
    made = Governor(0, memory_cap=2 * SHARE, cpu_workers=2)
    yield made
    made.close()


@pytest.mark.parametrize("allocation", sorted(ALLOCATIONS))
def test_a_task_over_its_memory_share_fails_alone_with_memory_and_its_worker_is_replaced(
    governor: Governor, allocation: str
) -> None:
    target, args = ALLOCATIONS[allocation]
    neighbour = governor.submit("time:sleep", 2, owner="other")
    wait_until(lambda: len(governor.cpu_worker_pids()) == 1, what="the first worker busy")
    (neighbours_worker,) = governor.cpu_worker_pids()
    hungry = governor.submit(target, *args(), owner="hungry")
    with pytest.raises(MemoryError) as raised:
        hungry.result(timeout=120)
    error_class, message = worker_failure(raised.value, "making the part")
    assert error_class == "memory", message
    assert f"memory limit of {size_text(SHARE)} " in message
    assert neighbour.result(timeout=60) is None  # the other task ran on, undisturbed
    # The worker that ran out ended (the idle neighbour may be retired too while bfd's RSS
    # is over the cap); the next task runs, in a fresh worker, within its limit.
    assert set(governor.cpu_worker_pids()) <= {neighbours_worker}
    assert len(governor.submit("builtins:bytearray", SHARE // 2).result(timeout=60)) == SHARE // 2


def test_a_worker_killed_under_a_task_is_replaced_and_the_task_run_again_up_to_the_bound(
    governor: Governor,
) -> None:
    killed: list[int] = []
    task = governor.submit("time:sleep", 60, owner="job")
    for _ in range(RETRIES + 1):
        pid = wait_for_a_fresh_worker(governor, killed)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    with pytest.raises(WorkerDied) as died:
        task.result(timeout=60)
    error_class, message = worker_failure(died.value, "making the part")
    assert error_class == "worker_died"
    assert f"died {RETRIES + 1} times (last: killed by SIGKILL)" in message
    assert settled(died.value)
    # Later work is unaffected, on both slots at once.
    later = [governor.submit("os:getpid") for _ in range(4)]
    assert not {future.result(timeout=60) for future in later} & set(killed)


@pytest.mark.parametrize(("memory_cap", "expected"), [(2 * SHARE, "memory"), (0, "worker_died")])
def test_a_worker_that_crashes_under_its_memory_limit_fails_its_task_as_memory(
    memory_cap: int, expected: str
) -> None:
    """Allocators and C++ libraries abort when memory is refused: a crash under a limit is one."""
    governor = Governor(0, memory_cap=memory_cap, cpu_workers=2)
    try:
        with pytest.raises(WorkerDied) as died:
            governor.submit("os:abort").result(timeout=120)
    finally:
        governor.close()
    assert died.value.error_class == expected
    assert "killed by SIGABRT" in str(died.value)


def test_stopping_a_job_kills_its_running_tasks_at_once_and_drops_its_queued_ones(
    governor: Governor,
) -> None:
    running = [governor.submit("time:sleep", 600, owner="paused") for _ in range(2)]
    queued = governor.submit("time:sleep", 600, owner="paused")
    wait_until(lambda: len(governor.cpu_worker_pids()) == 2, what="two busy workers")
    busy = governor.cpu_worker_pids()
    assert governor.stop("paused") == 3
    for future in running:
        with pytest.raises(TaskStopped):
            future.result(timeout=10)
    assert queued.cancelled()
    wait_until(lambda: all(map(gone, busy)), timeout=10, what="the stopped job's workers")
    assert governor.submit("os:getpid").result(timeout=60) not in busy


def test_an_exception_of_a_library_bfd_never_loaded_comes_back_by_name() -> None:
    """bfd unpickles only classes it has loaded: an ArrowInvalid comes back as a WorkerError
    named so, and bfd still has no pyarrow."""
    code = (
        "from bulkforge.daemon.governor import Governor, WorkerError\n"
        "import sys\n"
        "g = Governor(0, cpu_workers=1)\n"
        "try:\n"
        "    g.submit('pyarrow.compute:cast', 'x', 'int64').result(timeout=120)\n"
        "except WorkerError as e:\n"
        "    print(e.type_name, 'pyarrow' in sys.modules)\n"
        "g.close()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert done.stdout.split() == ["ArrowInvalid", "False"], done.stderr


def wait_for_a_fresh_worker(governor: Governor, killed: list[int]) -> int:
    """The next worker the governor starts: one is started only for a task in hand."""

    def fresh() -> list[int]:
        return [pid for pid in governor.cpu_worker_pids() if pid not in killed]

    wait_until(lambda: bool(fresh()), what="a fresh worker")
    return fresh()[0]


def test_a_changed_cpu_workers_starts_or_retires_workers(governor: Governor) -> None:
    both = [governor.submit("time:sleep", 1) for _ in range(2)]
    wait_until(lambda: len(governor.cpu_worker_pids()) == 2, what="two workers")
    governor.change({"cpu_workers": "1"})
    assert [future.result(timeout=60) for future in both] == [None, None]
    wait_until(lambda: len(governor.cpu_worker_pids()) == 1, what="one worker retired")
    assert len({governor.submit("os:getpid").result(timeout=60) for _ in range(3)}) == 1
    governor.change({"cpu_workers": "3"})
    three = [governor.submit("time:sleep", 1) for _ in range(3)]
    wait_until(lambda: len(governor.cpu_worker_pids()) == 3, what="three workers")
    assert [future.result(timeout=60) for future in three] == [None] * 3


def test_a_workers_arrow_threads_are_sized_for_one_task_not_for_every_core() -> None:
    """Each Arrow thread's stack counts against the task's memory share (RLIMIT_DATA): a
    worker starts a few, not one per core of the machine."""
    governor = Governor(0, memory_cap=0, cpu_workers=1)
    try:
        threads = [
            governor.submit(f"pyarrow:{name}").result(timeout=120)
            for name in ("cpu_count", "io_thread_count")
        ]
    finally:
        governor.close()
    assert threads == [int(ARROW_THREADS_PER_WORKER)] * 2
