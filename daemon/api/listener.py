"""The TCP listener's credentials and bounds: what it reads at start and what it may hold.

Whatever reaches `--listen`, the unix socket and the jobs keep working. gRPC's C-core bounds
the listener itself, per listening address: `grpc.max_allowed_incoming_connections` closes a
connection beyond the cap as soon as it is accepted, and `grpc.server_handshake_timeout_ms`
closes one that has not finished its TLS handshake and HTTP/2 greeting by the deadline. A
connection that got through but makes no call is closed after LISTEN_IDLE_MS. The cap may
never take more than a quarter of bfd's open-file limit (raised to its hard limit at start),
so the descriptors the store, the workers and the unix socket need are always left over.
"""

import resource
import socket
from dataclasses import dataclass
from pathlib import Path

from bulkforge.daemon.settings import Settings
from bulkforge.proto import credentials

# The listener's connections may use at most this share of the open-file limit.
LISTEN_FD_SHARE = 4
# A connection with no call in flight this long is closed (a client reconnects by itself).
LISTEN_IDLE_MS = 5 * 60 * 1000
# Calls at once on one connection (gRPC's own default is unbounded).
LISTEN_STREAMS_PER_CONNECTION = 100


class ListenerRefused(Exception):
    """The listener cannot be served as configured; the message names the file or setting."""


@dataclass(frozen=True)
class Listener:
    """What the TLS listener needs, read and checked before anything starts."""

    key: bytes
    cert: bytes
    client_ca: bytes | None
    token: str | None
    options: list[tuple[str, int]]


def raise_open_files_limit() -> int:
    """The soft limit of open files raised to the hard one (as far as allowed); the new soft."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # a seccomp filter or a container may forbid it
        return soft
    return hard


def load(settings: Settings, open_files: int) -> Listener | None:
    """The listener's files and options (None without --listen), or ListenerRefused."""
    if not settings.listen:
        return None
    assert settings.tls_key and settings.tls_cert
    _check_share(settings.listen, settings.listen_max_connections, open_files)
    pem = credentials.read_pem
    return Listener(
        key=_read("tls_key", settings.tls_key, pem, secret=True),
        cert=_read("tls_cert", settings.tls_cert, pem, secret=False),
        client_ca=_read("tls_client_ca", settings.tls_client_ca, pem, secret=False),
        token=_read("token_file", settings.token_file, credentials.read_token),
        options=[
            ("grpc.max_allowed_incoming_connections", settings.listen_max_connections),
            ("grpc.server_handshake_timeout_ms", round(settings.listen_handshake_timeout * 1000)),
            ("grpc.max_connection_idle_ms", LISTEN_IDLE_MS),
            ("grpc.max_concurrent_streams", LISTEN_STREAMS_PER_CONNECTION),
        ],
    )


def _check_share(listen: str, cap: int, open_files: int) -> None:
    """The cap holds per address gRPC binds (localhost: two), so all of them count."""
    if open_files == resource.RLIM_INFINITY:
        return
    addresses = _addresses(listen)
    share = open_files // LISTEN_FD_SHARE // addresses
    if cap > share:
        bound = f"{cap} (on each of {addresses} addresses)" if addresses > 1 else str(cap)
        raise ListenerRefused(
            f"listen_max_connections {bound} is more than a quarter of the open-file limit "
            f"({open_files}): lower it to {share} or less, or raise the limit (LimitNOFILE= "
            "in bfd.service, ulimit -n)"
        )


def _addresses(listen: str) -> int:
    """How many sockets gRPC will listen on for HOST:PORT (1 when the name does not resolve:
    then it binds none and says so)."""
    host, _, port = listen.rpartition(":")
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (OSError, UnicodeError):
        return 1
    return max(1, len({info[4][:2] for info in found}))


def _read(setting: str, path: Path | None, read, **how: bool):
    if path is None:
        return None
    try:
        return read(path, **how)
    except credentials.CredentialError as exc:
        raise ListenerRefused(f"{setting} {path}: {exc.reason}") from None
