"""The test origin itself, checked over real loopback sockets with httpx."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from conftest import wait_until
from origin import Fault, FaultKind, Origin, OriginProcess, make_etag

ORIGIN_PY = Path(__file__).with_name("origin.py")
SIZE = 200_000
DATA = os.urandom(SIZE)
OTHER = os.urandom(70_000)


@pytest.fixture
def origin() -> Iterator[Origin]:
    with Origin({"a.bin": DATA, "dir/b c.bin": OTHER, "empty": b""}) as o:
        yield o


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- normal serving -------------------------------------------------------------------------


def test_get_sends_body_and_validators(origin: Origin, client: httpx.Client) -> None:
    r = client.get(origin.url_for("a.bin"))
    assert r.status_code == 200
    assert r.content == DATA
    assert r.headers["ETag"] == f'"{sha(DATA)[:32]}"' == make_etag(DATA)
    assert r.headers["Content-Length"] == str(SIZE)
    assert r.headers["Accept-Ranges"] == "bytes"
    assert parsedate_to_datetime(r.headers["Last-Modified"]).timestamp() <= time.time() + 1
    assert origin.url.startswith("http://127.0.0.1:") and origin.port > 0


def test_head_sends_headers_without_body(origin: Origin, client: httpx.Client) -> None:
    r = client.head(origin.url_for("a.bin"))
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(SIZE)
    assert r.headers["ETag"] == make_etag(DATA)
    assert r.content == b""
    assert origin.requests("a.bin")[0].bytes_sent == 0


def test_names_are_url_quoted_paths(origin: Origin, client: httpx.Client) -> None:
    assert origin.url_for("dir/b c.bin").endswith("/dir/b%20c.bin")
    assert client.get(origin.url_for("dir/b c.bin")).content == OTHER
    assert client.get(origin.url_for("empty")).content == b""


def test_unknown_path_is_404(origin: Origin, client: httpx.Client) -> None:
    assert client.get(origin.url_for("nope.bin")).status_code == 404
    assert client.head(origin.url_for("dir")).status_code == 404
    assert origin.requests("nope.bin")[0].status == 404


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=1000-", 1000, SIZE),
        ("bytes=10-19", 10, 20),
        ("bytes=0-0", 0, 1),
        ("bytes=199990-999999", 199_990, SIZE),  # the end is clamped to the size
        ("bytes=-5", SIZE - 5, SIZE),
    ],
)
def test_single_range_is_206(
    origin: Origin, client: httpx.Client, header: str, start: int, end: int
) -> None:
    r = client.get(origin.url_for("a.bin"), headers={"Range": header})
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes {start}-{end - 1}/{SIZE}"
    assert r.headers["Content-Length"] == str(end - start)
    assert r.content == DATA[start:end]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-2", "items=0-1", "bytes=x-"])
def test_multi_or_malformed_range_is_ignored(
    origin: Origin, client: httpx.Client, header: str
) -> None:
    r = client.get(origin.url_for("a.bin"), headers={"Range": header})
    assert r.status_code == 200
    assert r.content == DATA


@pytest.mark.parametrize(("name", "start"), [("a.bin", SIZE), ("a.bin", SIZE + 5), ("empty", 0)])
def test_unsatisfiable_range_is_416(
    origin: Origin, client: httpx.Client, name: str, start: int
) -> None:
    r = client.get(origin.url_for(name), headers={"Range": f"bytes={start}-"})
    assert r.status_code == 416
    size = SIZE if name == "a.bin" else 0
    assert r.headers["Content-Range"] == f"bytes */{size}"


def test_if_range_matching_etag_honours_range(origin: Origin, client: httpx.Client) -> None:
    headers = {"Range": "bytes=100-", "If-Range": make_etag(DATA)}
    r = client.get(origin.url_for("a.bin"), headers=headers)
    assert r.status_code == 206
    assert r.content == DATA[100:]


def test_if_range_matching_date_honours_range(origin: Origin, client: httpx.Client) -> None:
    modified = client.head(origin.url_for("a.bin")).headers["Last-Modified"]
    r = client.get(origin.url_for("a.bin"), headers={"Range": "bytes=5-9", "If-Range": modified})
    assert r.status_code == 206
    assert r.content == DATA[5:10]


def test_if_range_mismatch_sends_the_whole_new_file(origin: Origin, client: httpx.Client) -> None:
    old = client.head(origin.url_for("a.bin")).headers
    new = os.urandom(1234)
    origin.set_file("a.bin", new)
    for validator in (old["ETag"], old["Last-Modified"], "W/" + old["ETag"]):
        headers = {"Range": "bytes=100-", "If-Range": validator}
        r = client.get(origin.url_for("a.bin"), headers=headers)
        assert r.status_code == 200
        assert r.content == new
        assert r.headers["ETag"] == make_etag(new) != old["ETag"]
        assert r.headers["Last-Modified"] != old["Last-Modified"]


def test_other_methods_are_405(origin: Origin, client: httpx.Client) -> None:
    assert client.post(origin.url_for("a.bin"), content=b"x").status_code == 405


# --- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "retry_after"),
    [
        ("status_404", 404, None),
        ("status_410", 410, None),
        ("status_500", 500, None),
        ("status_503", 503, None),
        ("status_503", 503, 7),
        ("status_429", 429, 3),
    ],
)
def test_status_faults(
    origin: Origin, client: httpx.Client, kind: str, status: int, retry_after: int | None
) -> None:
    origin.set_fault("a.bin", Fault(kind, retry_after=retry_after))
    for r in (client.get(origin.url_for("a.bin")), client.head(origin.url_for("a.bin"))):
        assert r.status_code == status
        assert r.headers.get("Retry-After") == (None if retry_after is None else str(retry_after))
    assert [r.fault for r in origin.requests("a.bin")] == [kind, kind]
    assert client.get(origin.url_for("dir/b c.bin")).status_code == 200  # other paths unharmed


def test_status_fault_applies_to_a_missing_path(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("later.bin", Fault(FaultKind.STATUS_503))
    assert client.get(origin.url_for("later.bin")).status_code == 503


def test_times_limits_a_fault_then_serves_normally(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("status_503", times=2, retry_after=1))
    statuses = [client.get(origin.url_for("a.bin")).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    records = origin.requests("a.bin")
    assert [r.fault for r in records] == ["status_503", "status_503", None]
    assert records[2].bytes_sent == SIZE
    origin.set_fault("a.bin", Fault("status_503", times=1))  # setting again starts a new count
    assert client.get(origin.url_for("a.bin")).status_code == 503


def test_reset_is_a_connection_reset(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("reset", after_bytes=1000, times=1))
    with pytest.raises(httpx.ReadError):
        client.get(origin.url_for("a.bin"))
    assert client.get(origin.url_for("a.bin")).content == DATA
    first = origin.requests("a.bin")[0]
    assert (first.fault, first.status, first.bytes_sent) == ("reset", 200, 1000)


def test_reset_by_default_after_half_of_a_range(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("reset"))
    with pytest.raises(httpx.ReadError):
        client.get(origin.url_for("a.bin"), headers={"Range": "bytes=1000-"})
    assert origin.requests("a.bin")[0].bytes_sent == (SIZE - 1000) // 2


def test_short_body_closes_before_content_length(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("short_body", after_bytes=5000))
    with (
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("GET", origin.url_for("a.bin")) as r,
    ):
        assert r.headers["Content-Length"] == str(SIZE)
        r.read()
    assert origin.requests("a.bin")[0].bytes_sent == 5000


def test_corrupt_keeps_length_and_headers(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("corrupt"))
    r = client.get(origin.url_for("a.bin"))
    assert r.status_code == 200
    assert r.headers["ETag"] == make_etag(DATA)
    assert len(r.content) == SIZE
    assert sha(r.content) != sha(DATA)
    assert sum(a != b for a, b in zip(r.content, DATA, strict=True)) == 8


def test_ignore_range_sends_200_with_everything(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("ignore_range", times=1))
    assert client.get(origin.url_for("a.bin")).status_code == 200  # not ranged: not used up
    r = client.get(origin.url_for("a.bin"), headers={"Range": "bytes=100-"})
    assert r.status_code == 200
    assert "Content-Range" not in r.headers
    assert r.content == DATA
    assert client.get(origin.url_for("a.bin"), headers={"Range": "bytes=100-"}).status_code == 206
    assert [r.fault for r in origin.requests("a.bin")] == [None, "ignore_range", None]


def test_stall_times_out_the_client_without_blocking_others(origin: Origin) -> None:
    # A stall no test outlives: the other request is served during it or not at all.
    origin.set_fault("a.bin", Fault("stall", after_bytes=100, seconds=3600))
    caught: list[BaseException] = []

    def stalled_get() -> None:
        try:
            httpx.get(origin.url_for("a.bin"), timeout=httpx.Timeout(30, read=0.5))
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=stalled_get)
    thread.start()
    wait_until(lambda: origin.requests("a.bin"), what="the stalled request")
    r = httpx.get(origin.url_for("dir/b c.bin"), timeout=30)  # served while the other stalls
    assert r.content == OTHER
    thread.join(30)
    assert len(caught) == 1 and isinstance(caught[0], httpx.ReadTimeout)
    assert origin.requests("a.bin")[0].bytes_sent == 100


def test_short_stall_then_completes(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("stall", seconds=0.3))
    started = time.monotonic()
    r = client.get(origin.url_for("a.bin"))
    assert time.monotonic() - started >= 0.3
    assert r.content == DATA
    assert origin.bytes_served("a.bin") == SIZE


def test_wrong_length_over_announces_and_closes(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("wrong_length", delta=100))
    assert client.head(origin.url_for("a.bin")).headers["Content-Length"] == str(SIZE + 100)
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(origin.url_for("a.bin"))
    assert origin.requests("a.bin")[1].bytes_sent == SIZE


def test_wrong_length_under_truncates_cleanly(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("wrong_length", delta=-10))
    r = client.get(origin.url_for("a.bin"))
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(SIZE - 10)
    assert r.content == DATA[:-10]
    assert client.get(origin.url_for("dir/b c.bin")).content == OTHER  # connection still fine


def test_html_200_serves_an_error_page(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("html_200"))
    r = client.get(origin.url_for("a.bin"))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/html")
    assert r.content.startswith(b"<!DOCTYPE html>") and len(r.content) < 1000
    assert client.head(origin.url_for("a.bin")).headers["Content-Type"].startswith("text/html")


def test_head_does_not_use_up_body_faults(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("a.bin", Fault("short_body", times=1))
    assert client.head(origin.url_for("a.bin")).status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(origin.url_for("a.bin"))
    assert client.get(origin.url_for("a.bin")).content == DATA


def test_wildcard_fault_counts_times_per_path(origin: Origin, client: httpx.Client) -> None:
    origin.set_fault("*", Fault("status_500", times=1))
    assert client.get(origin.url_for("a.bin")).status_code == 500
    assert client.get(origin.url_for("a.bin")).status_code == 200
    assert client.get(origin.url_for("dir/b c.bin")).status_code == 500
    origin.clear_faults()
    assert client.get(origin.url_for("empty")).status_code == 200


def test_faults_given_at_construction_and_cleared() -> None:
    with Origin({"x": b"x" * 10}, {"x": Fault("status_410")}) as o, httpx.Client() as c:
        assert c.get(o.url_for("x")).status_code == 410
        o.set_fault("x", None)
        assert c.get(o.url_for("x")).content == b"x" * 10


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("teapot")
    with pytest.raises(ValueError):
        Fault("wrong_length", delta=0)
    with pytest.raises(ValueError):
        Fault.from_dict({"kind": "reset", "after": 3})
    assert Fault.from_dict({"kind": "reset", "after_bytes": 3}).kind is FaultKind.RESET


# --- log and lifecycle -------------------------------------------------------------------------


def test_log_records_every_request_and_byte(origin: Origin, client: httpx.Client) -> None:
    client.get(origin.url_for("a.bin"))
    client.get(origin.url_for("a.bin"), headers={"Range": "bytes=10-19", "If-Range": "W/x"})
    client.head(origin.url_for("dir/b c.bin"))
    client.get(origin.url_for("dir/b c.bin"))
    assert [(r.path, r.method, r.status) for r in origin.log] == [
        ("a.bin", "GET", 200),
        ("a.bin", "GET", 200),
        ("dir/b c.bin", "HEAD", 200),
        ("dir/b c.bin", "GET", 200),
    ]
    second = origin.log[1]
    assert (second.range_header, second.if_range, second.fault) == ("bytes=10-19", "W/x", None)
    assert origin.bytes_served("a.bin") == 2 * SIZE
    assert origin.bytes_served("/dir/b c.bin") == len(OTHER)
    assert origin.bytes_served() == 2 * SIZE + len(OTHER)
    assert len({r.conn for r in origin.log}) == 1  # one keep-alive connection
    origin.log.clear()
    assert len(origin.log) == 0 and origin.bytes_served() == 0


def test_keep_alive_serves_many_requests_on_one_connection(origin: Origin) -> None:
    """How fast it serves them is the benches' to show: they all fetch from this origin."""
    files = {f"f{i}": os.urandom(64 * 1024 + i) for i in range(4)}
    for name, data in files.items():
        origin.set_file(name, data)
    with httpx.Client(timeout=30) as c:
        for i in range(300):
            assert c.get(origin.url_for(f"f{i % 4}")).content == files[f"f{i % 4}"]
    assert len(origin.log) == 300
    assert len({r.conn for r in origin.log}) == 1


def test_stop_wakes_a_stalled_request_in_flight() -> None:
    # A stall no test outlives: stop() returns because it wakes the handler, or never.
    o = Origin({"a": DATA}, {"a": Fault("stall", seconds=3600)}).start()
    with httpx.Client(timeout=30) as c:
        c.get(o.url_for("missing"))  # leaves an idle keep-alive connection
        with c.stream("GET", o.url_for("a")) as r:
            assert r.status_code == 200
            stopping = threading.Thread(target=o.stop)
            stopping.start()
            stopping.join(60)
            assert not stopping.is_alive(), "stop() waited for the stalled request"
            with pytest.raises(httpx.TransportError):
                r.read()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{o.port}/a", timeout=2)


def test_origin_can_serve_a_directory(tmp_path: Path, client: httpx.Client) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.bin").write_bytes(OTHER)
    with Origin(root=tmp_path) as o:
        r = client.get(o.url_for("d/f.bin"), headers={"Range": "bytes=5-"})
        assert r.status_code == 206 and r.content == OTHER[5:]
        assert r.headers["ETag"] == make_etag(OTHER)


# --- subprocess mode ---------------------------------------------------------------------------


def test_subprocess_mode_serves_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "x y.bin").write_bytes(DATA)
    (tmp_path / "secret").write_bytes(b"outside the root")
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"sub/x y.bin": {"kind": "status_503", "times": 1}}))
    proc = subprocess.Popen(
        [sys.executable, str(ORIGIN_PY), "--root", str(root), "--faults", str(faults)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        with httpx.Client(timeout=5) as c:
            assert c.get(f"{url}/sub/x%20y.bin").status_code == 503
            r = c.get(f"{url}/sub/x%20y.bin")
            assert r.status_code == 200 and r.content == DATA
            assert r.headers["ETag"] == make_etag(DATA)
            r = c.get(f"{url}/sub/x%20y.bin", headers={"Range": f"bytes={SIZE - 10}-"})
            assert r.status_code == 206 and r.content == DATA[-10:]
            assert c.get(f"{url}/sub/%2E%2E/%2E%2E/secret").status_code == 404
            assert c.get(f"{url}/missing").status_code == 404
            (root / "sub" / "x y.bin").write_bytes(OTHER)  # a changed file gets a new ETag
            assert c.get(f"{url}/sub/x%20y.bin").headers["ETag"] == make_etag(OTHER)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        assert proc.stdout.read() == ""  # exactly one line on stdout
        proc.stdout.close()


def test_origin_process_helper_logs_and_faults(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.bin").write_bytes(DATA)
    log_path = tmp_path / "log.jsonl"
    faults = {"a.bin": Fault("reset", after_bytes=500, times=1)}
    with OriginProcess(root, faults, log_path=log_path) as o, httpx.Client(timeout=5) as c:
        with pytest.raises(httpx.ReadError):
            c.get(o.url_for("a.bin"))
        assert c.get(o.url_for("a.bin")).content == DATA
        wait_until(lambda: len(o.log) >= 2, what="both requests in the log file")
        assert [(r.fault, r.bytes_sent) for r in o.requests("a.bin")] == [
            ("reset", 500),
            (None, SIZE),
        ]
        assert o.bytes_served() == SIZE + 500
    assert o.proc is not None and o.proc.returncode == 0
