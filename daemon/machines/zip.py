"""Zip: one input zip of a clean job, cleaned into the partitions it feeds."""

from enum import StrEnum

from bulkforge.daemon.machines import Tone, check_move


class ZipState(StrEnum):
    PENDING = "pending"
    """Registered (new, changed or retried): the partitions it feeds are to be rebuilt."""
    RUNNING = "running"
    """Its series is being cleaned in a worker process."""
    DONE = "done"
    """Every partition it feeds was durable, with it among its sources, before this commit."""
    FAILED = "failed"
    """It could not be read (open, parse, schema) or its partitions written (write)."""


S = ZipState

TONE: dict[ZipState, Tone] = {
    S.PENDING: Tone.WAITING,
    S.RUNNING: Tone.ACTIVE,
    S.DONE: Tone.OK,
    S.FAILED: Tone.BAD,
}

MOVES: frozenset[tuple[ZipState, ZipState]] = frozenset(
    {
        (S.PENDING, S.RUNNING),
        (S.RUNNING, S.DONE),
        (S.RUNNING, S.FAILED),
        # Interrupted (pause, cancel, drain, kill -9) before its series was committed.
        (S.RUNNING, S.PENDING),
        # `bfctl retry`, or a rescan that found the file changed.
        (S.FAILED, S.PENDING),
        # A rescan found the file changed since it was cleaned.
        (S.DONE, S.PENDING),
    }
)


def check_transition(old: ZipState, new: ZipState) -> None:
    check_move("zip", MOVES, old, new)
