"""The types of bfctl's numeric, size, limit and name flags, checked before bfd is called.

A bad value is a usage error (exit 2) that names the flag and says what is wrong;
sizes and limits are parsed by `proto/units.py`, as bfd parses them; names (states, kinds,
steps, markets) are checked against `proto/choices.py`, as bfd checks them.
"""

import argparse
from collections.abc import Callable

from bulkforge.proto import choices
from bulkforge.proto.text import number
from bulkforge.proto.units import (
    parse_count,
    parse_fraction,
    parse_limit,
    parse_size,
    size_text,
)


def _usage(parse: Callable[[str], object]) -> Callable[[str], object]:
    """argparse reports an ArgumentTypeError with the flag's name in front."""

    def checked(text: str) -> object:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def count(low: int, high: int | None = None) -> Callable[[str], object]:
    """A whole number in [low, high]."""
    return _usage(lambda text: parse_count(text, low, high))


def size(low: int = 0, high: int | None = None) -> Callable[[str], object]:
    """Bytes in [low, high], with the units bfd takes: 64MiB, 10TB, 512."""

    def parse(text: str) -> int:
        value = parse_size(text)
        if value < low or (high is not None and value > high):
            bounds = (
                f"at least {size_text(low)}"
                if high is None
                else f"from {size_text(low)} to {size_text(high)}"
            )
            raise ValueError(f"{text.strip()!r} is out of range: give {bounds}")
        return value

    return _usage(parse)


def _space(text: str) -> str:
    if text.strip() == "auto":
        return "auto"
    if parse_size(text) <= 0:
        raise ValueError(f"{text.strip()!r}: a disk offers some bytes; give e.g. 10TB or auto")
    return text.strip()


# One disk's bytes (10TB, 931GiB) or auto; passed on as written, for bfd to parse alike.
space = _usage(_space)
fraction = _usage(parse_fraction)


def seconds(allow_zero: bool = False, high: float = 10**9) -> Callable[[str], object]:
    """Seconds in (0, high], or [0, high] where 0 means no limit."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{text.strip()!r} is not a number of seconds") from None
        if not (0 <= value <= high) or (value == 0 and not allow_zero):
            least = "from 0" if allow_zero else "more than 0 and"
            raise ValueError(
                f"{text.strip()!r} is out of range: give {least} up to {number(high)} s"
            )
        return value

    return _usage(parse)


def _limit(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ValueError(f"{text!r}: give KEY=VALUE, e.g. bandwidth=50MB/s")
    parse_limit(key.strip(), value.strip())
    return key.strip(), value.strip()


# One `system --set KEY=VALUE`, checked here and passed on as written.
limit = _usage(_limit)


def one_of(what: str, known: tuple[str, ...], plugin: bool = False) -> Callable[[str], object]:
    """One name of `known` (a step, a state, a kind); '' for none given."""
    checked = _usage(lambda text: choices.check(what, text.strip(), known, plugin) if text else "")
    return _naming(checked, what, known, plugin)


def names_of(what: str, known: tuple[str, ...], plugin: bool = False) -> Callable[[str], object]:
    """A comma-separated list of names of `known` (klines,trades), blanks dropped."""

    def parse(text: str) -> list[str]:
        return [choices.check(what, name, known, plugin) for name in listed(what, text)]

    checked = _naming(_usage(parse), what, known, plugin)
    checked.listing = True  # type: ignore[attr-defined]
    return checked


def listed(what: str, text: str) -> list[str]:
    """The names of a comma-separated list (a, b), blanks dropped; an empty list is refused,
    never taken as "all" (`--kinds ,` or `--markets ''`): leaving the flag out means all."""
    given = [name.strip() for name in text.split(",") if name.strip()]
    if not given:
        raise ValueError(
            f"{text!r} names no {what}: give at least one, or leave the flag out for its default"
        )
    return given


def names(what: str) -> Callable[[str], object]:
    """A comma-separated list of any names (columns: --keep a,b), not empty."""
    checked = _usage(lambda text: listed(what, text))
    checked.listing = True  # type: ignore[attr-defined]
    return checked


def _naming(checked: Callable, what: str, known: tuple[str, ...], plugin: bool) -> Callable:
    """The names a flag takes, on its type, for bfctl's help and the tests' tables."""
    checked.what, checked.known, checked.plugin = what, known, plugin  # type: ignore[attr-defined]
    return checked
