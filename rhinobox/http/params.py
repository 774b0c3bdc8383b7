"""Query parameters, one vocabulary for every endpoint: flags, whole numbers, times, text."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from rhinobox.errors import InvalidParameter

__all__ = ["MAX_INT", "flag_param", "int_param", "lower", "text_param", "time_param"]

# The largest whole-number query parameter (SQLite's INTEGER overflows past it). Longer digit strings
# are refused before int() sees them: it raises past 4,300 digits.
MAX_INT: Final = 2**63 - 1
_MAX_DIGITS: Final = len(str(MAX_INT))
TRUE_VALUES: Final = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES: Final = frozenset({"", "0", "false", "no", "off"})


def text_param(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def lower(value: str | None) -> str | None:
    return value.lower() if value is not None else None  # categories and detected types are lowercase


def int_param(query: Mapping[str, str], name: str, *, minimum: int, maximum: int | None = None) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidParameter(f"{name} must be a whole number, got {raw[:40]!r}")
    maximum = MAX_INT if maximum is None else min(maximum, MAX_INT)
    digits = raw.lstrip("0") or "0"
    value = int(digits) if len(digits) <= _MAX_DIGITS else None  # never int() an unbounded string
    if value is None or value < minimum or value > maximum:
        shown = digits if len(digits) <= 40 else f"{digits[:20]}... ({len(digits)} digits)"
        raise InvalidParameter(f"{name} must be between {minimum} and {maximum}, got {shown}")
    return value


def time_param(query: Mapping[str, str], name: str) -> float | None:
    """Seconds since the epoch, or an ISO 8601 date/time (UTC unless it says otherwise)."""
    raw = text_param(query, name)
    if raw is None:
        return None
    try:
        return float(raw) if raw.replace(".", "", 1).isdigit() else _parse_iso(raw)
    except ValueError:
        raise InvalidParameter(f"{name} must be epoch seconds or an ISO 8601 time, got {raw[:40]!r}") from None


def _parse_iso(raw: str) -> float:
    moment = datetime.fromisoformat(raw)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def flag_param(query: Mapping[str, str], name: str) -> bool:
    """A boolean: true, 1, yes, on; false, 0, no, off or empty; absent is false; anything else is refused."""
    raw = query.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise InvalidParameter(f"{name} must be true or false (1/0, yes/no, on/off), got {raw[:40]!r}")
