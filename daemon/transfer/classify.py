"""The one classification of transfer failures, for every kind.

An origin's answer or a libcurl error becomes a `Miss` with a step and an error
class (http_4xx, http_5xx, timeout, connect, reset, short_body), so files and
items fail, retry and report in the same words. Runs in the transfer workers:
standard library only.
"""

import email.utils
import time

import pycurl

from bulkforge.daemon.transfer.protocol import Miss
from bulkforge.proto.units import size_text

# libcurl's error codes (curl/curl.h), by what they mean for a retry.
_CONNECT = {pycurl.E_COULDNT_RESOLVE_HOST, pycurl.E_COULDNT_RESOLVE_PROXY, pycurl.E_COULDNT_CONNECT}
_RESET = {pycurl.E_RECV_ERROR, pycurl.E_SEND_ERROR, pycurl.E_GOT_NOTHING}
_SHORT = {pycurl.E_PARTIAL_FILE}


def retry_after(headers: dict[str, str]) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_miss(status: int, reason: str, headers: dict[str, str]) -> Miss:
    said = f"HTTP {status} {reason}".strip()
    if status in (404, 410):
        return Miss("connect", "http_4xx", f"{said}: the origin does not have it", False)
    if status == 429:
        return Miss("connect", "http_4xx", said, True, retry_after(headers))
    if 400 <= status < 500:
        return Miss("connect", "http_4xx", said, status in (408, 425))
    if status >= 500:
        return Miss("connect", "http_5xx", said, True, retry_after(headers))
    return Miss("connect", "http_other", f"unexpected {said}")


def curl_miss(code: int, message: str, connected: bool) -> Miss:
    """The step and error class of a libcurl error; `connected` once the origin answered."""
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if not connected:
            return Miss("connect", "timeout", "timed out connecting")
        return Miss("transfer", "timeout", f"the transfer took too long ({message})")
    if code in _CONNECT:
        return Miss("connect", "connect", f"cannot connect: {message}")
    if code in _SHORT:
        return Miss("transfer", "short_body", f"the origin broke off: {message}")
    if code in _RESET:
        return Miss("transfer", "reset", f"connection lost: {message}")
    return Miss("transfer", "http", f"curl error {code}: {message}")


def read_timeout(seconds: float) -> Miss:
    return Miss("transfer", "timeout", f"the origin went silent for {seconds:g} s (read timeout)")


def too_large(size: int, limit: int) -> Miss:
    return Miss(
        "transfer",
        "too_large",
        f"the body is over {size_text(limit)} ({size_text(size)} so far)",
        False,
    )


def unusable_order(exc: Exception) -> Miss:
    return Miss("connect", "bad_url", f"libcurl cannot take this request: {exc}", False)
