"""What every command module shares: how it is added to the parser."""

import argparse
from collections.abc import Callable

from bulkforge.proto.arguments import Parser

__all__ = ["Parser", "add_command", "add_job_name"]


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
