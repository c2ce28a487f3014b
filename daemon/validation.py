"""Turn pydantic's validation errors into one line a person can act on."""

from collections.abc import Callable
from typing import Annotated

from pydantic import StringConstraints, ValidationError

from bulkforge.daemon import errors
from bulkforge.proto import units

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JobName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]

FRIENDLY = {
    "missing": "missing",
    "string_pattern_mismatch": "has characters or a form that is not allowed",
}


# field name -> a function wording what is wrong with a value its pattern refused
Explain = dict[str, Callable[[object], str]]


def describe(exc: ValidationError, explain: Explain | None = None) -> str:
    """One line for the errors; `explain` words a pattern refusal of a named field."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(loc) for loc in error["loc"]) or "value"
        explained = (explain or {}).get(field)
        if explained and error["type"] == "string_pattern_mismatch":
            parts.append(f"{field}: {explained(error['input'])}")
        else:
            parts.append(f"{field}: {_message(error)}")
    return "; ".join(parts)


def _message(error) -> str:
    if error["type"] == "value_error":
        # Our own validators' words, without pydantic's "Value error, " in front.
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return FRIENDLY.get(error["type"], error["msg"])


def parse_size(value: str, flag: str) -> int:
    try:
        return units.parse_size(value)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{flag}: {exc}") from None
