"""`status` callers share a job's view read a moment ago (bench/load_bench.py measures why);
a verb's own change is never hidden behind it."""

import contextlib
import threading
from collections.abc import Iterator

import grpc
import pytest
from conftest import wait_until, write_manifest
from origin import Fault, FaultKind, Origin

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb


def test_pollers_see_a_verbs_change_as_soon_as_the_verb_answers(patient_daemon, tmp_path):
    daemon = patient_daemon
    data = b"p" * 100_000
    stall = {"a.bin": Fault(FaultKind.STALL, after_bytes=40_000, seconds=3600, times=1)}
    with Origin({"a.bin": data}, stall) as origin:
        row = {"url": origin.url_for("a.bin"), "path": "a.bin", "size": len(data)}
        daemon.submit("polled", write_manifest(tmp_path / "m.jsonl", [row]), tmp_path / "d")
        job = pb.JobRef(name="polled")
        stub = daemon.stub
        wait_until(lambda: stub.Status(job).bytes_done >= 40_000, what="the transfer at its stall")
        with polling(stub, job) as polls:
            wait_until(lambda: polls[0] >= 20, what="the pollers under way")
            assert stub.Pause(job).state == "paused"
            assert stub.Status(job).state == "paused"
            assert stub.Cancel(job).state == "cancelled"
            assert stub.Status(job).state == "cancelled"
            assert stub.Remove(pb.RemoveRequest(name="polled")).state == "cancelled"
            with pytest.raises(grpc.RpcError) as refused:
                stub.Status(job)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND


@contextlib.contextmanager
def polling(stub, job: pb.JobRef, threads: int = 4) -> Iterator[list[int]]:
    """Threads calling Status on the job without pause, so a shared view is always fresh;
    yields how many answers they have had so far."""
    stop = threading.Event()
    polls = [0]

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(grpc.RpcError):  # NOT_FOUND once removed
                stub.Status(job)
            polls[0] += 1

    pollers = [threading.Thread(target=poll) for _ in range(threads)]
    for poller in pollers:
        poller.start()
    try:
        yield polls
    finally:
        stop.set()
        for poller in pollers:
            poller.join()
