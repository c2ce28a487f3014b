"""File: one remote object to download into a job's destination."""

from enum import StrEnum

from bulkforge.daemon.machines import Machine, Tone


class FileState(StrEnum):
    PENDING = "pending"
    """Waiting for a transfer slot."""
    DOWNLOADING = "downloading"
    """Bytes are streaming into `<path>.partial`."""
    VERIFYING = "verifying"
    """All bytes received; size and checksum are checked, then fsync and rename."""
    DONE = "done"
    """Verified, fsynced and renamed into place before this state was committed."""
    FAILED = "failed"
    """The last attempt failed (step, error class, error, attempts recorded); retried
    automatically after its backoff while `retry_at` is set, else only by `bfctl retry`."""
    SKIPPED = "skipped"
    """Already on disk and matching; nothing was transferred."""


S = FileState

IN_FLIGHT = frozenset({S.DOWNLOADING, S.VERIFYING})

# How each state reads: an item whose tone is ok succeeded, bad failed; both have ended.
TONE: dict[FileState, Tone] = {
    S.PENDING: Tone.WAITING,
    S.DOWNLOADING: Tone.ACTIVE,
    S.VERIFYING: Tone.ACTIVE,
    S.DONE: Tone.OK,
    S.SKIPPED: Tone.OK,
    S.FAILED: Tone.BAD,
}

MOVES: frozenset[tuple[FileState, FileState]] = frozenset(
    {
        (S.PENDING, S.DOWNLOADING),
        (S.PENDING, S.SKIPPED),
        # Files larger than any batch can hold fail at planning time (reason oversize).
        (S.PENDING, S.FAILED),
        (S.DOWNLOADING, S.VERIFYING),
        (S.DOWNLOADING, S.FAILED),
        (S.VERIFYING, S.DONE),
        (S.VERIFYING, S.FAILED),
        # Interrupted by pause, cancel, shutdown or a crash: the partial stays for resume.
        (S.DOWNLOADING, S.PENDING),
        (S.VERIFYING, S.PENDING),
        # An automatic retry after backoff, and `bfctl retry`.
        (S.FAILED, S.DOWNLOADING),
        (S.FAILED, S.PENDING),
    }
)

MACHINE = Machine("file", FileState, TONE, MOVES)
check_transition = MACHINE.check_transition
