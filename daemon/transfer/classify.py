"""The one classification of transfer failures, for every kind.

An origin's answer or a transport error becomes a `Failure` with a step and an
error class (http_4xx, http_5xx, timeout, connect, reset, short_body), so files
and items fail, retry and report in the same words. aiohttp is imported only
once an error of its own is to be classified: by then it is loaded.
"""

import email.utils
import time
from typing import Any

from bulkforge.daemon.failures import Failure


class TransferFailed(Exception):
    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def fail(
    step: str, error_class: str, message: str, retryable: bool = True, after: float | None = None
) -> TransferFailed:
    """A failure to raise: retryable unless the origin said it never will be."""
    return TransferFailed(Failure(step, error_class, message, retryable, after))


def retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_failure(response: Any) -> TransferFailed:
    status = response.status
    reason = f"HTTP {status} {response.reason or ''}".strip()
    if status in (404, 410):
        return fail("connect", "http_4xx", f"{reason}: the origin does not have it", False)
    if status == 429:
        return fail("connect", "http_4xx", reason, True, retry_after(response))
    if 400 <= status < 500:
        return fail("connect", "http_4xx", reason, status in (408, 425))
    if status >= 500:
        return fail("connect", "http_5xx", reason, True, retry_after(response))
    return fail("connect", "http_other", f"unexpected {reason}")


def transport_failure(exc: BaseException) -> TransferFailed:
    """The step and error class of an aiohttp or timeout error."""
    import aiohttp

    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return fail("connect", "timeout", "timed out connecting")
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return fail("transfer", "timeout", "the origin went silent (read timeout)")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return fail("connect", "connect", f"cannot connect: {exc.os_error}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return fail("transfer", "short_body", f"the origin broke off: {cause(exc)}")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return fail("transfer", "reset", f"connection lost: {cause(exc)}")
    return fail("transfer", "http", f"{type(exc).__name__}: {exc}")


def cause(exc: BaseException) -> str:
    """aiohttp wraps the interesting error (a reset, a short body) one or two levels down."""
    while exc.__cause__ is not None and str(exc.__cause__):
        exc = exc.__cause__
    return str(exc) or type(exc).__name__
