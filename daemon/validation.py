"""Turn pydantic's validation errors into one line a person can act on."""

from typing import Annotated

from pydantic import StringConstraints, TypeAdapter, ValidationError

from bulkforge.daemon import errors
from bulkforge.daemon.settings import Size

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
JobName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
SIZE = TypeAdapter(Size)

FRIENDLY = {
    "missing": "missing",
    "string_pattern_mismatch": "has characters or a form that is not allowed",
}


def describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = ".".join(str(loc) for loc in error["loc"]) or "value"
        parts.append(f"{field}: {_message(error)}")
    return "; ".join(parts)


def _message(error) -> str:
    if error["type"] == "value_error":
        # Our own validators' words, without pydantic's "Value error, " in front.
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return FRIENDLY.get(error["type"], error["msg"])


def parse_size(value: str, flag: str) -> int:
    try:
        return int(SIZE.validate_python(value.strip()))
    except ValidationError:
        raise errors.InvalidArgument(f"{flag} {value!r} is not a size (e.g. 64MiB)") from None
