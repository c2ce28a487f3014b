"""What the daemon knows of the filesystems under its destinations."""

import os
import shutil
from pathlib import Path

import psutil


def mount_point(path: Path) -> Path:
    path = Path(os.path.realpath(path))
    while not os.path.ismount(path):
        path = path.parent
    return path


def describe_disk(path: Path) -> str:
    """A short name for the filesystem holding path: mount point, device and fs type."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    mount = mount_point(existing)
    device = os.stat(existing).st_dev
    fstype = next(
        (p.fstype for p in psutil.disk_partitions(all=True) if Path(p.mountpoint) == mount), "?"
    )
    return f"{mount} ({fstype}, dev {os.major(device)}:{os.minor(device)})"


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on path's filesystem."""
    return shutil.disk_usage(path).free
