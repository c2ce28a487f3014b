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


@dataclass(frozen=True)
class Endpoint:
    """A gRPC target, and how to name it to a person."""

    address: str
    shown: str
    socket: Path | None = None


def socket_endpoint(path: str | os.PathLike) -> Endpoint:
    absolute = Path(os.path.abspath(path))
    return Endpoint(address=f"unix:{absolute}", shown=str(absolute), socket=absolute)


def endpoint_from_args(args: argparse.Namespace) -> Endpoint:
    """--target, else --socket, else $BULKFORGE_SOCKET, else the default both sides agree on."""
    if args.target:
        return Endpoint(address=args.target, shown=args.target)
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
        channel = grpc.secure_channel(endpoint.address, tls_credentials())
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


def tls_credentials() -> grpc.ChannelCredentials:
    """The system roots, or the CA named by $BULKFORGE_TLS_CA (a private CA is the usual case)."""
    ca_file = os.environ.get(TLS_CA_ENV)
    if not ca_file:
        return grpc.ssl_channel_credentials()
    try:
        return grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes())
    except OSError as exc:
        raise UsageError(
            f"{TLS_CA_ENV}={ca_file}: cannot read the CA file ({exc.strerror})"
        ) from None
