"""Defaults both ends of the API agree on without importing each other."""

import os
from pathlib import Path

SOCKET_NAME = "bfd.sock"


def default_socket() -> Path:
    """Where bfd listens and bfctl connects when BULKFORGE_SOCKET is not set.

    systemd's RuntimeDirectory first, then the user's runtime dir, then the
    system one for root; an unprivileged user without XDG_RUNTIME_DIR gets a
    private directory under /tmp.
    """
    if runtime := os.environ.get("RUNTIME_DIRECTORY"):
        return Path(runtime.split(":")[0]) / SOCKET_NAME
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "bulkforge" / SOCKET_NAME
    if os.geteuid() == 0:
        return Path("/run/bulkforge") / SOCKET_NAME
    return Path(f"/tmp/bulkforge-{os.geteuid()}") / SOCKET_NAME
