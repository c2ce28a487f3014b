"""A connection that cannot be made is said in plain words, naming the flag that fixes it:
bfctl prints one line of its own (no gRPC C-core log line, no `TSI_PROTOCOL_FAILURE`), and
the typed client raises `ConnectionFailed` with the same words, naming the keyword where
bfctl names the flag (tls_ca for --tls-ca).

A table of every way a connection to a real bfd over TLS fails: no CA given, another CA,
a certificate for another name, no client certificate where bfd asks for one, an address
that does not speak TLS, a port nobody listens on, a host name that does not resolve.
"""

import http.server
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from conftest import Daemon

from bulkforge.client import api
from bulkforge.client.errors import as_flag

BFCTL = (sys.executable, "-m", "bulkforge.client")
# What must never reach a person: gRPC's log lines (`I1207 12:00:00.000 123 file.cc:1] …`),
# its status words and OpenSSL's.
LIBRARY_WORDS = re.compile(
    r"^[IWEF]\d{4} |\.cc:\d+\]|TSI_|SSL_ERROR|OPENSSL|failed to connect to all addresses"
    r"|Socket closed|Hostname Verification|errors resolving|last error",
    re.MULTILINE,
)


def write_pki(root: Path) -> dict[str, str]:
    """One CA; bfd's certificate for 127.0.0.1, another for node7.example, a client's; and
    the CA of another PKI. PEM files, the keys private."""
    ca, stranger = trustme.CA(), trustme.CA()
    issued = {
        "": ca.issue_cert("127.0.0.1"),
        "node7_": ca.issue_cert("node7.example"),
        "client_": ca.issue_cert("operator@example.org"),
    }
    blobs = {"ca": ca.cert_pem, "other_ca": stranger.cert_pem}
    for prefix, cert in issued.items():
        blobs[f"{prefix}cert"] = cert.cert_chain_pems[0]
        blobs[f"{prefix}key"] = cert.private_key_pem
    paths = {}
    for name, blob in blobs.items():
        path = root / f"{name}.pem"
        blob.write_to_path(str(path))
        if name.endswith("key"):
            path.chmod(0o600)
        paths[name] = str(path)
    return paths


@pytest.fixture(scope="module")
def listeners(tmp_path_factory) -> Iterator[dict]:
    """bfd over TLS asking for a client certificate; bfd with a certificate (of the same
    CA) for another name; an HTTP server (no TLS); the PEM files."""
    root = tmp_path_factory.mktemp("words")
    pki = write_pki(root)
    asks = Daemon(root / "asks", ["--listen", "127.0.0.1:0", "--tls-cert", pki["cert"]])
    asks.args += ["--tls-key", pki["key"], "--tls-client-ca", pki["ca"]]
    named = Daemon(root / "named", ["--listen", "127.0.0.1:0", "--tls-cert", pki["node7_cert"]])
    named.args += ["--tls-key", pki["node7_key"]]
    http_server = http.server.HTTPServer(("127.0.0.1", 0), QuietHandler)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    try:
        for daemon in (asks, named):
            daemon.root.mkdir()
            daemon.start()
        yield {
            "asks": asks.bfctl_json("system")["listen_address"],
            "named": named.bfctl_json("system")["listen_address"],
            "http": f"127.0.0.1:{http_server.server_address[1]}",
            "pki": pki,
        }
    finally:
        http_server.shutdown()
        for daemon in (asks, named):
            daemon.stop()
            daemon.cleanup()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


# (address, settings as Client keywords, words bfctl and Client must both say, whether
# "Is it running?" follows: only where no bfd answers at all)
CASES = {
    "no CA given": ("asks", {}, "signed by no CA this machine trusts; give the CA that "
                    "signed it with {tls_ca}", False),
    "another CA": ("asks", {"tls_ca": "other_ca"}, "is not signed by the CA in {tls_ca}",
                   False),
    "no client certificate where bfd asks": (
        "asks", {"tls_ca": "ca"}, "give {tls_cert} and {tls_key}", False),
    "not TLS": ("http", {"tls_ca": "ca"}, "does not speak TLS", False),
    "nobody listens": ("127.0.0.1:1", {"tls_ca": "ca"}, "nothing listens there", True),
    "no such host": ("no-such-host.invalid:7443", {"tls_ca": "ca"},
                     "the host name no-such-host.invalid cannot be resolved", False),
}  # fmt: skip


def settings_of(listeners: dict, wanted: dict[str, str]) -> dict[str, str]:
    return {keyword: listeners["pki"][name] for keyword, name in wanted.items()}


def bfctl(address: str, settings: dict[str, str]) -> subprocess.CompletedProcess:
    flags = [arg for keyword, path in settings.items() for arg in (as_flag(keyword), path)]
    return subprocess.run(
        [*BFCTL, "--target", address, *flags, "--timeout", "20", "list"],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("address, wanted, words, not_running", CASES.values(), ids=CASES.keys())
def test_a_failed_connection_is_said_in_plain_words_by_bfctl_and_the_client(
    listeners: dict, address: str, wanted: dict, words: str, not_running: bool
) -> None:
    target = listeners.get(address, address)
    settings = settings_of(listeners, wanted)
    with api.Client(target=target, **settings) as bfd, pytest.raises(api.BulkforgeError) as raised:
        bfd.list(timeout=20)
    failed = raised.value
    assert isinstance(failed, api.ConnectionFailed), failed
    assert failed.message.startswith(f"{target}: ")
    assert words.format(**{k: k for k in api.SETTINGS}) in failed.message
    assert not LIBRARY_WORDS.search(failed.message), failed.message

    done = bfctl(target, settings)
    assert done.returncode == 3 and done.stdout == "", done
    said = f"bfctl: cannot reach bfd at {target}: {failed.worded(as_flag)}"
    if not_running:
        said += ". Is it running? (systemctl status bfd, or start it with `bfd`)"
    assert done.stderr == said + "\n"  # one line of ours: nothing of gRPC's
    assert words.format(**{k: as_flag(k) for k in api.SETTINGS}) in done.stderr
    assert not LIBRARY_WORDS.search(done.stderr), done.stderr


def test_a_certificate_for_another_name_is_said_so(listeners: dict) -> None:
    target = listeners["named"]
    client = api.Client(target=target, tls_ca=listeners["pki"]["ca"])
    with client as bfd, pytest.raises(api.ConnectionFailed) as raised:
        bfd.list(timeout=20)
    assert "certificate does not name 127.0.0.1" in raised.value.message
    done = bfctl(target, {"tls_ca": listeners["pki"]["ca"]})
    assert done.returncode == 3 and done.stderr == (
        f"bfctl: cannot reach bfd at {target}: {raised.value.worded(as_flag)}\n"
    )
    assert not LIBRARY_WORDS.search(done.stderr), done.stderr


def test_grpc_logs_are_bfctls_to_silence_only_and_an_operator_may_ask_for_them(
    listeners: dict,
) -> None:
    """GRPC_VERBOSITY set by the operator is obeyed: the C core's lines come back."""
    done = subprocess.run(
        [*BFCTL, "--target", listeners["asks"], "list"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GRPC_VERBOSITY": "INFO"},
    )
    assert done.returncode == 3
    assert re.search(r"^[IWEF]\d{4} ", done.stderr, re.MULTILINE), done.stderr
