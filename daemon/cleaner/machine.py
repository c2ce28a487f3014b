"""Zip: one input zip of a clean job, cleaned into the partitions it feeds."""

from enum import StrEnum

from bulkforge.daemon.machines import item_machine


class ZipState(StrEnum):
    PENDING = "pending"
    """Registered (new, changed or retried): the partitions it feeds are to be rebuilt."""
    RUNNING = "running"
    """Its series is being cleaned in a worker process."""
    DONE = "done"
    """Every partition it feeds was durable, with it among its sources, before this commit."""
    FAILED = "failed"
    """It could not be read (open, parse, schema) or its partitions written (write); `bfctl
    retry`, or a rescan that finds the file changed, makes it pending again."""


S = ZipState

MACHINE = item_machine(
    "zip",
    ZipState,
    # A rescan found the file changed since it was cleaned.
    also={(S.DONE, S.PENDING)},
)
TONE, MOVES, check_transition = MACHINE.tone, MACHINE.moves, MACHINE.check_transition
