"""pydantic's validation errors in bfd's own words: the field by its path in the document
(`tables.t.columns.id.min`, `row 3: size`), what is wrong with the value given, and, for a
misspelt name (a field, a setting, a generator kind, a choice), the nearest known one.

Errors are worded by their *type* (`extra_forbidden`, `int_parsing`, `literal_error`, …),
never by pydantic's message, so every model gets the same words; a type without words of
its own gets a plain fallback. Where the model is known (given, or found by the error's
title), its fields name what an unknown key could have meant, and the labels pydantic puts
in a location for the branches of a union (`integer` in `columns.id.integer.min`, `str` in
`values.0.str`) are left out.
"""

import math
import re
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from bulkforge.proto.text import did_you_mean, listed, number, one_line

# field path -> a function wording what is wrong with a value its pattern refused
Explain = dict[str, Callable[[object], str]]

# What a branch of a plain union is called in a location, by pydantic-core.
_LABEL = re.compile(
    r"^(str|int|float|bool|bytes|none|decimal|date|datetime|time|timedelta|uuid|"
    r"(list|tuple|set|frozenset|dict|literal|function-\w+|lax-or-strict|json-or-python|"
    r"nullable|union|tagged-union|constrained-\w+|is-instance|model|default)\[.*\]|"
    r"constrained-\w+)$"
)
_QUOTED = re.compile(r"'((?:[^'\\]|\\.)*)'")

# What a value of each pattern bfd's models use looks like, in words.
PATTERNS = {
    r"^[A-Za-z_][A-Za-z0-9_]{0,62}$": "a name is 1 to 63 letters, digits or '_', not "
    "beginning with a digit",
    r"^[0-9a-fA-F]{64}$": "a SHA-256 is 64 hexadecimal digits",
    r"^[0-9a-fA-F]{32}$": "an MD5 is 32 hexadecimal digits",
    r"^[A-Za-z0-9 _-]{1,32}$": "1 to 32 letters, digits, spaces, '_' or '-'",
}

# A value of these types, as a person would name it.
_NOUNS = {
    "string_type": "text",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "list_type": "a list",
    "tuple_type": "a list",
    "set_type": "a list",
    "dict_type": "a table of keys and values",
    "mapping_type": "a table of keys and values",
    "model_type": "a table of fields",
    "model_attributes_type": "a table of fields",
    "date_type": "a date (YYYY-MM-DD)",
    "date_parsing": "a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "a date (YYYY-MM-DD)",
    "datetime_type": "a date and time (ISO 8601, YYYY-MM-DDTHH:MM:SS)",
    "datetime_parsing": "a date and time (ISO 8601, YYYY-MM-DDTHH:MM:SS)",
    "datetime_from_date_parsing": "a date and time (ISO 8601, YYYY-MM-DDTHH:MM:SS)",
    "datetime_object_invalid": "a date and time (ISO 8601, YYYY-MM-DDTHH:MM:SS)",
    "time_type": "a time of day (HH:MM[:SS])",
    "time_parsing": "a time of day (HH:MM[:SS])",
    "time_delta_type": "a duration (seconds, or ISO 8601 like PT1H)",
    "time_delta_parsing": "a duration (seconds, or ISO 8601 like PT1H)",
    "bytes_type": "bytes",
    "none_required": "empty (null)",
}


def describe(
    exc: ValidationError,
    explain: Explain | None = None,
    model: type | None = None,
    what: str = "field",
) -> str:
    """One line for every error of a pydantic ValidationError, in bfd's words.

    `explain` words a pattern refusal of a named field; `model` is the model validated (found
    by the error's title when not given); `what` is what its keys are called ("setting")."""
    model = model or _model_titled(exc.title)
    groups: dict[tuple, tuple[list, list[dict]]] = {}
    for error in exc.errors(include_url=False):
        path, kinds = _located(model, error["loc"])
        groups.setdefault(path, (kinds, []))[1].append(error)
    parts = []
    for path, (kinds, errors) in groups.items():
        parts.extend(_worded(kinds, path, errors, explain or {}, what))
    return "; ".join(dict.fromkeys(parts))


def _worded(
    kinds: list, path: tuple, errors: list[dict], explain: Explain, what: str
) -> Iterator[str]:
    """The words of the errors at one path; the branches of a union refused together."""
    if len(errors) > 1 and all(e["type"] in _NOUNS or e["type"] == "literal_error" for e in errors):
        wanted = [_wanted(e) for e in errors]
        yield _at(path, f"should be {_either(wanted)}, not {_got(errors[0]['input'])}")
        return
    for error in errors:
        kind = error["type"]
        key = _dotted(path)
        if kind == "string_pattern_mismatch" and key in explain:
            yield _at(path, explain[key](error["input"]))
        elif kind == "extra_forbidden":
            yield _unknown_key(kinds[-2] if len(kinds) > 1 else None, path, what)
        elif path and path[-1] == ("key",):
            yield _at(path[:-1], f"name {_message(error, kinds[-1])}")
        else:
            yield _at(path, _message(error, kinds[-1]))


def _message(error: dict, value_type: Any) -> str:
    """What is wrong with the value; value_type is its type in the model, where known."""
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    worded = _WORDS.get(kind)
    if worded is not None:
        return worded(ctx, given)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return _tag(kind, ctx, given, value_type)
    fields = _fields_of(value_type)
    if kind in ("model_type", "model_attributes_type") and fields:
        return f"should be a table (fields: {listed(fields, 8)}), not {_got(given)}"
    if kind in _NOUNS:
        return f"should be {_NOUNS[kind]}, not {_got(given)}{_out_of_range(ctx)}"
    if kind in ("value_error", "assertion_error"):
        # Our own validators' words, without pydantic's "Value error, " in front.
        return one_line(str(ctx.get("error", "is not a value bfd can take here")))
    return f"is not a value bfd can take here (got {_got(given)})"


# pydantic-core's reason for a date or time out of its calendar: "month value is outside
# expected range of 1-12" says which part, in our words.
_OUTSIDE = re.compile(r"^(\w+) value is outside expected range(?: of (\d+)-(\d+))?")


def _out_of_range(ctx: dict) -> str:
    found = _OUTSIDE.match(str(ctx.get("error", "")))
    if not found:
        return ""
    part, low, high = found.groups()
    if low is None:
        return (
            f" (no such {part} in that month)"
            if part == "day"
            else f" (its {part} is out of range)"
        )
    return f" (its {part} is not {low} to {high})"


def _bound(word: str, key: str) -> Callable[[dict, Any], str]:
    return lambda ctx, given: f"should be {word} {_number(ctx.get(key))}, not {_got(given)}"


def _length(word: str, key: str) -> Callable[[dict, Any], str]:
    def worded(ctx: dict, given: Any) -> str:
        count = ctx.get(key, 0)
        noun = "character" if "field_type" not in ctx else _item(ctx["field_type"])
        if word == "at least" and count == 1:
            return "must not be empty"
        actual = ctx.get("actual_length", len(given) if hasattr(given, "__len__") else None)
        has = f", not {actual:,}" if isinstance(actual, int) else ""
        return f"should hold {word} {count:,} {noun}{'s' if count != 1 else ''}{has}"

    return worded


def _choice(ctx: dict, given: Any) -> str:
    known = _QUOTED.findall(str(ctx.get("expected", ""))) or [str(ctx.get("expected", ""))]
    known = [name for name in known if name] or known  # '' stands for "not given"
    return f"{_got(given)} is not one of {listed(known)}{did_you_mean(given, known)}"


_WORDS: dict[str, Callable[[dict, Any], str]] = {
    "missing": lambda ctx, given: "missing (it is required)",
    "greater_than": _bound("more than", "gt"),
    "greater_than_equal": _bound("at least", "ge"),
    "less_than": _bound("less than", "lt"),
    "less_than_equal": _bound("at most", "le"),
    "multiple_of": _bound("a multiple of", "multiple_of"),
    "finite_number": lambda ctx, given: f"should be a finite number, not {_got(given)}",
    "int_parsing_size": lambda ctx, given: f"{_got(given)} is too large a number",
    "string_too_short": _length("at least", "min_length"),
    "string_too_long": _length("at most", "max_length"),
    "too_short": _length("at least", "min_length"),
    "too_long": _length("at most", "max_length"),
    "bytes_too_short": _length("at least", "min_length"),
    "bytes_too_long": _length("at most", "max_length"),
    "string_pattern_mismatch": lambda ctx, given: _pattern(ctx, given),
    "string_unicode": lambda ctx, given: "should be text (UTF-8)",
    "string_not_ascii": lambda ctx, given: f"should be ASCII, not {_got(given)}",
    "literal_error": _choice,
    "enum": _choice,
    "json_invalid": lambda ctx, given: f"not valid JSON ({ctx.get('error', 'unreadable')})",
    "recursion_loop": lambda ctx, given: "nested too deeply",
    "timezone_naive": lambda ctx, given: "should have no time zone",
    "timezone_aware": lambda ctx, given: "needs a time zone (e.g. 2024-01-01T00:00:00Z)",
    "date_from_datetime_inexact": lambda ctx, given: "should be a date with no time of day",
}


def _pattern(ctx: dict, given: Any) -> str:
    if given == "":
        return "must not be empty"
    words = PATTERNS.get(str(ctx.get("pattern")))
    return (
        f"{_got(given)} is not allowed: {words}"
        if words
        else (f"{_got(given)} has characters or a form that is not allowed")
    )


def _tag(kind: str, ctx: dict, given: Any, union: Any) -> str:
    """A discriminated union: the tag misspelt or missing (`kind = "sequnce"`)."""
    name = str(ctx.get("discriminator", "kind")).strip("'\"")
    known = _QUOTED.findall(str(ctx.get("expected_tags", ""))) or _tags_of(union)
    if kind == "union_tag_invalid":
        tag = ctx.get("tag", "")
        return f"unknown {name} {tag!r}{did_you_mean(tag, known)} (known: {listed(known)})"
    if isinstance(given, dict):
        return f"give its {name} (one of {listed(known)})"
    return f"should be a table with a {name} (one of {listed(known)}), not {_got(given)}"


def _unknown_key(parent_kind: Any, path: tuple, what: str) -> str:
    """An extra key: named with the nearest known one, at its parent's path."""
    parent, key = path[:-1], path[-1] if path else ""
    known = _fields_of(parent_kind)
    hint = did_you_mean(key, known) if known else ""
    # A near name says enough; a long list would bury it.
    those = f" (known: {listed(known)})" if known and not (hint and len(known) > 8) else ""
    return _at(parent, f"unknown {what} {str(key)!r}{hint}{those}")


# -- locations ---------------------------------------------------------------------------------


def _located(model, loc: tuple) -> tuple[tuple, list]:
    """The location without union labels (a key refusal ends in ("key",) after the key's
    path), and the type at each of its steps (kinds[0] the model, kinds[-1] the value's)."""
    if loc and loc[-1] == "[key]":
        path, kinds = _located(model, loc[:-2])
        return (*path, ("key",)), [*kinds, None]
    path: list = []
    kind: Any = model
    kinds: list = [_plain(kind)]
    for at, part in enumerate(loc):
        kind = _plain(kind)
        members = _union_members(kind)
        if members is not None:
            chosen = _branch(members, part)
            if chosen is not False:
                kind = chosen
                kinds[-1] = _plain(kind)
                continue
        elif kind is None and at < len(loc) - 1 and isinstance(part, str) and _LABEL.match(part):
            continue
        path.append(part)
        kind = _child(kind, part)
        kinds.append(_plain(kind))
    return tuple(path), kinds


def _plain(kind: Any) -> Any:
    """The type without Annotated and Optional around it."""
    while typing.get_origin(kind) is typing.Annotated:
        kind = typing.get_args(kind)[0]
    members = _union_members(kind)
    if members is not None:
        rest = [m for m in members if m is not type(None)]
        if len(rest) == 1:
            return _plain(rest[0])
    return kind


def _union_members(kind: Any) -> tuple | None:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return None


def _branch(members: tuple, part: object) -> Any:
    """The member a union label names (None when it names one of unknown type), or False when
    the part is no label but a key or an index."""
    if not isinstance(part, str):
        return False
    for member in members:
        if part in _literal_tags(member):
            return member
        if part == getattr(_plain(member), "__name__", None):
            return member
    if _LABEL.match(part):
        return None
    return False


def _literal_tags(member: Any) -> set:
    """The values of a model's Literal fields: the tags a discriminated union picks it by."""
    member = _plain(member)
    if not (isinstance(member, type) and issubclass(member, BaseModel)):
        return set()
    return {
        tag
        for field in member.model_fields.values()
        if field.is_required() and typing.get_origin(field.annotation) is typing.Literal
        for tag in typing.get_args(field.annotation)
    }


def _child(kind: Any, part: object) -> Any:
    """The type of `part` inside `kind`; None when not known."""
    kind = _plain(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        field = kind.model_fields.get(str(part))
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (list, tuple, set, frozenset) and args:
        return args[0]
    return None


def _fields_of(kind: Any) -> list[str]:
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return list(kind.model_fields)
    return []


def _tags_of(union: Any) -> list[str]:
    members = _union_members(union) or ()
    return sorted({str(tag) for member in members for tag in _literal_tags(member)})


def _model_titled(title: str) -> type | None:
    """The one model class named `title` (pydantic's title of a ValidationError)."""
    found, pending = [], [BaseModel]
    while pending:
        cls = pending.pop()
        subclasses = cls.__subclasses__()
        pending.extend(subclasses)
        found.extend(sub for sub in subclasses if sub.__name__ == title)
    return found[0] if len({tuple(sub.model_fields) for sub in found}) == 1 else None


# -- wording -----------------------------------------------------------------------------------


def _dotted(path: tuple) -> str:
    shown = ""
    for part in path:
        if isinstance(part, int):
            shown += f"[{part}]"
        elif part == ("key",):
            continue
        elif re.fullmatch(r"[\w-]+", str(part)):
            shown += f".{part}" if shown else str(part)
        else:
            shown += f"[{one_line(repr(str(part))[:80])}]"
    return shown


def _at(path: tuple, words: str) -> str:
    where = _dotted(path)
    return f"{where}: {words}" if where else words


def _got(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return one_line(text if len(text) <= 60 else text[:59] + "…")


def _number(value: Any) -> str:
    """A bound as people write it: 10,000 and 0.00001, never 1e-05."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return number(value)
    return str(value)


def _item(field_type: str) -> str:
    return {"Dictionary": "entry", "List": "item", "Data": "byte", "Value": "item"}.get(
        field_type, "item"
    )


def _wanted(error: dict) -> str:
    if error["type"] == "literal_error":
        return " or ".join(map(repr, _QUOTED.findall(str(error["ctx"].get("expected", "")))))
    return _NOUNS[error["type"]]


def _either(wanted: list[str]) -> str:
    unique = list(dict.fromkeys(wanted))
    return unique[0] if len(unique) == 1 else ", ".join(unique[:-1]) + " or " + unique[-1]
