"""The built-in `fetch` step: one HTTP GET of an item's URL, retried by the downloader's rules.

The origin's answers are classified as the downloader classifies them
(http_4xx, http_5xx, timeout, connect, reset, short_body), so `bfctl failures`
and `bfctl retry --error` speak one language for files and items. A retryable
failure is tried again after the same backoff (Retry-After honoured) until
max_attempts; a 404, a missing URL or an oversize body fails at once.
"""

import asyncio
import mimetypes
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from bulkforge.daemon.failures import Failure, backoff_s
from bulkforge.daemon.governor import Bandwidth
from bulkforge.daemon.scenes.steps import FETCH, StepFailed
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.transport import TransferFailed, status_failure, transport_failure

_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,5})$")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    extension: str
    attempts: int


class ItemFetcher:
    def __init__(self, session: aiohttp.ClientSession, settings: Settings, bandwidth: Bandwidth):
        self._session = session
        self._settings = settings
        self._bandwidth = bandwidth

    async def fetch(self, url: str | None, max_size: int, timeout_s: float) -> Fetched:
        """The item's bytes; StepFailed(fetch, class) once no attempt is left."""
        if not url:
            raise StepFailed(FETCH, "no_url", "the input row has no URL")
        try:
            scheme = urlsplit(url).scheme
        except ValueError as exc:
            raise StepFailed(FETCH, "bad_url", f"not a URL ({exc}): {url[:200]}") from None
        if scheme not in ("http", "https"):
            raise StepFailed(FETCH, "bad_url", f"not an http(s) URL: {url[:200]}")
        attempts = 0
        while True:
            attempts += 1
            try:
                data, content_type = await self._get(url, max_size, timeout_s)
                return Fetched(data, _extension(url, content_type), attempts)
            except TransferFailed as failed:
                delay = backoff_s(self._settings, attempts, failed.failure)
                if delay is None:
                    raise _as_step_failure(failed.failure, attempts) from None
            await asyncio.sleep(delay)

    async def _get(self, url: str, max_size: int, timeout_s: float) -> tuple[bytes, str]:
        timeout = aiohttp.ClientTimeout(
            total=timeout_s,
            sock_connect=self._settings.connect_timeout,
            sock_read=self._settings.read_timeout,
        )
        try:
            async with self._session.get(url, timeout=timeout) as response:
                if response.status != 200:
                    raise status_failure(response)
                announced = response.content_length
                if announced is not None and announced > max_size:
                    raise _too_large(announced, max_size)
                data = await self._body(response, max_size)
                if announced is not None and len(data) != announced:
                    raise _failed("short_body", f"got {len(data)} of {announced} bytes")
                return data, response.headers.get("content-type", "")
        except TransferFailed:
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise transport_failure(exc) from None

    async def _body(self, response: aiohttp.ClientResponse, max_size: int) -> bytes:
        parts, size = [], 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > max_size:
                raise _too_large(size, max_size)
            if self._bandwidth.rate:
                await self._bandwidth.take(len(chunk))
            parts.append(chunk)
        return b"".join(parts)


def _failed(error_class: str, message: str, retryable: bool = True) -> TransferFailed:
    return TransferFailed(Failure(FETCH, error_class, message, retryable))


def _too_large(size: int, limit: int) -> TransferFailed:
    return _failed("too_large", f"the body is over {limit:,} bytes ({size:,} so far)", False)


def _as_step_failure(failure: Failure, attempts: int) -> StepFailed:
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    return StepFailed(FETCH, failure.error_class, f"{failure.message}{tries}", attempts)


def _extension(url: str, content_type: str) -> str:
    """The sample's extension: the URL's when it has a short one, else the content type's."""
    found = _EXTENSION.search(urlsplit(url).path)
    guessed = mimetypes.guess_extension(content_type.split(";")[0].strip())
    extension = found.group(1).lower() if found else guessed.lstrip(".") if guessed else "bin"
    # `<key>.json` is the sample's metadata: content must not take that name.
    return "bin" if extension == "json" else extension
