"""The one place that turns a failure into what the operator reads and the exit code."""

import sys

import grpc

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

# A deadline that passes before any answer is, for the operator, the same as a daemon that is
# not there: both mean "look at bfd", not "fix your request".
UNREACHABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

# What gRPC says when bfd goes away in the middle of a call, in bulkforge's words.
CONNECTION_LOST = dict.fromkeys(
    ("Cancelling all calls", "Socket closed", "Connection reset by peer", "Broken pipe"),
    "bfd closed the connection in the middle of the answer (it stopped or restarted)",
)


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

    def __init__(self, where: str, why: str):
        super().__init__(
            f"cannot reach bfd at {where}: {why}. "
            "Is it running? (systemctl status bfd, or start it with `bfd`)"
        )


def from_rpc_error(exc: grpc.RpcError, where: str) -> ClientError:
    """Translate a failed call: unreachable (exit 3) or the daemon's refusal (exit 1).

    The daemon writes its messages for people, so they are shown as they are, after the
    status code's name ("not found: no job named 'x'").
    """
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unreachable(where, "no answer before the deadline (see --timeout)")
    if code in UNREACHABLE_CODES or details in CONNECTION_LOST:
        return Unreachable(where, CONNECTION_LOST.get(details, details))
    return ClientError(f"{code.name.lower().replace('_', ' ')}: {details}")


def report(message: str) -> None:
    print(f"bfctl: {message}", file=sys.stderr)
