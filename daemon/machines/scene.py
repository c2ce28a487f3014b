"""Scene: one item of an item-level job (a URL row of a parquet, a scene token)."""

from enum import StrEnum

from bulkforge.daemon.machines import Tone, check_move


class SceneState(StrEnum):
    PENDING = "pending"
    """Registered, waiting for a worker."""
    RUNNING = "running"
    """Going through its steps."""
    DONE = "done"
    """Every step succeeded and its shard was durable before this was committed."""
    FAILED = "failed"
    """A step failed; step, error class and message are recorded."""


S = SceneState

# How each state reads: an item whose tone is ok succeeded, bad failed; both have ended.
TONE: dict[SceneState, Tone] = {
    S.PENDING: Tone.WAITING,
    S.RUNNING: Tone.ACTIVE,
    S.DONE: Tone.OK,
    S.FAILED: Tone.BAD,
}

MOVES: frozenset[tuple[SceneState, SceneState]] = frozenset(
    {
        (S.PENDING, S.RUNNING),
        (S.RUNNING, S.DONE),
        (S.RUNNING, S.FAILED),
        # Interrupted before its shard was durable.
        (S.RUNNING, S.PENDING),
        # Only `bfctl retry`.
        (S.FAILED, S.PENDING),
    }
)


def check_transition(old: SceneState, new: SceneState) -> None:
    check_move("scene", MOVES, old, new)
