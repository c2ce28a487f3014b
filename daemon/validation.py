"""Turn pydantic's validation errors into one line a person can act on."""

from pydantic import ValidationError

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
