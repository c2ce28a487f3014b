"""Part: one part file of a generate job, a checkpoint once done."""

from enum import StrEnum

from bulkforge.daemon.machines import Tone, check_move


class PartState(StrEnum):
    PENDING = "pending"
    """To be generated (new, interrupted or retried)."""
    RUNNING = "running"
    """Being generated and written by a worker process."""
    DONE = "done"
    """Its file was durable (temp name, fsync, rename, fsync the directory) before this commit."""
    FAILED = "failed"
    """Its file could not be written (write), after the automatic retries."""


S = PartState

TONE: dict[PartState, Tone] = {
    S.PENDING: Tone.WAITING,
    S.RUNNING: Tone.ACTIVE,
    S.DONE: Tone.OK,
    S.FAILED: Tone.BAD,
}

MOVES: frozenset[tuple[PartState, PartState]] = frozenset(
    {
        (S.PENDING, S.RUNNING),
        (S.RUNNING, S.DONE),
        (S.RUNNING, S.FAILED),
        # Interrupted (pause, cancel, drain, kill -9) before it was committed.
        (S.RUNNING, S.PENDING),
        # `bfctl retry`.
        (S.FAILED, S.PENDING),
    }
)


def check_transition(old: PartState, new: PartState) -> None:
    check_move("part", MOVES, old, new)
