"""Part: one part file of a generate job, a checkpoint once done."""

from enum import StrEnum

from bulkforge.daemon.machines import item_machine


class PartState(StrEnum):
    PENDING = "pending"
    """To be generated (new, interrupted or retried)."""
    RUNNING = "running"
    """Being generated and written by a worker process."""
    DONE = "done"
    """Its file was durable (temp name, fsync, rename, fsync the directory) before this commit."""
    FAILED = "failed"
    """Its file could not be written (write), after the automatic retries."""


MACHINE = item_machine("part", PartState)
TONE, MOVES, check_transition = MACHINE.tone, MACHINE.moves, MACHINE.check_transition
