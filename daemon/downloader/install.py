"""Making received files durable in groups: fsync, rename into place, fsync the directory.

Every file must be on disk before its row says `done`. Done one by one, that is
an fsync per file and per directory, about half a millisecond each on ext4:
more than the transfer of a small file costs. The installer instead takes every
file that finished receiving while the previous group was being synced and
makes the whole group durable at once:

1. `syncfs()` on each filesystem the group touches writes all their dirty pages
   and commits the journal once (since Linux 5.8 it also reports a write-back
   error of any file there; on older kernels, or without syncfs, each partial
   is fsynced on its own instead, which costs a device flush per file);
2. each partial's size is checked and it is renamed to its final name;
3. a second `syncfs()` commits all the renames at once (without it, each
   directory that gained a name is fsynced).

Only then is the group committed `done`, in one store operation for all of it
(the installer's `commit`), and only then do the callers' awaits return; the
next group is synced meanwhile. A crash anywhere in between leaves partials or
renamed-but-uncommitted files, which the next run finds and checks by checksum
(`Fetcher._matching_target`).
"""

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bulkforge.daemon.durable import (
    SYNCFS_REPORTS_ERRORS,
    DiskFailed,
    disk_failed,
    sync_directories,
    sync_filesystems,
)
from bulkforge.daemon.failures import Failure
from bulkforge.proto.units import sizes_apart

# Files taken into one group at most; a group's syncs cost about the same for 1 or 1,000.
GROUP_MAX = 1024


class InstallFailed(Exception):
    """This one file cannot be installed (it changed under us, or its name is taken)."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


@dataclass
class Installable:
    """A verified partial and where it goes."""

    partial: Path
    target: Path
    size: int
    # The target was already in place and matching (renamed before a crash): only sync it.
    installed: bool = False
    # The file's row, for the commit.
    file_id: int = 0
    # Fetched as ranges (its segment rows go with the commit).
    ranged: bool = False
    # The sha256 bfd computed of its bytes, recorded with its `done`.
    sha256: str | None = None


# Records a durable group as done: per item None, or why it could not be.
Commit = Callable[[list[Installable]], Awaitable[list[Exception | None]]]


@dataclass
class _Waiting:
    item: Installable
    future: asyncio.Future = field(repr=False)


class Installer:
    """Groups the installs of concurrent transfers; one group is synced at a time."""

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._queue: list[_Waiting] = []
        self._worker: asyncio.Task | None = None
        self._committing: set[asyncio.Task] = set()
        self.groups = 0
        self.files = 0

    async def install(self, item: Installable) -> None:
        """Return once item is durable under its final name and committed.

        Raises InstallFailed or DiskFailed, or what the commit raised (StoreFatal).
        """
        future = asyncio.get_running_loop().create_future()
        # A caller cancelled meanwhile (a drain) never hears the group's outcome: retrieved
        # here, an unheard failure is not reported as a lost exception at exit.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._queue.append(_Waiting(item, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        # Shielded: a cancelled caller must not cancel a group others wait on.
        await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
            try:
                outcomes = await asyncio.to_thread(install_group, [w.item for w in group])
            except Exception as exc:  # a bug: every file of the group is in doubt
                outcomes = [exc] * len(group)
            else:
                self.groups += 1
                self.files += len(group)
            # Committed while the next group syncs.
            task = asyncio.create_task(self._commit_and_settle(group, outcomes))
            self._committing.add(task)
            task.add_done_callback(self._committing.discard)

    async def _commit_and_settle(
        self, group: list[_Waiting], outcomes: list[Exception | None]
    ) -> None:
        durable = [w for w, outcome in zip(group, outcomes, strict=True) if outcome is None]
        settled = dict(zip(map(id, group), outcomes, strict=True))
        if durable:
            try:
                committed = await self._commit([w.item for w in durable])
            except Exception as exc:
                committed = [exc] * len(durable)
            settled.update(zip(map(id, durable), committed, strict=True))
        for waiting in group:
            _settle(waiting.future, settled[id(waiting)])


def _settle(future: asyncio.Future, outcome: Exception | None) -> None:
    if future.done():
        return
    if outcome is None:
        future.set_result(None)
    else:
        future.set_exception(outcome)


def install_group(items: list[Installable]) -> list[Exception | None]:
    """Make items durable under their final names; per item None or why not.

    A filesystem at a time: when one refuses a sync or a rename (its disk failed), each
    of its files gets that DiskFailed, and the files on the other disks go on.
    """
    outcomes: dict[int, Exception | None] = {}
    for on_one_disk in _by_filesystem(items):
        try:
            installed = _install_on_one_disk(on_one_disk)
        except DiskFailed as exc:  # every file written there is in doubt
            installed = [exc] * len(on_one_disk)
        outcomes.update(zip(map(id, on_one_disk), installed, strict=True))
    return [outcomes[id(item)] for item in items]


def _by_filesystem(items: list[Installable]) -> list[list[Installable]]:
    groups: dict[int | Path, list[Installable]] = {}
    for item in items:
        try:
            key: int | Path = os.stat(item.target.parent).st_dev
        except OSError:
            key = item.target.parent  # on its own: it fails below, with its name
        groups.setdefault(key, []).append(item)
    return list(groups.values())


def _install_on_one_disk(items: list[Installable]) -> list[Exception | None]:
    """Per item None or InstallFailed; DiskFailed when the disk refuses a sync or a rename."""
    directories = {item.target.parent for item in items}
    if SYNCFS_REPORTS_ERRORS:
        sync_filesystems(directories)
    outcomes: list[Exception | None] = []
    for item in items:
        try:
            _check_and_sync(item, fsync=not SYNCFS_REPORTS_ERRORS)
            if not item.installed:
                _rename(item)
            outcomes.append(None)
        except InstallFailed as exc:
            outcomes.append(exc)
    sync_directories(directories)
    return outcomes


def _check_and_sync(item: Installable, fsync: bool) -> None:
    """The file still holds what was verified; fsynced on its own when asked."""
    path = item.target if item.installed else item.partial
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if disk_failed(exc):
            raise DiskFailed(f"cannot open {path}: {exc.strerror}") from None
        message = f"cannot open {path}: {exc.strerror}"
        raise InstallFailed(Failure("rename", "io", message, True)) from None
    try:
        on_disk = os.fstat(fd).st_size
        if on_disk != item.size:
            found, wanted = sizes_apart(on_disk, item.size)
            message = f"{path} holds {found}, not {wanted}"
            raise InstallFailed(Failure("verify", "size", message, True))
        if fsync:
            os.fsync(fd)
    except OSError as exc:
        raise DiskFailed(f"cannot fsync {path}: {exc}") from exc
    finally:
        os.close(fd)


def _rename(item: Installable) -> None:
    try:
        os.replace(item.partial, item.target)
    except OSError as exc:
        if disk_failed(exc):  # the disk, not this file: every file of the group is in doubt
            raise DiskFailed(f"cannot rename into {item.target}: {exc.strerror}") from None
        message = f"cannot rename into {item.target}: {exc.strerror}"
        raise InstallFailed(Failure("rename", "io", message, True)) from None
