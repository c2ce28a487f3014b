"""Batch: a disk-sized group of files (or a chunk or shard of an item job)."""

from enum import StrEnum

from bulkforge.daemon.machines import Machine, Tone


class BatchState(StrEnum):
    PLANNED = "planned"
    """Its files are chosen; nothing of it is on disk yet."""
    ACTIVE = "active"
    """Its files are being fetched onto the disk it records."""
    VERIFYING = "verifying"
    """Every file is in; the batch is checked as a whole."""
    COMPLETE = "complete"
    """Verified on its disk."""
    ARCHIVED = "archived"
    """The operator took the disk or moved the data away; the store remembers where."""
    CANCELLED = "cancelled"
    """Its job was cancelled before the batch ended: nothing more of it will come."""


S = BatchState

TONE: dict[BatchState, Tone] = {
    S.PLANNED: Tone.WAITING,
    S.ACTIVE: Tone.ACTIVE,
    S.VERIFYING: Tone.ACTIVE,
    S.COMPLETE: Tone.OK,
    S.ARCHIVED: Tone.IDLE,
    S.CANCELLED: Tone.IDLE,
}

# What a cancelled job's batches may be in when it is cancelled: each ends as CANCELLED.
UNFINISHED: tuple[BatchState, ...] = (S.PLANNED, S.ACTIVE, S.VERIFYING)

MOVES: frozenset[tuple[BatchState, BatchState]] = frozenset(
    {
        (S.PLANNED, S.ACTIVE),
        (S.ACTIVE, S.VERIFYING),
        (S.VERIFYING, S.COMPLETE),
        # A verification that finds missing or changed files sends the batch back.
        (S.VERIFYING, S.ACTIVE),
        (S.COMPLETE, S.ARCHIVED),
        # `retry` re-opens a complete batch whose failed files it re-queued (its disk is
        # still in place; an archived batch's disk is gone, so its failures stay).
        (S.COMPLETE, S.ACTIVE),
        # A cancelled job's unfinished batches end with it.
        *((unfinished, S.CANCELLED) for unfinished in UNFINISHED),
    }
)

MACHINE = Machine("batch", BatchState, TONE, MOVES)
check_transition = MACHINE.check_transition
