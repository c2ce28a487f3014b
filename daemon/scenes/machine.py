"""Scene: one item of a scenes job (a URL row of a parquet, a scene token)."""

from enum import StrEnum

from bulkforge.daemon.machines import item_machine


class SceneState(StrEnum):
    PENDING = "pending"
    """Registered, waiting for a worker; or interrupted before its shard was durable."""
    RUNNING = "running"
    """Going through its steps."""
    DONE = "done"
    """Every step succeeded and its shard was durable before this was committed."""
    FAILED = "failed"
    """A step failed; step, error class and message are recorded. Only `bfctl retry` takes
    it again."""


MACHINE = item_machine("scene", SceneState)
TONE, MOVES, check_transition = MACHINE.tone, MACHINE.moves, MACHINE.check_transition
