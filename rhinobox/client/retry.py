"""When to retry a request and how long to wait: exponential backoff with jitter, `Retry-After` first."""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Final

__all__ = ["DEFAULT_ATTEMPTS", "RETRY_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRY_STATUSES: Final = frozenset({503})
DEFAULT_ATTEMPTS: Final = 5


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` tries in all; waits grow from `base` by `factor` up to `cap` seconds."""

    attempts: int = DEFAULT_ATTEMPTS
    base: float = 0.25
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait before try number `attempt + 1` (attempt counts from 1); the server's word wins."""
        if retry_after is not None:
            return min(retry_after, self.cap)
        backoff = min(self.base * self.factor ** (attempt - 1), self.cap)
        return backoff * (1 + random.uniform(-self.jitter, self.jitter))
