"""Where bfd listens and how to open a channel to it."""

import argparse
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from bulkforge.client.errors import Unreachable, UsageError
from bulkforge.proto.bulkforge.v1 import bulkforge_pb2_grpc as pb_grpc
from bulkforge.proto.defaults import default_socket

SOCKET_ENV = "BULKFORGE_SOCKET"
TLS_CA_ENV = "BULKFORGE_TLS_CA"
TLS_CERT_ENV = "BULKFORGE_TLS_CERT"
TLS_KEY_ENV = "BULKFORGE_TLS_KEY"
TOKEN_FILE_ENV = "BULKFORGE_TOKEN_FILE"


@dataclass(frozen=True)
class Remote:
    """How bfctl proves itself to a bfd over TCP: TLS roots, a client certificate, a token."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: Path | None = None


@dataclass(frozen=True)
class Endpoint:
    """A gRPC target, and how to name it to a person."""

    address: str
    shown: str
    socket: Path | None = None
    remote: Remote = Remote()


def socket_endpoint(path: str | os.PathLike) -> Endpoint:
    absolute = Path(os.path.abspath(path))
    return Endpoint(address=f"unix:{absolute}", shown=str(absolute), socket=absolute)


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    """--target, else --socket, else $BULKFORGE_SOCKET, else the default both sides agree on."""
    if args.target:
        return Endpoint(address=args.target, shown=args.target, remote=remote_from_args(args))
    return socket_endpoint(args.socket or os.environ.get(SOCKET_ENV) or default_socket())


DEFAULT_TIMEOUT_S = 30.0


def call_timeout(
    args: argparse.Namespace, default: float | None = DEFAULT_TIMEOUT_S
) -> float | None:
    """The deadline of a unary call: --timeout if given (0: none), else the command's default."""
    if args.timeout is None:
        return default
    return args.timeout if args.timeout > 0 else None


@contextmanager
def open_stub(endpoint: Endpoint) -> Iterator[pb_grpc.BulkforgeStub]:
    with open_channel(endpoint) as channel:
        yield pb_grpc.BulkforgeStub(channel)


@contextmanager
def open_channel(endpoint: Endpoint) -> Iterator[grpc.Channel]:
    if endpoint.socket is not None:
        check_socket(endpoint)
        channel = grpc.insecure_channel(endpoint.address)
    else:
        channel = grpc.secure_channel(endpoint.address, tls_credentials(endpoint.remote))
    with channel:
        yield channel


def check_socket(endpoint: Endpoint) -> None:
    """Say plainly what is wrong before gRPC says it in its own words."""
    try:
        mode = os.stat(endpoint.socket).st_mode
    except FileNotFoundError:
        raise Unreachable(endpoint.shown, "no such socket") from None
    except PermissionError:
        raise Unreachable(endpoint.shown, "permission denied (are you in bfd's group?)") from None
    if not stat.S_ISSOCK(mode):
        raise Unreachable(endpoint.shown, "not a socket")


def remote_from_args(args: argparse.Namespace) -> Remote:
    """--tls-ca, --tls-cert, --tls-key and --token-file, else their BULKFORGE_* variables."""

    def given(flag: str, env: str) -> Path | None:
        value = getattr(args, flag, None) or os.environ.get(env)
        return Path(value) if value else None

    return Remote(
        ca=given("tls_ca", TLS_CA_ENV),
        cert=given("tls_cert", TLS_CERT_ENV),
        key=given("tls_key", TLS_KEY_ENV),
        token=given("token_file", TOKEN_FILE_ENV),
    )


def tls_credentials(remote: Remote) -> grpc.ChannelCredentials:
    """TLS with the system roots or the given CA (a private CA is the usual case), a client
    certificate when bfd asks for one, and the bearer token on every call when given."""
    if (remote.cert is None) != (remote.key is None):
        raise UsageError("give --tls-cert and --tls-key together (a client certificate)")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(remote.ca, "--tls-ca"),
        private_key=_read(remote.key, "--tls-key"),
        certificate_chain=_read(remote.cert, "--tls-cert"),
    )
    if remote.token is None:
        return credentials
    token = (_read(remote.token, "--token-file") or b"").decode().strip()
    if not token:
        raise UsageError(f"--token-file {remote.token}: the file is empty")
    return grpc.composite_channel_credentials(
        credentials, grpc.access_token_call_credentials(token)
    )


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot be read ({exc.strerror})") from None
