"""Whatever reaches bfd's TCP listeners, the unix socket and the jobs keep working.

A flood of half-open connections against a real bfd whose open-file limit is low enough
that, unbounded, the flood would take every descriptor: on the TLS listener each sends the
first bytes of a ClientHello and waits, on the metrics listener the first bytes of a GET.
bfd holds at most listen_max_connections of the first and METRICS_CONNECTIONS of the
second, closes each at its deadline, and meanwhile answers bfctl on the unix socket and
finishes a download.
"""

import os
import resource
import socket
import ssl
import threading
import time
import urllib.request

import pytest
from conftest import make_dataset, manifest_rows, run_bfctl, wait_until, write_manifest
from origin import Origin
from test_remote import listening, pki  # noqa: F401 (pki is a fixture)

from bulkforge.daemon.metrics import METRICS_CONNECTIONS, METRICS_TIMEOUT_S

FLOOD = 2000
CAP = 64
HANDSHAKE_S = 4
# bfd's own descriptors besides the listener's (store, WAL, sockets, logs …) vary a little.
SLACK = 40
# A TLS record header of a ClientHello announcing 512 bytes, and the first byte of it: the
# server must wait for the rest.
HALF_A_HELLO = b"\x16\x03\x01\x02\x00\x01"
HALF_A_GET = b"GET /met"


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def flood(targets: list[tuple[int, bytes]], count: int, opened: list[socket.socket]) -> None:
    """count connections to each 127.0.0.1:port that send a few bytes and then wait."""
    for _ in range(count):
        for port, first_bytes in targets:
            knock(port, first_bytes, opened)


def knock(port: int, first_bytes: bytes, opened: list[socket.socket]) -> None:
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=5)
        conn.sendall(first_bytes)
    except OSError:  # refused or reset at once: the cap at work
        return
    opened.append(conn)


def closed_by_peer(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(4096) == b""
    except (BlockingIOError, ssl.SSLWantReadError):  # open, nothing to read
        return False
    except OSError:  # reset, or TLS cut without close_notify
        return True


@pytest.mark.slow
def test_a_flood_of_half_open_tls_connections_starves_nothing(make_daemon, pki, tmp_path):  # noqa: F811
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, FLOOD + 500), hard))
    dataset = make_dataset(16, 256 * 1024, seed=24)
    with Origin(dataset.files) as origin:
        daemon, address = listening(
            make_daemon, pki, "--token-file", pki["token"], "--bandwidth", "512KB/s",
            "--metrics", "127.0.0.1:0",
            "--listen-max-connections", str(CAP),
            "--listen-handshake-timeout", str(HANDSHAKE_S),
        )  # fmt: skip
        pid = daemon.proc.pid
        # As on a node with the default limit: unbounded, FLOOD connections would take it all.
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (1024, 1024))
        manifest = write_manifest(tmp_path / "m.jsonl", manifest_rows(origin, dataset))
        submitted = daemon.bfctl(
            "submit", "download", "flooded", "--manifest", str(manifest),
            "--dest", str(tmp_path / "dest"),
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stderr
        baseline = open_files(pid)

        opened: list[socket.socket] = []
        metrics = daemon.bfctl_json("system")["metrics_address"]
        targets = [(port_of(address), HALF_A_HELLO), (port_of(metrics), HALF_A_GET)]
        flooding = threading.Thread(target=flood, args=(targets, FLOOD // 2, opened))
        flooding.start()
        most = 0
        while flooding.is_alive():
            most = max(most, open_files(pid))
            time.sleep(0.01)
        flooding.join()
        most = max(most, open_files(pid))
        try:
            assert len(opened) > CAP + METRICS_CONNECTIONS, "the flood never passed the caps"
            assert most <= baseline + CAP + METRICS_CONNECTIONS + SLACK, (most, baseline)
            # The unix socket answers while the listener is full.
            asked = time.monotonic()
            system = daemon.bfctl_json("system")
            assert system["pid"] == pid
            assert time.monotonic() - asked < 30
            job = daemon.bfctl_json("status", "flooded")
            assert job["state"] in {"running", "completed"}, job
            # A legitimate remote client may be crowded out now; the socket never is.
            # At the deadline bfd has closed every connection the flood holds.
            wait_until(
                lambda: all(closed_by_peer(conn) for conn in opened),
                timeout=max(HANDSHAKE_S, METRICS_TIMEOUT_S) + 60,
                what="bfd closing the half-open connections",
            )
            wait_until(
                lambda: open_files(pid) <= baseline + SLACK,
                timeout=30,
                what="bfd's descriptors back to their baseline",
            )
        finally:
            for conn in opened:
                conn.close()
        done = daemon.wait_state("flooded", {"completed", "failed"}, timeout=120)
        assert done.state == "completed", daemon.log_tail()
        for name, data in dataset.files.items():
            assert (tmp_path / "dest" / name).read_bytes() == data, name
        assert "Too many open files" not in daemon.log.read_text()
        # Once the flood is gone, remote clients get in again.
        again = run_bfctl(
            "--target", address, "--tls-ca", pki["ca"], "--token-file", pki["token"], "list"
        )
        assert again.returncode == 0, again.stderr
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=30) as answer:
            assert b"bulkforge_" in answer.read()
        assert daemon.stop() == 0


def silent_after_tls(port: int, ca: str) -> socket.socket:
    """A connection whose TLS handshake completes, and which then never greets in HTTP/2."""
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def silent_from_the_start(port: int, ca: str) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def half_a_hello(port: int, ca: str) -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn.sendall(HALF_A_HELLO)
    return conn


@pytest.mark.parametrize("connect", [silent_from_the_start, half_a_hello, silent_after_tls])
def test_every_connection_that_does_not_greet_in_time_is_closed(make_daemon, pki, connect):  # noqa: F811
    daemon, address = listening(
        make_daemon, pki, "--token-file", pki["token"], "--listen-handshake-timeout", "2"
    )
    opened = [connect(port_of(address), pki["ca"]) for _ in range(5)]
    try:
        wait_until(
            lambda: all(closed_by_peer(conn) for conn in opened),
            timeout=60,
            what="bfd closing connections past the handshake deadline",
        )
    finally:
        for conn in opened:
            conn.close()
    assert daemon.stop() == 0
