"""The API over TCP: TLS always, a bearer token on every call but health, client
certificates when bfd asks for them; bfctl --target with --tls-ca, --token-file, --tls-cert."""

import subprocess
from pathlib import Path

import grpc
import pytest
import trustme
from conftest import run_bfctl
from grpc_health.v1 import health_pb2, health_pb2_grpc

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def pki(tmp_path):
    """A CA, bfd's certificate for 127.0.0.1, and a client certificate, as PEM files."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("operator@example.org")
    files = {
        "ca": ca.cert_pem,
        "cert": server.cert_chain_pems[0],
        "key": server.private_key_pem,
        "client_cert": client.cert_chain_pems[0],
        "client_key": client.private_key_pem,
    }
    paths = {}
    for name, blob in files.items():
        path = tmp_path / f"{name}.pem"
        blob.write_to_path(str(path))
        if name.endswith("key"):
            path.chmod(0o600)  # secrets are private, or bfd and bfctl refuse them (like ssh)
        paths[name] = str(path)
    for name, text in (("token", TOKEN + "\n"), ("wrong", "not-the-token")):
        path = tmp_path / name
        path.write_text(text)
        path.chmod(0o600)
        paths[name] = str(path)
    return paths


def listening(make_daemon, pki, *extra: str):
    daemon = make_daemon(
        "--listen", "127.0.0.1:0", "--tls-cert", pki["cert"], "--tls-key", pki["key"], *extra
    ).start()
    address = daemon.bfctl_json("system")["listen_address"]
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    return daemon, address


def remote(daemon, address: str, *flags: str, args=("list",)) -> subprocess.CompletedProcess:
    return run_bfctl("--target", address, *flags, *args)


def test_a_token_guards_every_call_over_tcp_but_health(make_daemon, pki):
    daemon, address = listening(make_daemon, pki, "--token-file", pki["token"])
    ca = ("--tls-ca", pki["ca"])
    ok = remote(daemon, address, *ca, "--token-file", pki["token"], "--json")
    assert ok.returncode == 0 and '"jobs": []' in ok.stdout, ok.stderr
    missing = remote(daemon, address, *ca)
    assert missing.returncode == 1 and "unauthenticated" in missing.stderr
    assert "--token-file" in missing.stderr
    wrong = remote(daemon, address, *ca, "--token-file", pki["wrong"])
    assert wrong.returncode == 1 and "permission denied" in wrong.stderr
    # A health probe needs TLS, not the token.
    credentials = grpc.ssl_channel_credentials(Path(pki["ca"]).read_bytes())
    with grpc.secure_channel(address, credentials) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    # A client that does not trust bfd's CA never gets as far as the token.
    untrusted = remote(daemon, address, "--token-file", pki["token"], "--timeout", "5")
    assert untrusted.returncode == 3, untrusted.stderr
    # The unix socket needs no token: its mode (0660) is its guard.
    assert daemon.bfctl("list").returncode == 0
    assert daemon.stop() == 0


def test_client_certificates_when_bfd_asks_for_them(make_daemon, pki):
    daemon, address = listening(make_daemon, pki, "--tls-client-ca", pki["ca"])
    ca = ("--tls-ca", pki["ca"], "--timeout", "5")
    without = remote(daemon, address, *ca)
    assert without.returncode == 3, without.stderr
    mine = ("--tls-cert", pki["client_cert"], "--tls-key", pki["client_key"])
    assert remote(daemon, address, *ca, *mine).returncode == 0
    half = remote(daemon, address, *ca, "--tls-cert", pki["client_cert"])
    assert half.returncode == 2 and "--tls-cert and --tls-key together" in half.stderr
    assert daemon.stop() == 0


def test_tcp_without_tls_or_a_token_without_tcp_refuses_the_start(make_daemon, pki):
    for flags, words in (
        (("--listen", "127.0.0.1:0"), "bfd serves TCP only over TLS"),
        (("--token-file", pki["token"]), "guard --listen: give it too"),
    ):
        daemon = make_daemon(*flags)
        done = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 78 and words in done.stderr, done.stderr
