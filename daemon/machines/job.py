"""Job: one submitted unit of work (a download, a scenes run, a cleaning, a generation)."""

from enum import StrEnum

from bulkforge.daemon.machines import Machine, Tone


class JobState(StrEnum):
    QUEUED = "queued"
    """Accepted and stored; the scheduler has not started it yet."""
    RUNNING = "running"
    """The scheduler hands its items to a pipeline."""
    PAUSED = "paused"
    """Stopped by the operator; nothing new starts until `resume`."""
    AWAITING_SWAP = "awaiting_swap"
    """A disk batch is complete and the next one does not fit: the operator swaps or empties."""
    COMPLETED = "completed"
    """Every item ended done or skipped."""
    FAILED = "failed"
    """Nothing is left to try, and some items failed for good; `retry` re-queues them."""
    CANCELLED = "cancelled"
    """Stopped for good by the operator."""


S = JobState

TERMINAL = frozenset({S.COMPLETED, S.FAILED, S.CANCELLED})
LIVE = frozenset({S.QUEUED, S.RUNNING, S.PAUSED, S.AWAITING_SWAP})
# The states in which a kind's runner takes a job's work.
RUNNABLE = (S.QUEUED, S.RUNNING)

TONE: dict[JobState, Tone] = {
    S.QUEUED: Tone.WAITING,
    S.RUNNING: Tone.ACTIVE,
    S.PAUSED: Tone.IDLE,
    S.AWAITING_SWAP: Tone.HELD,
    S.COMPLETED: Tone.OK,
    S.FAILED: Tone.BAD,
    S.CANCELLED: Tone.IDLE,
}

MOVES: frozenset[tuple[JobState, JobState]] = frozenset(
    {
        (S.QUEUED, S.RUNNING),
        (S.RUNNING, S.PAUSED),
        (S.PAUSED, S.RUNNING),
        (S.RUNNING, S.AWAITING_SWAP),
        (S.AWAITING_SWAP, S.RUNNING),
        (S.RUNNING, S.COMPLETED),
        (S.RUNNING, S.FAILED),
        # `retry` after the job ended with failures queues it again; so does `resume` of
        # an ended job whose kind re-reads its input (a clean job cleans what changed).
        (S.FAILED, S.QUEUED),
        (S.COMPLETED, S.QUEUED),
        *((live, S.CANCELLED) for live in LIVE),
    }
)

MACHINE = Machine("job", JobState, TONE, MOVES)
check_transition = MACHINE.check_transition
