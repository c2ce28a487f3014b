"""What a job wrote into its dest: whose it is, and deleting it.

A kind whose output is numbered per job (scenes shards 00000…, generate parts
part-00000…) cannot share a dest: a second job would overwrite the first's
low numbers and leave its high ones beside its own, and readers would take the
mix for one dataset. Such a job leaves a marker in its dest, `.bulkforge-job`,
naming it (its name, kind and id, and the state dir of the bfd that ran it); a
dot name, so Parquet, CSV and webdataset readers of the dest skip it. The
marker outlives the job's row (`bfctl remove` keeps the files), so a later
submit can say whose output sits there: a job of this bfd, a removed one, or a
job of another bfd.

An export (`bfctl export`) goes beside a job's output, never into it: its files
would be read as part of the dataset (a Parquet of another schema, a JSON that
readers cannot open). Not even under an underscored folder: pyarrow and pandas
skip one, but DuckDB's and polars' `DEST/**/*.parquet` globs do not.

`bfctl remove NAME --delete-output` deletes what the job wrote: the paths its
kind derives from the job's rows (never a glob of the dest), each checked to lie
inside the dest, and the directories left empty by it.
"""

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from bulkforge.daemon.durable import fsync_or_die, sync_directories, write_durably
from bulkforge.daemon.errors import InvalidArgument

MARKER = ".bulkforge-job"
# A marker bigger than this is not one of ours.
MARKER_MAX_BYTES = 4096
# Paths named one by one in a removal's answer; the counts cover them all.
LISTED_MAX = 1000


@dataclass(frozen=True)
class Owner:
    """The job a dest's marker names."""

    name: str
    kind: str
    job_id: int
    state_dir: str


def state_dir_key(state_dir: Path | str) -> str:
    return os.path.realpath(state_dir)


def write_marker(dest: Path, owner: Owner) -> None:
    """DEST/.bulkforge-job names the job whose numbered output the dest holds."""
    text = json.dumps(
        {"job": owner.name, "kind": owner.kind, "id": owner.job_id, "state_dir": owner.state_dir},
        sort_keys=True,
    )
    write_durably(dest / MARKER, (text + "\n").encode())
    fsync_or_die(dest)


def read_marker(dest: Path) -> Owner | None:
    """The job the dest's marker names; None without one (or one that is not ours)."""
    try:
        with open(dest / MARKER, "rb") as marker:
            data = json.loads(marker.read(MARKER_MAX_BYTES + 1)[:MARKER_MAX_BYTES])
        return Owner(str(data["job"]), str(data["kind"]), int(data["id"]), str(data["state_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def refuse_export_into(export_dest: str, job_dest: str) -> None:
    """InvalidArgument when an export's dest is the job's output folder or inside it."""
    export, output = Path(os.path.realpath(export_dest)), Path(os.path.realpath(job_dest))
    if not export.is_relative_to(output):
        return
    raise InvalidArgument(
        f"dest {export_dest}: that is inside the job's output {job_dest}, whose readers "
        "(pyarrow, pandas, polars, DuckDB) would take the export's files for part of the "
        f"dataset; export beside it, e.g. to {output.parent / (output.name + '-export')}"
    )


@dataclass
class Deleted:
    """What a removal deleted: files, directories, bytes, and the paths (up to LISTED_MAX)."""

    files: int = 0
    directories: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)
    # (path, why) of what could not be deleted (a read-only disk, a mode): the job stays.
    failed: list[tuple[str, str]] = field(default_factory=list)

    def note(self, path: Path) -> None:
        if len(self.paths) < LISTED_MAX:
            self.paths.append(str(path))


def delete_paths(dest: Path, relative: Iterable[str]) -> Deleted:
    """Delete each path under dest that exists (a file, or a directory wholly the job's),
    then the directories under dest that this left empty. A path that would lead outside
    dest (`..`, a symlinked directory) is skipped."""
    deleted = Deleted()
    root = Path(os.path.realpath(dest))
    parents: set[Path] = set()
    for name in relative:
        path = root / name
        if not _inside(root, path):
            continue
        try:
            status = path.lstat()
        except OSError:
            continue  # not there (never written, or deleted before)
        try:
            if path.is_dir() and not path.is_symlink():
                _delete_tree(path, deleted)
            else:
                path.unlink()
                deleted.files += 1
                deleted.bytes += status.st_size
        except OSError as exc:
            deleted.failed.append((str(path), exc.strerror or str(exc)))
            continue
        deleted.note(path)
        parents.add(path.parent)
    for directory in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        _remove_empty_up_to(directory, root, deleted)
    # The deletions are made durable before the rows that named the files go.
    sync_directories({d for d in (*parents, root) if d.is_dir()})
    return deleted


def _inside(root: Path, path: Path) -> bool:
    """path's directory, resolved, is root or under it, and its name is a plain name."""
    if path.name in ("", ".", "..") or ".." in path.relative_to(root).parts:
        return False
    return Path(os.path.realpath(path.parent)).is_relative_to(root)


def _delete_tree(directory: Path, deleted: Deleted) -> None:
    for parent, dirs, names in os.walk(directory):
        deleted.directories += len(dirs)
        for name in names:
            with contextlib.suppress(OSError):
                deleted.bytes += os.lstat(os.path.join(parent, name)).st_size
                deleted.files += 1
    shutil.rmtree(directory)
    deleted.directories += 1


def _remove_empty_up_to(directory: Path, root: Path, deleted: Deleted) -> None:
    """rmdir directory and its parents while empty, never root itself."""
    while directory != root and directory.is_relative_to(root):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or gone): what is left there stays
        deleted.directories += 1
        directory = directory.parent
