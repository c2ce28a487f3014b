"""The governor's limits change at runtime, and the memory cap holds new work back."""

import os
import subprocess
import sys

import grpc
import psutil
import pytest
from conftest import make_dataset, manifest_rows, wait_until, write_manifest
from origin import Origin

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


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
        ({"nosuch": "1"}, "'nosuch' is not a limit bfd has; the limits are bandwidth"),
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


def test_memory_cap_holds_new_work_until_it_is_raised(daemon, tmp_path):
    dataset = make_dataset(10, 20_000, seed=31)
    daemon.bfctl_json("system", "--set", "memory_cap=1MB")  # far below what bfd uses
    with Origin(dataset.files) as origin:
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        daemon.submit("capped", manifest, tmp_path / "dest")
        wait_until(lambda: "memory cap" in daemon.bfctl_json("status", "capped")["message"])
        holds = daemon.bfctl_json("system")["holds"]
        assert [h["job"] for h in holds] == ["capped"] and "memory" in holds[0]["reason"]
        assert daemon.bfctl_json("status", "capped")["counts"] == {"pending": 10}
        assert len(origin.log) == 0  # nothing was fetched while held
        daemon.bfctl_json("system", "--set", "memory_cap=8GiB")
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
