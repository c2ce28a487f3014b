"""bfctl submit KIND NAME ...: create a job. Submitting the same again changes nothing.

One module per job kind; adding a kind adds its module to KINDS.
"""

import argparse

from bulkforge.client.commands.base import add_command
from bulkforge.client.commands.submit import clean, download, generate, scenes

KINDS = (download, scenes, clean, generate)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = add_command(subparsers, "submit", "create a job (idempotent by name)", None)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind in KINDS:
        kind.register(kinds)
