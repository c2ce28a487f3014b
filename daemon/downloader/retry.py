"""When a failed attempt is tried again: one rule for files and for items."""

import random

from bulkforge.daemon.downloader.files import Failure
from bulkforge.daemon.settings import Settings


def backoff_s(settings: Settings, attempts: int, failure: Failure) -> float | None:
    """Seconds before attempt `attempts + 1`, or None when the failure is final.

    Exponential backoff with full jitter, never sooner than the origin's Retry-After
    (bounded by retry_after_max, so a hostile header cannot park an item for days).
    """
    if not failure.retryable or attempts >= settings.max_attempts:
        return None
    ceiling = min(settings.retry_max_delay, settings.retry_base_delay * 2 ** (attempts - 1))
    delay = random.uniform(0, ceiling)
    if failure.retry_after is not None:
        delay = max(delay, min(failure.retry_after, settings.retry_after_max))
    return delay
