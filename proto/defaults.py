"""Defaults both ends of the API agree on without importing each other: where bfd's unix
socket is. Standard library only.

The one rule: with no --socket and no $BULKFORGE_SOCKET, bfd listens on the first of
`socket_candidates()`, and a client (bfctl, `Client()`) takes the first of them that answers.
The list runs from the most particular to the packaged unit's /run/bulkforge, so that the
bfd started in this environment comes first, and an operator's login shell (which has
$XDG_RUNTIME_DIR, where no bfd listens) still finds the packaged daemon.
"""

import errno
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

SOCKET_NAME = "bfd.sock"
SOCKET_ENV = "BULKFORGE_SOCKET"
# Every BULKFORGE_* variable a client (bfctl, `Client`) reads: bfd, which refuses a
# BULKFORGE_* variable that names none of its settings, lets these be (a shell that sets
# them for bfctl may start bfd too). tests/test_settings.py holds this list to client/.
CLIENT_VARIABLES = (
    SOCKET_ENV,
    "BULKFORGE_DEBUG",
    "BULKFORGE_TLS_CA",
    "BULKFORGE_TLS_CERT",
    "BULKFORGE_TLS_KEY",
    "BULKFORGE_TOKEN_FILE",
)
# The packaged unit's RuntimeDirectory= (packaging/bfd.service, bulkforge.tmpfiles).
PACKAGED_SOCKET = Path("/run/bulkforge") / SOCKET_NAME
PACKAGED_GROUP = "bulkforge"
# What a client says of a place where no bfd answers (here and in client/api.py alike).
NO_SOCKET = "no such socket"
STALE = "nobody listens there (left by a bfd that stopped)"
NO_PERMISSION = f"permission denied (are you in bfd's group? the packaged one is {PACKAGED_GROUP})"
NOT_A_SOCKET = "not a socket"


def socket_candidates() -> list[Path]:
    """Where a bfd started without --socket listens, the most particular place first.

    systemd's RuntimeDirectory (a unit), the user's runtime dir (a bfd started from a login
    shell), a private directory under /tmp (an unprivileged user without a runtime dir), the
    packaged unit's /run/bulkforge (also root's own default).
    """
    paths = []
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        paths.append(Path(runtime.split(":")[0]) / SOCKET_NAME)
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        paths.append(Path(xdg) / "bulkforge" / SOCKET_NAME)
    if os.geteuid() != 0:
        paths.append(private_tmp_socket())
    paths.append(PACKAGED_SOCKET)
    return list(dict.fromkeys(paths))


def default_socket() -> Path:
    """Where bfd listens, and a client looks first, when BULKFORGE_SOCKET is not set."""
    return socket_candidates()[0]


def private_tmp_socket() -> Path:
    return Path(f"/tmp/bulkforge-{os.geteuid()}") / SOCKET_NAME


@dataclass(frozen=True)
class Found:
    """The socket a client uses, and every place it looked (empty when it was named)."""

    path: Path
    tried: tuple[Path, ...] = ()


def find_socket(named: str | os.PathLike | None = None) -> Found:
    """The socket named (--socket, `Client(socket)`), else $BULKFORGE_SOCKET, else the first
    candidate that answers; when none does, the first (the place bfd would take here), and a
    failure then names every candidate and what was found there (`describe`)."""
    if named:
        return Found(Path(named))
    if from_env := os.environ.get(SOCKET_ENV):
        return Found(Path(from_env))
    candidates = socket_candidates()
    for path in candidates:
        if probe(path) is None:
            return Found(path, tuple(candidates))
    return Found(candidates[0], tuple(candidates))


def probe(path: Path) -> str | None:
    """None when something accepts a connection on the socket at `path`, else why not."""
    if path == private_tmp_socket() and not owned_by_me(path.parent):
        # Anyone may create /tmp/bulkforge-UID first: only the user's own is trusted.
        return "its directory is not yours, so it is not trusted"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe_socket:
        probe_socket.settimeout(1.0)
        try:
            probe_socket.connect(str(path))
        except FileNotFoundError:
            return NO_SOCKET
        except ConnectionRefusedError:
            return STALE
        except PermissionError:
            return NO_PERMISSION
        except TimeoutError:
            return None  # a listener with a full backlog: a bfd is there, busy
        except OSError as exc:
            return not_a_socket(path) or os.strerror(exc.errno or errno.EIO).lower()
    return None


def not_a_socket(path: Path) -> str | None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return None if stat.S_ISSOCK(mode) else NOT_A_SOCKET


def owned_by_me(directory: Path) -> bool:
    try:
        info = directory.stat()
    except FileNotFoundError:
        return True  # nothing there yet: nothing to distrust, the probe finds no socket
    except OSError:
        return False
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def describe(tried: tuple[Path, ...]) -> str:
    """Each place looked at and what is there now: `/a/bfd.sock (no such socket), …`."""
    return ", ".join(f"{path} ({probe(path) or 'answers now'})" for path in tried)
