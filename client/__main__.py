"""bfctl: parse the command line, connect, run one command, turn every failure into an exit code.

Exit codes: 0 ok, 1 the daemon refused (its message on stderr), 2 usage error, 3 bfd unreachable.
"""

# ruff: noqa: E402 (gRPC's own log must be silenced before grpc is first imported, below)
import os

from bulkforge.client.quiet import quiet_grpc_logs

quiet_grpc_logs()

import argparse
import sys
import tempfile
import traceback
from pathlib import Path

from bulkforge.client import flags
from bulkforge.client.api import BulkforgeError, Client, Endpoint, SettingError
from bulkforge.client.commands import (
    analyze,
    cancel,
    continue_,
    demo,
    export,
    failures,
    pause,
    plan,
    remove,
    resume,
    retry,
    stats,
    status,
    submit,
    swap,
    system,
    verify,
    watch,
)
from bulkforge.client.commands import list as list_jobs
from bulkforge.client.commands.base import Parser
from bulkforge.client.connection import endpoint_from_args
from bulkforge.client.errors import (
    EXIT_INTERRUPTED,
    EXIT_REFUSED,
    ClientError,
    from_api_error,
    from_setting_error,
    report,
)
from bulkforge.client.private_daemon import is_serving, running_daemon

COMMANDS = (
    submit,
    analyze,
    plan,
    list_jobs,
    status,
    watch,
    stats,
    failures,
    pause,
    resume,
    cancel,
    remove,
    continue_,
    swap,
    retry,
    verify,
    export,
    system,
    demo,
)
DEBUG_ENV = "BULKFORGE_DEBUG"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bfctl",
        description="Control bfd, the bulkforge daemon.",
        epilog="Exit codes: 0 ok, 1 bfd refused, 2 usage error, 3 bfd cannot be reached.",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--socket",
        metavar="P",
        help="bfd's unix socket (default: $BULKFORGE_SOCKET, else the first that answers of "
        "$RUNTIME_DIRECTORY/bfd.sock, $XDG_RUNTIME_DIR/bulkforge/bfd.sock, "
        "/run/bulkforge/bfd.sock)",
    )
    where.add_argument("--target", metavar="HOST:PORT", help="bfd over TCP with TLS")
    remote = parser.add_argument_group("with --target")
    remote.add_argument("--tls-ca", metavar="F", help="CA of bfd's certificate ($BULKFORGE_TLS_CA)")
    remote.add_argument(
        "--tls-cert", metavar="F", help="client certificate, if bfd asks ($BULKFORGE_TLS_CERT)"
    )
    remote.add_argument("--tls-key", metavar="F", help="its private key ($BULKFORGE_TLS_KEY)")
    remote.add_argument(
        "--token-file", metavar="F", help="bearer token bfd expects ($BULKFORGE_TOKEN_FILE)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument(
        "--timeout",
        type=flags.seconds(allow_zero=True),
        default=None,
        metavar="S",
        help="seconds per call (default 30; none for submit, analyze and plan, which list "
        "sources); "
        "0: no limit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    # Exits itself, so a wrapper that calls main() without sys.exit() still gets the code.
    sys.exit(run_cli(argv))


def run_cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except ClientError as exc:
        report(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        report("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`bfctl list | head`); nothing left to say to it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_REFUSED
    except Exception as exc:
        return unexpected(exc)


def dispatch(args: argparse.Namespace) -> int:
    if check := getattr(args, "check", None):
        check(args)
    if getattr(args, "standalone", False):
        return args.run(args)
    try:
        endpoint = endpoint_from_args(args)
    except SettingError as exc:
        raise from_setting_error(exc) from None
    if getattr(args, "dry_run", False) and not answers(endpoint):
        return run_privately(args, endpoint)
    return run_on(args, endpoint)


def run_on(args: argparse.Namespace, endpoint: Endpoint) -> int:
    try:
        with Client.at(endpoint) as bfd:
            return args.run(args, bfd)
    except BulkforgeError as exc:
        raise from_api_error(exc, endpoint.shown) from None
    except SettingError as exc:
        raise from_setting_error(exc) from None


def answers(endpoint: Endpoint) -> bool:
    """Whether a bfd serves there; over TCP it is assumed (the call will say)."""
    if endpoint.socket is None:
        return True
    return endpoint.socket.exists() and is_serving(endpoint)


def run_privately(args: argparse.Namespace, endpoint: Endpoint) -> int:
    """A dry run needs no daemon: a private bfd reads the source, and nothing is kept."""
    where = ", ".join(map(str, endpoint.tried)) or endpoint.shown
    report(f"no bfd answers at {where}: a private one reads the source (nothing kept)")
    with (
        tempfile.TemporaryDirectory(prefix="bulkforge-dry-") as work,
        running_daemon(Path(work)) as private,
    ):
        return run_on(args, private)


def unexpected(exc: Exception) -> int:
    if os.environ.get(DEBUG_ENV) == "1":
        traceback.print_exc()
        hint = ""
    else:
        hint = f" (set {DEBUG_ENV}=1 for the traceback)"
    report(f"unexpected error: {type(exc).__name__}: {exc}{hint}")
    return EXIT_REFUSED


if __name__ == "__main__":
    main()
