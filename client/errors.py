"""The one place that turns a failure into what the operator reads and the exit code."""

import sys

from bulkforge.client import api
from bulkforge.proto.text import one_line

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class ClientError(Exception):
    """A failure with a message for people and the exit code it stands for."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(ClientError):
    """The command line is wrong in a way argparse cannot see (e.g. a missing manifest)."""

    exit_code = EXIT_USAGE


class Unreachable(ClientError):
    """bfd cannot be reached at all."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, where: str, why: str, not_running: bool = True):
        text = f"cannot reach bfd at {where}: {why}" if where else f"cannot reach bfd: {why}"
        if not_running:
            text += ". Is it running? (systemctl status bfd, or start it with `bfd`)"
        super().__init__(text)


def as_flag(setting: str) -> str:
    """A client setting as bfctl's flag names it: tls_cert is --tls-cert."""
    return "--" + setting.replace("_", "-")


def from_api_error(exc: api.BulkforgeError, where: str) -> ClientError:
    """Translate a failed call: unreachable (exit 3) or the daemon's refusal (exit 1).

    A deadline that passes before any answer is, for the operator, the same as a daemon that
    is not there: both mean "look at bfd", not "fix your request". The daemon writes its
    messages for people, so they are shown as they are, after the status code's name
    ("not found: no job named 'x'").
    """
    if isinstance(exc, api.DeadlineExceeded):
        return Unreachable(where, "no answer before the deadline (see --timeout)")
    if isinstance(exc, api.ConnectionFailed):
        # Without a place of its own, its words name every place bfctl looked at.
        return Unreachable(exc.where, exc.worded(as_flag), exc.not_running)
    if isinstance(exc, api.Unreachable):
        return Unreachable(where, exc.message)
    return ClientError(f"{exc.code.name.lower().replace('_', ' ')}: {exc.message}")


def from_setting_error(exc: api.SettingError) -> UsageError:
    """A setting named by its flag: tls_cert is --tls-cert here."""
    return UsageError(exc.worded(as_flag))


def report(message: str) -> None:
    """One line on stderr: what bfd or a remote said is shown, never obeyed by the terminal."""
    print(f"bfctl: {one_line(message)}", file=sys.stderr)
