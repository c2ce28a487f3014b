"""The state machines of the store: one module each, states mirrored by CHECKs in schema.sql."""

from enum import StrEnum


class Tone(StrEnum):
    """How a state reads to a person; clients colour by tone and never list states themselves."""

    WAITING = "waiting"
    ACTIVE = "active"
    HELD = "held"
    OK = "ok"
    BAD = "bad"
    IDLE = "idle"


class IllegalTransition(Exception):
    """A move the machine's table does not allow: a bug in the caller, never overwritten."""


class TransitionConflict(Exception):
    """A guarded write found the row in another state than expected (someone moved it first)."""


def check_move(
    machine: str, moves: frozenset[tuple[StrEnum, StrEnum]], old: StrEnum, new: StrEnum
) -> None:
    if (old, new) not in moves:
        raise IllegalTransition(f"{machine}: {old} -> {new} is not an allowed move")
