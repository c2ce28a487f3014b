"""What every command module shares: how it is added to the parser."""

import argparse
import difflib
from collections.abc import Callable


class Parser(argparse.ArgumentParser):
    """argparse that suggests the nearest choice for a mistyped one (`bfctl lsit`)."""

    def _check_value(self, action: argparse.Action, value: object) -> None:
        choices = action.choices
        if choices is None or value in choices:
            return
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        listed = ", ".join(map(repr, choices))
        raise argparse.ArgumentError(action, f"unknown {value!r}{hint} (one of {listed})")


# Accept --json after the command too (`bfctl status x --json`). SUPPRESS keeps the global
# --json, given before the command, from being reset to False by the subcommand's default.
_JSON_AFTER_COMMAND = argparse.ArgumentParser(add_help=False)
_JSON_AFTER_COMMAND.add_argument(
    "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
)


def add_command(
    subparsers: argparse._SubParsersAction, name: str, summary: str, run: Callable | None
) -> argparse.ArgumentParser:
    """A command parser; `run` is None for a command that only groups others (submit)."""
    parser = subparsers.add_parser(
        name, help=summary, description=summary, parents=[_JSON_AFTER_COMMAND]
    )
    if run is not None:
        parser.set_defaults(run=run)
    return parser


def add_job_name(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the job's name")
