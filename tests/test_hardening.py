"""What a hostile or careless client cannot do: the rules behind the defects a probe found.

No input gives INTERNAL; refusals are bounded; bfd writes only inside its data roots and
never in system directories or its own state; accepted input is input that can work; the
state files are private.
"""

import os
import stat
import time

import grpc
import pytest
from conftest import write_manifest
from origin import Fault, FaultKind, Origin

from bulkforge.proto.bulkforge.v1 import bulkforge_pb2 as pb

URL = "http://127.0.0.1:9/a.bin"


def submit(daemon, dest: str, urls: list[str] | None = None, name: str = "x") -> grpc.RpcError:
    spec = pb.DownloadSpec(urls=pb.UrlList(urls=urls or [URL]), dest=dest)
    with pytest.raises(grpc.RpcError) as refused:
        daemon.stub.Submit(pb.SubmitRequest(name=name, download=spec), timeout=30)
    return refused.value


def refused_plainly(error: grpc.RpcError, words: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    assert words in error.details(), error.details()
    assert len(error.details().encode()) < 2500


@pytest.mark.parametrize(
    ("dest", "words"),
    [
        ("/tmp/with\x00nul", "contains a NUL byte"),
        ("/tmp" + "/a" * 2000, "directories deep"),
        ("/tmp/" + ("n" * 200 + "/") * 6, "longer than 1024 bytes"),
        ("/tmp/" + "n" * 256, "a name longer than 255 bytes"),
        ("/proc/self/cwd/escape", "under /proc: bfd never writes there"),
        ("/etc/bulkforge-test", "under /etc"),
        ("/dev/shm/x", "under /dev"),
        ("relative/dir", "must be an absolute path"),
    ],
)
def test_a_dest_bfd_must_not_write_is_refused_for_downloads_and_exports(daemon, dest, words):
    refused_plainly(submit(daemon, dest), words)
    with pytest.raises(grpc.RpcError) as export:
        daemon.stub.Export(pb.ExportRequest(name="nope", dest=dest), timeout=30)
    assert export.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert not os.path.exists("/etc/bulkforge-test")
    assert daemon.stub.List(pb.ListRequest(), timeout=10).jobs == []


def test_a_dest_that_holds_the_state_dir_is_refused(daemon):
    refused_plainly(submit(daemon, str(daemon.root)), "holds or is inside bfd's state dir")
    refused_plainly(submit(daemon, str(daemon.root / "state" / "x")), "bfd's state dir")


def test_data_roots_confine_every_dest(make_daemon, tmp_path):
    allowed = tmp_path / "data"
    allowed.mkdir()
    daemon = make_daemon("--data-root", str(allowed)).start()
    refused_plainly(submit(daemon, str(tmp_path / "elsewhere")), "outside bfd's data roots")
    (allowed / "link").symlink_to(tmp_path)  # a symlink inside a root that leads out
    refused_plainly(submit(daemon, str(allowed / "link" / "out")), "outside bfd's data roots")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "out").exists()
    with Origin({"a.bin": b"a"}) as origin:
        spec = pb.DownloadSpec(urls=pb.UrlList(urls=[origin.url_for("a.bin")]))
        spec.dest = str(allowed / "in")
        daemon.stub.Submit(pb.SubmitRequest(name="inside", download=spec), timeout=30)
        assert daemon.wait_state("inside", {"completed"}).state == "completed"
    assert (allowed / "in" / "a.bin").read_bytes() == b"a"
    assert daemon.stop() == 0


def test_refusals_echo_a_bounded_part_of_what_they_were_given(daemon, tmp_path):
    huge_url = "http://127.0.0.1:9/" + "u" * 20_000
    long_url = submit(daemon, str(tmp_path / "d"), [huge_url])
    refused_plainly(long_url, "at most 8,192 characters")
    huge_dest = submit(daemon, "/tmp/" + "d/" * 500_000)
    refused_plainly(huge_dest, "directories deep")
    # The value is echoed as a short prefix, not whole.
    assert len(long_url.details()) < 300 and len(huge_dest.details()) < 300


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"url": "http://127.0.0.1:9/a\x00b"}, "control characters"),
        ({"url": URL, "size": 2**63 - 1}, "could never be downloaded there"),
        ({"url": URL, "path": "n" * 250}, "a name longer than 247 bytes"),
    ],
)
def test_accepted_input_is_input_that_can_work(daemon, tmp_path, row, words):
    manifest = write_manifest(tmp_path / "m.jsonl", [row])
    spec = pb.DownloadSpec(manifest=str(manifest), dest=str(tmp_path / "d"))
    with pytest.raises(grpc.RpcError) as refused:
        daemon.stub.Submit(pb.SubmitRequest(name="x", download=spec), timeout=30)
    refused_plainly(refused.value, words)
    assert not (tmp_path / "d").exists()


def test_the_state_files_are_private_whatever_the_umask(make_daemon, tmp_path):
    previous = os.umask(0o002)
    try:
        daemon = make_daemon().start()
    finally:
        os.umask(previous)
    # bfd is up: its connections hold the WAL and its index open.
    state = daemon.root / "state"
    for name in ("bulkforge.db", "bulkforge.db-wal", "bulkforge.db-shm"):
        mode = stat.S_IMODE((state / name).stat().st_mode)
        assert mode == 0o600, f"{name}: {oct(mode)}"
    assert daemon.stop() == 0


def test_an_hf_endpoint_that_answers_no_json_is_a_plain_refusal(make_daemon, tmp_path):
    page = b"<html>a captive portal, not a hub</html>"
    paths = {f"api/{kind}/acme/x/revision/main": page for kind in ("datasets", "models")}
    with Origin(paths) as origin:
        endpoint = origin.url_for("a").removesuffix("/a")
        daemon = make_daemon().start(env={"HF_ENDPOINT": endpoint})
        spec = pb.DownloadSpec(hf="datasets/acme/x", dest=str(tmp_path / "d"))
        with pytest.raises(grpc.RpcError) as refused:
            daemon.stub.Submit(pb.SubmitRequest(name="hub", download=spec), timeout=60)
    error = refused.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION, (error.code(), error.details())
    assert "did not answer as a Hugging Face hub does" in error.details()
    assert daemon.stop() == 0


def test_watch_streams_are_capped_and_a_request_has_a_size_limit(make_daemon, tmp_path):
    daemon = make_daemon("--max-watches", "2").start()
    with Origin({"a.bin": b"a"}, {"a.bin": Fault(FaultKind.STALL, after_bytes=0, seconds=60)}) as o:
        spec = pb.DownloadSpec(urls=pb.UrlList(urls=[o.url_for("a.bin")]), dest=str(tmp_path / "d"))
        daemon.stub.Submit(pb.SubmitRequest(name="slow", download=spec), timeout=30)
        watching = [daemon.stub.Watch(pb.WatchRequest(name="slow")) for _ in range(2)]
        for stream in watching:
            assert next(stream).job.name == "slow"  # both open and answering
        third = daemon.stub.Watch(pb.WatchRequest(name="slow"))
        with pytest.raises(grpc.RpcError) as refused:
            next(third)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 watches are open" in refused.value.details()
        watching[0].cancel()
        # A closed watch frees its place.
        again = daemon.stub.Watch(pb.WatchRequest(name="slow"))
        reopened = False
        for _ in range(50):
            try:
                reopened = next(again).job.name == "slow"
                break
            except grpc.RpcError as exc:  # the cancel may not have reached bfd yet
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                again = daemon.stub.Watch(pb.WatchRequest(name="slow"))
                time.sleep(0.1)
        assert reopened
        again.cancel()
        watching[1].cancel()
        # A request over 4 MiB is refused by the transport, and bfd carries on.
        huge = pb.DownloadSpec(urls=pb.UrlList(urls=["http://h/" + "x" * 5_000_000]), dest="/tmp/x")
        with pytest.raises(grpc.RpcError) as too_big:
            daemon.stub.Submit(pb.SubmitRequest(name="huge", download=huge), timeout=30)
        assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert daemon.bfctl_json("status", "slow")["state"] == "running"
    assert daemon.stop() == 0
