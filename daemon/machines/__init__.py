"""The state machines of the store, and how each is declared: one `Machine` a module.

The core's machines (job, batch) are here; each kind's item machine is declared in its own
package's `machine.py`, most through `item_machine`, the shape item-level kinds share. Their
states are mirrored by CHECKs in schema.sql.

This is the core, not the seam (`pipeline.py`): the store checks every move against a machine,
and the seam imports the store, so a machine may import nothing of bfd but this module.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar


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


E = TypeVar("E", bound=StrEnum)


@dataclass(frozen=True)
class Machine(Generic[E]):
    """One state machine: its states (a `StrEnum` whose members say what each means), the tone
    of each in the order they happen, and the moves allowed between them.

    A declaration that leaves a state without a tone, or moves to or from a stranger, is
    refused when its module is imported: a bug found at start, never at a move.
    """

    name: str
    states: type[E]
    tone: Mapping[E, Tone]
    moves: frozenset[tuple[E, E]]

    def __post_init__(self) -> None:
        untoned = [str(state) for state in self.states if state not in self.tone]
        named = [*(state for move in self.moves for state in move), *self.tone]
        strangers = sorted({repr(state) for state in named if not isinstance(state, self.states)})
        if untoned or strangers or not self.moves:
            raise ValueError(
                f"machine {self.name}: states without a tone {untoned}, "
                f"not its states {strangers}, {len(self.moves)} moves"
            )

    def check_transition(self, old: E, new: E) -> None:
        check_move(self.name, self.moves, old, new)


# The states every item of an item-level kind goes through, by value, each with its tone.
ITEM_TONES: dict[str, Tone] = {
    "pending": Tone.WAITING,
    "running": Tone.ACTIVE,
    "done": Tone.OK,
    "failed": Tone.BAD,
}


def item_machine(name: str, states: type[E], *, also: Iterable[tuple[E, E]] = ()) -> Machine[E]:
    """The machine of an item that a worker takes, ends done or failed, and may take again.

    `states` is the kind's `StrEnum` of exactly pending, running, done and failed (their docs
    say what each means for its items). The moves: pending -> running -> done or failed; an
    item interrupted (pause, cancel, drain, kill -9) before its outcome was committed goes
    back to pending; `bfctl retry` sends a failed one back to pending. `also` adds the
    kind's own moves.
    """
    values = [state.value for state in states]
    if sorted(values) != sorted(ITEM_TONES):
        raise ValueError(f"item machine {name}: states {values}, expected {list(ITEM_TONES)}")
    pending, running, done, failed = (states(value) for value in ITEM_TONES)
    moves = {
        (pending, running),
        (running, done),
        (running, failed),
        (running, pending),
        (failed, pending),
        *also,
    }
    tone = {state: ITEM_TONES[state.value] for state in states}
    return Machine(name, states, tone, frozenset(moves))
