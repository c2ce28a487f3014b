"""argparse in bulkforge's words, for bfctl and bfd alike (standard library only).

A mistyped choice, command or flag is named with the nearest known one (`bfctl lsit`: did
you mean 'list'?), and a number flag says what it wants instead of argparse's "invalid int
value".
"""

import argparse
from collections.abc import Iterator

from bulkforge.proto.text import did_you_mean

# What a flag of these types wants, in words.
_WANTED = {int: "a whole number", float: "a number"}


class Parser(argparse.ArgumentParser):
    """argparse that suggests the nearest choice or flag for a mistyped one."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        hint = did_you_mean(value, choices)
        listed = ", ".join(map(repr, choices))
        raise argparse.ArgumentError(action, f"unknown {value!r}{hint} (one of {listed})")

    def _get_value(self, action: argparse.Action, text: str) -> object:
        wanted = _WANTED.get(action.type)  # type: ignore[call-overload]
        if wanted is None:
            return super()._get_value(action, text)
        try:
            return action.type(text)  # type: ignore[misc]
        except (TypeError, ValueError):
            raise argparse.ArgumentError(action, f"{text!r} is not {wanted}") from None

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(unrecognized(extras, sorted(set(option_strings(self)))))
        return parsed


def unrecognized(extras: list[str], known: list[str]) -> str:
    """What argparse could not place, with the nearest flag for a mistyped one."""
    flag = next((word for word in extras if word.startswith("-")), None)
    if flag is None:
        return f"unexpected {' '.join(map(repr, extras))}"
    name = flag.split("=", 1)[0]
    return f"unknown flag {name!r}{did_you_mean(name, known)}"


def option_strings(parser: argparse.ArgumentParser) -> Iterator[str]:
    """Every flag of the parser and of its commands."""
    for action in parser._actions:
        yield from (option for option in action.option_strings if option.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from option_strings(sub)
