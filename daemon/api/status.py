"""The one place where refusals become gRPC status codes with a message a person can act on."""

import functools
from collections.abc import Callable

import grpc
from google.protobuf.message import Message
from loguru import logger
from pydantic import ValidationError

from bulkforge.daemon import errors
from bulkforge.daemon.durable import DiskFailed
from bulkforge.daemon.store import StoreFatal
from bulkforge.daemon.validation import describe
from bulkforge.proto.units import size_text

STATUS_OF = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    # Not UNAVAILABLE: that says bfd itself is unreachable or stopping.
    errors.SourceUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
}


# A refusal travels in a gRPC trailer (8 KiB, percent-encoded): it echoes at most this much
# of what it was given (a 20 KB URL, a 1 MB dest), or the client sees "Stream removed".
MAX_MESSAGE_BYTES = 2000


def bounded(message: str) -> str:
    raw = message.encode()
    if len(raw) <= MAX_MESSAGE_BYTES:
        return message
    return raw[:MAX_MESSAGE_BYTES].decode(errors="ignore") + f"… ({size_text(len(raw))}, cut)"


def refusal_text(exc: BaseException) -> str | None:
    """What a refusal says, bounded; None when exc is no refusal (a bug, a stop)."""
    if isinstance(exc, errors.Refused):
        return bounded(str(exc))
    if isinstance(exc, ValidationError):
        return bounded(describe(exc))
    return None


def log_refusal(rpc: str, request: object, exc: BaseException) -> None:
    """One INFO line per refused request, with the job's name (and kind, for a submit)."""
    text = refusal_text(exc)
    if text is None:
        return
    name = str(getattr(request, "name", ""))[:128]
    kind = ""
    if isinstance(request, Message) and "spec" in request.DESCRIPTOR.oneofs_by_name:
        kind = request.WhichOneof("spec") or ""
    logger.bind(job=name, kind=kind).info("refused {} of job {!r}: {}", rpc, name, text)


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    if isinstance(exc, errors.Refused):
        await context.abort(STATUS_OF[type(exc)], refusal_text(exc))
    if isinstance(exc, ValidationError):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal_text(exc))
    if isinstance(exc, StoreFatal):
        await context.abort(grpc.StatusCode.UNAVAILABLE, bounded(f"bfd is stopping: {exc}"))
    if isinstance(exc, DiskFailed):  # a verb that writes (a generate schema, an export)
        message = f"the disk failed: {exc}; repair it and try again"
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, bounded(message))
    logger.opt(exception=exc).error("internal error answering a request")
    message = f"internal error ({exc}); see the bfd log"
    await context.abort(grpc.StatusCode.INTERNAL, bounded(message))


def refusals(method: Callable) -> Callable:
    """Turn refusals and validation errors of a unary method into status codes."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise  # context.abort() was called already; let it through untouched
        except Exception as exc:
            log_refusal(method.__name__, request, exc)
            await abort(context, exc)

    return wrapper
