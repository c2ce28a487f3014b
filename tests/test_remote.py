"""The API over TCP: TLS always, a bearer token on every call but health, client
certificates when bfd asks for them; bfctl --target with --tls-ca, --token-file, --tls-cert."""

import os
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from conftest import Daemon, run_bfctl
from grpc_health.v1 import health_pb2, health_pb2_grpc

TOKEN = "s3cret-token-for-tests"


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


def make_pki(tmp_path: Path) -> dict[str, str]:
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


# -- credentials, checked like ssh checks keys --------------------------------------------


def secret(tmp_path: Path, name: str, data: bytes, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def fifo(tmp_path: Path) -> str:
    path = tmp_path / "fifo"
    os.mkfifo(path, 0o600)
    return str(path)


# Each token file that cannot work, by case: (a maker of the file, the words that say why).
# The same table serves bfd's --token-file and bfctl's: both ends read a token alike.
BAD_TOKEN_FILES = {
    "group-readable": (lambda t: secret(t, "tk", b"abc\n", 0o640), "permissions 0640 are too"),
    "other-readable": (lambda t: secret(t, "tk", b"abc\n", 0o604), "permissions 0604 are too"),
    "group-writable": (lambda t: secret(t, "tk", b"abc\n", 0o620), "permissions 0620 are too"),
    "space-inside": (lambda t: secret(t, "tk", b"abc def\n"), "holds byte 0x20 at offset 3"),
    "newline-inside": (lambda t: secret(t, "tk", b"abc\ndef\n"), "holds a newline at offset 3"),
    "two-newlines": (lambda t: secret(t, "tk", b"abc\n\n"), "holds a newline at offset 3"),
    "crlf": (lambda t: secret(t, "tk", b"abc\r\n"), "holds byte 0x0d at offset 3"),
    "leading-space": (lambda t: secret(t, "tk", b" abc\n"), "holds byte 0x20 at offset 0"),
    "tab": (lambda t: secret(t, "tk", b"ab\tc"), "holds byte 0x09 at offset 2"),
    "non-ascii": (lambda t: secret(t, "tk", "tökén\n".encode()), "holds byte 0xc3 at offset 1"),
    "nul": (lambda t: secret(t, "tk", b"ab\0"), "holds byte 0x00 at offset 2"),
    "empty": (lambda t: secret(t, "tk", b""), "is empty"),
    "only-a-newline": (lambda t: secret(t, "tk", b"\n"), "is empty"),
    "too-large": (lambda t: secret(t, "tk", b"a" * 5000), "is larger than 4096 bytes"),
    "dev-zero": (lambda t: "/dev/zero", "is not a regular file"),
    "fifo": (fifo, "is not a regular file"),
    "directory": (lambda t: str(t), "is not a regular file"),
    "missing": (lambda t: str(t / "nope"), "cannot be read (No such file or directory)"),
}
BAD_TOKEN_CASES = pytest.mark.parametrize(
    ("make", "words"), list(BAD_TOKEN_FILES.values()), ids=list(BAD_TOKEN_FILES)
)


def refused_start(make_daemon, *flags: str) -> subprocess.CompletedProcess:
    daemon = make_daemon(*flags)
    done = subprocess.run(daemon.command(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not daemon.socket.exists()
    return done


@BAD_TOKEN_CASES
def test_bfd_refuses_a_token_file_it_cannot_trust(make_daemon, pki, tmp_path, make, words):
    path = make(tmp_path)
    done = refused_start(
        make_daemon, "--listen", "127.0.0.1:0", "--tls-cert", pki["cert"],
        "--tls-key", pki["key"], "--token-file", path,
    )  # fmt: skip
    assert f"token_file {path}: {words}" in done.stderr, done.stderr
    if "too open" in words:
        assert f"chmod 600 {path}" in done.stderr


@pytest.mark.parametrize(
    ("flag", "make", "words"),
    [
        (
            "--tls-key",
            lambda t, p: secret(t, "k", Path(p["key"]).read_bytes(), 0o644),
            "permissions 0644",
        ),
        (
            "--tls-key",
            lambda t, p: secret(t, "k", Path(p["key"]).read_bytes(), 0o640),
            "permissions 0640",
        ),
        ("--tls-key", lambda t, p: "/dev/zero", "is not a regular file"),
        ("--tls-key", lambda t, p: fifo(t), "is not a regular file"),
        ("--tls-key", lambda t, p: secret(t, "k", b"not a key"), "holds no PEM block"),
        ("--tls-cert", lambda t, p: "/dev/zero", "is not a regular file"),
        (
            "--tls-cert",
            lambda t, p: secret(t, "c", b"-" * (2 << 20)),
            "is larger than 1048576 bytes",
        ),
        ("--tls-cert", lambda t, p: str(t / "nope"), "cannot be read"),
        ("--tls-client-ca", lambda t, p: fifo(t), "is not a regular file"),
        ("--tls-client-ca", lambda t, p: secret(t, "ca", b"{}", 0o644), "holds no PEM block"),
    ],
)
def test_bfd_refuses_tls_files_it_cannot_trust(make_daemon, pki, tmp_path, flag, make, words):
    files = {"--tls-cert": pki["cert"], "--tls-key": pki["key"]}
    files[flag] = path = make(tmp_path, pki)
    flags = [item for pair in files.items() for item in pair]
    done = refused_start(make_daemon, "--listen", "127.0.0.1:0", *flags)
    assert f"{flag[2:].replace('-', '_')} {path}: {words}" in done.stderr, done.stderr


@pytest.mark.parametrize(
    "address", ["0.0.0.0:0", "[::]:0", "192.0.2.1:7411", "node7.example:7411", "127.0.0.1.nip.io:0"]
)
def test_listen_beyond_loopback_needs_a_token_or_a_client_ca(make_daemon, pki, address):
    done = refused_start(
        make_daemon, "--listen", address, "--tls-cert", pki["cert"], "--tls-key", pki["key"]
    )
    assert f"listen {address} is not a loopback address" in done.stderr
    assert "give token_file or tls_client_ca (or allow_unauthenticated" in done.stderr


def test_allow_unauthenticated_says_so_in_the_log_and_in_system(make_daemon, pki):
    daemon, address = listening(make_daemon, pki, "--allow-unauthenticated")
    assert daemon.bfctl_json("system")["allow_unauthenticated"] is True
    assert "allow_unauthenticated: anyone who reaches" in daemon.log.read_text()
    answered = remote(daemon, address, "--tls-ca", pki["ca"], "--json")
    assert answered.returncode == 0 and '"jobs": []' in answered.stdout, answered.stderr
    assert daemon.stop() == 0
    # With a token (or a client CA) nothing is open to everyone, and the log says nothing.
    guarded, _ = listening(make_daemon, pki, "--token-file", pki["token"])
    assert guarded.bfctl_json("system")["allow_unauthenticated"] is False
    assert "anyone who reaches" not in guarded.log.read_text()
    assert guarded.stop() == 0


def test_allow_unauthenticated_guards_listen_only(make_daemon):
    done = refused_start(make_daemon, "--allow-unauthenticated")
    assert "allow_unauthenticated guard --listen: give it too" in done.stderr


def test_the_listener_may_take_a_quarter_of_the_open_files_at_most(make_daemon, pki):
    daemon = make_daemon(
        "--listen", "127.0.0.1:0", "--tls-cert", pki["cert"], "--tls-key", pki["key"],
        "--listen-max-connections", "300",
    )  # fmt: skip

    def at_most_1024_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    done = subprocess.run(
        daemon.command(), capture_output=True, text=True, timeout=60, preexec_fn=at_most_1024_files
    )
    assert done.returncode == 78, done.stderr
    assert "listen_max_connections 300 is more than a quarter of the open-file limit (1024)" in (
        done.stderr
    )
    assert "lower it to 256 or less" in done.stderr


@BAD_TOKEN_CASES
def test_bfctl_refuses_a_token_file_it_cannot_trust(guarded_bfd, tmp_path, make, words):
    address, pki = guarded_bfd
    path = make(tmp_path)
    done = run_bfctl("--target", address, "--tls-ca", pki["ca"], "--token-file", path, "list")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert f"bfctl: --token-file {path}: {words}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flag", "make", "words"),
    [
        ("--tls-ca", lambda t: "/dev/zero", "is not a regular file"),
        ("--tls-ca", fifo, "is not a regular file"),
        (
            "--tls-ca",
            lambda t: secret(t, "ca", b"-" * (2 << 20), 0o644),
            "is larger than 1048576 bytes",
        ),
        ("--tls-ca", lambda t: secret(t, "ca", b"hello", 0o644), "holds no PEM block"),
        ("--tls-key", lambda t: secret(t, "k", b"-----BEGIN ", 0o644), "permissions 0644 are"),
        ("--tls-key", lambda t: secret(t, "k", b"-----BEGIN ", 0o660), "permissions 0660 are"),
        ("--tls-key", lambda t: "/dev/zero", "is not a regular file"),
        ("--tls-cert", lambda t: "/dev/zero", "is not a regular file"),
    ],
)
def test_bfctl_refuses_tls_files_it_cannot_trust(guarded_bfd, tmp_path, flag, make, words):
    address, pki = guarded_bfd
    files = {
        "--tls-ca": pki["ca"],
        "--tls-cert": pki["client_cert"],
        "--tls-key": pki["client_key"],
    }
    files[flag] = path = make(tmp_path)
    flags = [item for pair in files.items() for item in pair]
    done = run_bfctl("--target", address, "--token-file", pki["token"], *flags, "list")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert f"bfctl: {flag} {path}: {words}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_token_file_without_its_trailing_newline_works_alike(make_daemon, pki, tmp_path):
    daemon, address = listening(make_daemon, pki, "--token-file", secret(tmp_path, "t1", b"x1!"))
    for text in (b"x1!", b"x1!\n"):
        token = secret(tmp_path, "t2", text)
        done = remote(daemon, address, "--tls-ca", pki["ca"], "--token-file", token)
        assert done.returncode == 0, done.stderr
    assert daemon.stop() == 0


@pytest.fixture(scope="module")
def guarded_bfd(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """One bfd listening with a token and a client CA, shared by the bfctl tables: every
    case is refused before its first call, so none changes it. Its address and files."""
    root = tmp_path_factory.mktemp("guarded")
    pki = make_pki(root)
    daemon = Daemon(root, [
        "--listen", "127.0.0.1:0", "--tls-cert", pki["cert"], "--tls-key", pki["key"],
        "--token-file", pki["token"], "--tls-client-ca", pki["ca"],
    ]).start()  # fmt: skip
    try:
        address = daemon.bfctl_json("system")["listen_address"]
        # The table's baseline: with the right files, bfctl gets in.
        done = run_bfctl(
            "--target", address, "--tls-ca", pki["ca"], "--token-file", pki["token"],
            "--tls-cert", pki["client_cert"], "--tls-key", pki["client_key"], "list",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield address, pki
    finally:
        daemon.stop()
        daemon.cleanup()
