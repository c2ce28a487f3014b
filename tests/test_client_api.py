"""bulkforge.client.api, the client other services import and bfctl goes through, against a
real bfd and a real origin: calls, refusals as exceptions, watch as an iterator, TLS."""

import hashlib
import re
import socket
import time
from pathlib import Path

import grpc
import pytest
from conftest import make_dataset, manifest_rows, wait_until, write_manifest
from origin import Fault, FaultKind, Origin
from test_remote import listening, pki  # noqa: F401 (pki is a fixture)

from bulkforge.client import api
from bulkforge.client.api import Client
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

README = Path(__file__).resolve().parent.parent / "README.md"


def test_one_method_per_rpc():
    service = pb.DESCRIPTOR.services_by_name["Bulkforge"]
    wanted = {re.sub(r"(?<!^)(?=[A-Z])", "_", method.name).lower() for method in service.methods}
    missing = {name for name in wanted if not callable(getattr(Client, name, None))}
    assert missing == {"continue"}  # a Python keyword: the method is continue_
    assert callable(Client.continue_)


def test_submit_watch_to_the_end_then_status_and_failures(daemon, tmp_path):
    dataset = make_dataset(6, 4096, seed=61)
    faults = {"gone.bin": Fault(FaultKind.STATUS_404, times=None)}
    with Origin({**dataset.files, "gone.bin": b"g"}, faults) as origin:
        rows = [*manifest_rows(origin, dataset), {"url": origin.url_for("gone.bin")}]
        manifest = write_manifest(tmp_path / "m.jsonl", rows)
        spec = pb.DownloadSpec(manifest=str(manifest), dest=str(tmp_path / "dest"))
        with Client(daemon.socket) as bfd:
            submitted = bfd.submit("api", spec, timeout=60)
            events = list(bfd.watch("api", interval_s=0.1))
            again = bfd.submit("api", spec, timeout=60)
            job = bfd.status("api", timeout=30)
            failures = bfd.failures("api", timeout=30)
    assert submitted.created and submitted.job.name == "api"
    assert not again.created
    # The iterator ends after the final event, and only the last one is final.
    assert [event.final for event in events] == [False] * (len(events) - 1) + [True]
    assert events[-1].job.state == job.state == "failed"
    assert job.finished == 7 and job.failed == 1
    assert [failure.url for failure in failures.failures] == [origin.url_for("gone.bin")]
    for name, data in dataset.files.items():
        assert (tmp_path / "dest" / name).read_bytes() == data


def test_refusals_raise_with_bfds_code_and_message(daemon, tmp_path):
    with Client(daemon.socket) as bfd:
        with pytest.raises(api.NotFound) as unknown:
            bfd.status("nobody", timeout=30)
        with pytest.raises(api.NotFound) as unknown_watch:
            next(bfd.watch("nobody"))
        absent = tmp_path / "absent.jsonl"
        bad_spec = pb.DownloadSpec(manifest=str(absent), dest=str(tmp_path / "dest"))
        with pytest.raises(api.InvalidArgument) as invalid:
            bfd.submit("bad", bad_spec, timeout=30)
        with pytest.raises(TypeError, match=r"bulkforge\.v1\.DownloadSpec"):
            bfd.submit("bad", pb.JobRef(name="not a spec"), timeout=30)
    assert unknown.value.code == unknown_watch.value.code == grpc.StatusCode.NOT_FOUND
    assert invalid.value.code == grpc.StatusCode.INVALID_ARGUMENT
    # The message is bfd's own, word for word, as the generated stub receives it.
    with pytest.raises(grpc.RpcError) as raw:
        daemon.stub.Status(pb.JobRef(name="nobody"), timeout=30)
    assert unknown.value.message == raw.value.details()
    assert "nobody" in unknown.value.message
    assert f"{absent}: no such file" in invalid.value.message


def test_no_bfd_there_raises_unreachable(tmp_path):
    with pytest.raises(api.Unreachable) as missing:
        Client(tmp_path / "none.sock")
    assert missing.value.code == grpc.StatusCode.UNAVAILABLE
    assert missing.value.message == f"{tmp_path / 'none.sock'}: no such socket"
    # A socket file nobody listens on: what a bfd killed with -9 leaves behind.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(stale))
        with Client(stale) as bfd, pytest.raises(api.Unreachable) as refused:
            bfd.list(timeout=30)
    assert refused.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_passed_deadline_and_a_vanished_bfd_raise_the_clients_errors(make_daemon, tmp_path):
    daemon = make_daemon().start()  # killed below: not the fixture that expects a clean stop
    stall = {"slow.bin": Fault(FaultKind.STALL, after_bytes=10, seconds=60)}
    with Origin({"slow.bin": b"s" * 1000}, stall) as origin:
        urls = pb.UrlList(urls=[origin.url_for("slow.bin")])
        with Client(daemon.socket) as bfd:
            bfd.submit("slow", pb.DownloadSpec(urls=urls, dest=str(tmp_path / "d")), timeout=60)
            with pytest.raises(api.DeadlineExceeded) as late:
                bfd.wait("slow", timeout=0.5)
            events = bfd.watch("slow")
            assert next(events).job.name == "slow"
            daemon.kill9()
            with pytest.raises(api.Unreachable) as gone:
                list(events)
    assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert gone.value.code == grpc.StatusCode.UNAVAILABLE, gone.value


def test_tls_and_a_token_through_the_client(make_daemon, pki):  # noqa: F811
    daemon, address = listening(make_daemon, pki, "--token-file", pki["token"])
    trusted = {"target": address, "tls_ca": pki["ca"]}
    with Client(**trusted, token_file=pki["token"]) as bfd:
        assert bfd.list(timeout=30).jobs == []
        with pytest.raises(api.NotFound):
            bfd.status("nobody", timeout=30)
    for token_file, code in (
        (None, grpc.StatusCode.UNAUTHENTICATED),
        (pki["wrong"], grpc.StatusCode.PERMISSION_DENIED),
    ):
        with (
            Client(**trusted, token_file=token_file) as bfd,
            pytest.raises(api.BulkforgeError) as refused,
        ):
            bfd.list(timeout=30)
        assert refused.value.code == code, refused.value
    # bfd's CA is not among the system's roots.
    with Client(target=address, token_file=pki["token"]) as bfd, pytest.raises(api.Unreachable):
        bfd.list(timeout=30)
    with pytest.raises(api.SettingError, match="give tls_cert and tls_key together"):
        Client(**trusted, tls_cert=pki["client_cert"])
    assert daemon.stop() == 0


def test_a_slow_reader_gets_the_present_not_a_backlog(make_daemon, tmp_path):
    # Capped bandwidth: the job moves on, slowly and for long, while the test does not read.
    daemon = make_daemon("--bandwidth", "200KB/s").start()
    interval = 0.1
    allowed = max(2 * interval, api.MIN_STALE_S)
    with Origin({"big.bin": hashlib.sha256(b"x").digest() * 625_000}) as origin:
        spec = pb.DownloadSpec(
            urls=pb.UrlList(urls=[origin.url_for("big.bin")]), dest=str(tmp_path / "dest")
        )
        with Client(daemon.socket) as bfd:
            bfd.submit("big", spec, timeout=60)
            events = bfd.watch("big", interval_s=interval)
            held = next(event for event in events if event.job.bytes_done)
            usual_lag = time.time() - held.observed_at
            # Read nothing while bfd fetches 600 KB more (3 s at the cap): its events pile
            # up in the stream's buffers meanwhile.
            wait_until(
                lambda: (
                    daemon.stub.Status(pb.JobRef(name="big"), timeout=30).bytes_done
                    > held.job.bytes_done + 600_000
                ),
                timeout=120,
                what="600 KB more",
            )
            resumed_at = time.time()
            fresh = next(events)
            bfd.cancel("big", timeout=30)
            rest = list(events)
    assert not fresh.final and fresh.job.bytes_done > held.job.bytes_done
    # Without skipping, the next event would be the one bfd read right after `held`.
    assert fresh.observed_at >= resumed_at - allowed - usual_lag
    assert rest[-1].final and rest[-1].job.state == "cancelled"
    assert daemon.stop() == 0


def test_fresh_events_skips_only_events_that_waited():
    now = time.time()

    def event(name: str, lag: float, final: bool = False) -> pb.WatchEvent:
        return pb.WatchEvent(job=pb.Job(name=name), observed_at=now - lag, final=final)

    # Interval 1 s: an event 2 s later than the usual lag waited. A 5 s clock skew is the
    # usual lag, not staleness; a smaller lag later becomes the usual one.
    stream = [
        event("skewed", 5.0),
        event("on time", 6.5),
        event("waited", 7.5),
        event("faster", 4.0),
        event("waited again", 6.5),
        event("final, however late", 30.0, final=True),
    ]
    kept = [event.job.name for event in api.fresh_events(stream, interval_s=1.0)]
    assert kept == ["skewed", "on time", "faster", "final, however late"]
    # An older bfd says nothing of when it read a state (0): nothing can be judged stale.
    old = [pb.WatchEvent(job=pb.Job(name=str(n))) for n in range(3)]
    assert len(list(api.fresh_events(old, interval_s=1.0))) == 3


def readme_example() -> str:
    """The Python block of README's "Calling bfd from a service", exactly as written."""
    section = README.read_text().split("### Calling bfd from a service\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_example_runs_as_written(daemon, tmp_path, monkeypatch):
    # Client() finds the socket as bfd does under systemd: in $RUNTIME_DIRECTORY.
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(daemon.socket.parent))
    example: dict = {}
    exec(compile(readme_example(), str(README), "exec"), example)
    dataset = make_dataset(3, 2048, seed=62)
    faults = {"gone.bin": Fault(FaultKind.STATUS_404, times=None)}
    with Origin({**dataset.files, "gone.bin": b"g"}, faults) as origin:
        good = write_manifest(tmp_path / "good.jsonl", manifest_rows(origin, dataset))
        bad = write_manifest(tmp_path / "bad.jsonl", [{"url": origin.url_for("gone.bin")}])
        job = example["mirror"]("readme", str(good), str(tmp_path / "ok"))
        with pytest.raises(RuntimeError, match=r"readme-bad failed: .*404"):
            example["mirror"]("readme-bad", str(bad), str(tmp_path / "no"))
    assert job.state == "completed" and job.finished == 3
    for name, data in dataset.files.items():
        assert (tmp_path / "ok" / name).read_bytes() == data
