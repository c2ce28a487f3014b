"""What the daemon knows of the filesystems under its destinations.

A batch records the disk it went to, so an operator can find it years later
and a swap can tell a new disk from the old one emptied: the mount point, the
device number, the filesystem id (statfs f_fsid: a new tmpfs or a reformatted
disk gets a new one), and the UUID and label where udev knows them.
"""

import asyncio
import contextlib
import errno
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bulkforge.daemon.durable import disk_errors
from bulkforge.daemon.errors import InvalidArgument
from bulkforge.daemon.settings import Settings
from bulkforge.proto.units import shown

BY_UUID = Path("/dev/disk/by-uuid")
BY_LABEL = Path("/dev/disk/by-label")


@dataclass(frozen=True)
class Disk:
    mount: str
    device: str
    fsid: str
    fstype: str
    uuid: str = ""
    label: str = ""

    @property
    def key(self) -> str:
        """Equal for the same filesystem, different for another one at the same place."""
        return f"{self.device}/{self.fsid}/{self.uuid}"

    def describe(self) -> str:
        extra = "".join(
            f", {name} {value}"
            for name, value in (("uuid", self.uuid), ("label", self.label))
            if value
        )
        return f"{self.mount} ({self.fstype}, dev {self.device}{extra})"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Disk | None":
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None  # a free-text disk of an older store


def mount_point(path: Path) -> Path:
    path = Path(os.path.realpath(path))
    while not os.path.ismount(path):
        path = path.parent
    return path


def identify(path: Path) -> Disk:
    """The filesystem holding path (or its nearest existing parent)."""
    existing = path
    while not existing.exists():
        existing = existing.parent
    mount = mount_point(existing)
    device = os.stat(existing).st_dev
    fstype = next(
        (p.fstype for p in psutil.disk_partitions(all=True) if Path(p.mountpoint) == mount), "?"
    )
    return Disk(
        mount=str(mount),
        device=f"{os.major(device)}:{os.minor(device)}",
        fsid=f"{os.statvfs(existing).f_fsid:x}",
        fstype=fstype,
        uuid=_udev_name(BY_UUID, device),
        label=_udev_name(BY_LABEL, device),
    )


def describe_disk(path: Path) -> str:
    """A short name for the filesystem holding path: mount point, device and fs type."""
    return identify(path).describe()


def _udev_name(directory: Path, device: int) -> str:
    """The name udev gives the block device `device` in directory, if any."""
    try:
        links = list(directory.iterdir())
    except OSError:
        return ""
    for link in links:
        try:
            if os.stat(link).st_rdev == device:
                return link.name
        except OSError:
            continue
    return ""


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on path's filesystem."""
    return shutil.disk_usage(path).free


# Never a place for data, whatever the data roots say (checked as given and as resolved).
NEVER = tuple(
    Path(p) for p in ("/proc", "/sys", "/dev", "/run", "/boot", "/etc", "/usr", "/bin", "/sbin",
                      "/lib", "/lib32", "/lib64")
)  # fmt: skip
MAX_DEST_BYTES = 1024
MAX_DEST_DEPTH = 64
NAME_MAX = 255


@dataclass(frozen=True)
class Places:
    """Where bfd may write data: the operator's data roots, never NEVER or its own state."""

    roots: tuple[Path, ...]
    state_dir: Path

    @classmethod
    def of(cls, settings: Settings) -> "Places":
        return cls(tuple(settings.data_roots), settings.state_dir)

    def check(self, given: Path | str, what: str = "dest") -> Path:
        """given as an absolute path inside a data root, or InvalidArgument saying why."""
        text = str(given)
        quoted = shown(text, 80)
        if "\x00" in text:
            raise InvalidArgument(f"{what} {quoted} contains a NUL byte")
        path = Path(text)
        if not text or not path.is_absolute():
            raise InvalidArgument(f"{what} {quoted} must be an absolute path")
        if len(text.encode()) > MAX_DEST_BYTES or len(path.parts) > MAX_DEST_DEPTH:
            raise InvalidArgument(
                f"{what} {quoted} is longer than {MAX_DEST_BYTES} bytes or "
                f"{MAX_DEST_DEPTH} directories deep"
            )
        if any(len(part.encode()) > NAME_MAX for part in path.parts):
            raise InvalidArgument(f"{what} {quoted} has a name longer than {NAME_MAX} bytes")
        resolved = Path(os.path.realpath(path))
        for never in NEVER:
            if path.is_relative_to(never) or resolved.is_relative_to(never):
                raise InvalidArgument(f"{what} {quoted} is under {never}: bfd never writes there")
        state = Path(os.path.realpath(self.state_dir))
        if resolved.is_relative_to(state) or state.is_relative_to(resolved):
            raise InvalidArgument(
                f"{what} {quoted} holds or is inside bfd's state dir {self.state_dir}"
            )
        if not any(resolved.is_relative_to(os.path.realpath(root)) for root in self.roots):
            roots = ", ".join(map(str, self.roots))
            raise InvalidArgument(
                f"{what} {quoted} is outside bfd's data roots ({roots}); the operator "
                "names them with bfd --data-root"
            )
        return path


@contextlib.asynccontextmanager
async def dest_for(given: Path | str, places: Places) -> AsyncIterator[Path]:
    """A job's or an export's dest, checked against places and created when missing.

    Every verb that points a job at a dest goes through here: submit, and swap onto a
    new disk (whose dest directory does not exist yet on the empty filesystem).

    If the work is then refused, the directories made for it go again (those still empty):
    a refused command leaves nothing behind.
    """
    with disk_errors(given):  # a disk that fails under a look refuses it as failed
        checked = await asyncio.to_thread(places.check, given)
        missing = await asyncio.to_thread(missing_parts, checked)
        dest = await asyncio.to_thread(_make_dest, checked)
    try:
        yield dest
    except Exception:  # refused; not a cancel, which may come after the job was created
        await asyncio.to_thread(remove_empty, missing)
        raise


def missing_parts(dest: Path) -> list[Path]:
    """dest and its ancestors that do not exist yet, deepest first."""
    missing = []
    while dest.is_absolute() and not dest.exists() and dest != dest.parent:
        missing.append(dest)
        dest = dest.parent
    return missing


def remove_empty(directories: list[Path]) -> None:
    """rmdir each that is empty, deepest first (one that is not stays, with what it holds)."""
    for directory in sorted(set(directories), key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _make_dest(given: Path | str) -> Path:
    """dest made (mkdir -p) and usable: a directory bfd may write into, or InvalidArgument."""
    dest = Path(given)
    if not str(given) or not dest.is_absolute():
        raise InvalidArgument(f"dest {str(given)!r} must be an absolute path")
    if dest.exists() and not dest.is_dir():
        raise InvalidArgument(f"dest {dest} is not a directory")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.EIO:
            raise  # the disk failed (dest_for says so), not the request; EROFS is said below
        raise InvalidArgument(f"cannot create dest {dest}: {exc.strerror}") from None
    if not dest.is_dir():
        raise InvalidArgument(f"dest {dest} is not a directory")
    if os.statvfs(dest).f_flag & os.ST_RDONLY:
        raise InvalidArgument(f"dest {dest} is on a read-only filesystem")
    if not os.access(dest, os.W_OK | os.X_OK):
        raise InvalidArgument(f"bfd may not write into dest {dest} (check its owner and mode)")
    return dest
