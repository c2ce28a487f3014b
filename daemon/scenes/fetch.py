"""The built-in `fetch` step: one HTTP GET of an item's URL, retried by the downloader's rules.

The origin's answers are classified as the downloader classifies them
(http_4xx, http_5xx, timeout, connect, reset, short_body), so `bfctl failures`
and `bfctl retry --error` speak one language for files and items. A retryable
failure is tried again after the same backoff (Retry-After honoured) until
max_attempts; a 404, a missing URL or an oversize body fails at once. Each call
is one attempt: the caller puts the item aside for its backoff (see
`pipeline._Backlog`), so a wait holds neither a connection nor a worker.
"""

import mimetypes
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from bulkforge.daemon.failures import Failure, backoff_s
from bulkforge.daemon.scenes.records import KIND
from bulkforge.daemon.scenes.steps import FETCH, StepFailed
from bulkforge.daemon.settings import Settings
from bulkforge.daemon.transfer.engine import Engine
from bulkforge.daemon.transfer.failed import TransferFailed
from bulkforge.daemon.validation import url_problem

_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,5})$")


@dataclass(frozen=True)
class Fetched:
    data: bytes
    extension: str
    attempts: int


class RetryLater(Exception):
    """An attempt failed and another may follow, after `delay` seconds."""

    def __init__(self, delay: float, attempts: int):
        super().__init__(f"retry in {delay:.1f} s")
        self.delay = delay
        self.attempts = attempts


class ItemFetcher:
    def __init__(self, engine: Engine, settings: Settings):
        self._engine = engine
        self._settings = settings

    async def fetch(self, url: str | None, max_size: int, timeout_s: float, tried: int) -> Fetched:
        """The item's bytes, in one attempt after `tried` in this run.

        StepFailed(fetch, class) once no attempt is left; RetryLater when the attempt
        failed and another may follow. The caller waits out the backoff, holding no
        connection while it does.
        """
        if not url:
            raise StepFailed(FETCH, "no_url", "the input row has no URL")
        if problem := url_problem(url):  # the rule manifests are checked by, too
            raise StepFailed(FETCH, "bad_url", problem)
        attempts = tried + 1
        try:
            body = await self._engine.get(url, label=KIND, max_size=max_size, timeout_s=timeout_s)
        except TransferFailed as failed:
            delay = backoff_s(self._settings, attempts, failed.failure)
            if delay is None:
                raise _as_step_failure(failed.failure, attempts) from None
            raise RetryLater(delay, attempts) from None
        return Fetched(body.data, _extension(url, body.content_type), attempts)


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
