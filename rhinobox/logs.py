"""Logging as one JSON object per line on stderr, at the level `RHINOBOX_LOG_LEVEL` names.

Log shippers (journald, Docker, Loki, ...) parse a line without guessing at a format; fields passed
with `extra=` (the access log's, a request id) become keys of the object.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import IO, Any, Final

__all__ = ["FIELDS", "JsonFormatter", "current_request_id", "setup_logging"]

# Set by the HTTP layer while a request is handled, so every record written for it carries its id.
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rhinobox_request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged as a field.
_RECORD_ATTRS: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
FIELDS: Final = "fields"  # `extra={"fields": {...}}`: structured fields in their given order (the fast way)
_ENCODER: Final = json.JSONEncoder(default=str, ensure_ascii=False, separators=(",", ":"))
# Code points JSON leaves raw but line-splitting tools (str.splitlines, some shippers, JavaScript)
# take as line breaks: escaped, so a request path can never split one record into several lines.
# (Control characters below U+0020 are escaped by the encoder already.)
_LINE_BREAKS: Final = {0x85: "\\u0085", 0x2028: "\\u2028", 0x2029: "\\u2029"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON: ts, level, logger, msg, its fields, request_id, exc."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extras = record.__dict__.keys() - _RECORD_ATTRS
        if extras:
            fields = record.__dict__.get(FIELDS)
            if isinstance(fields, dict):
                entry.update(fields)
            for key in sorted(extras - {FIELDS}):
                if not key.startswith("_"):
                    entry[key] = record.__dict__[key]
        if "request_id" not in entry and (request_id := current_request_id.get()) is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = _ENCODER.encode(entry)
        return line if line.isascii() else line.translate(_LINE_BREAKS)

    def _timestamp(self, created: float) -> str:
        """RFC 3339 in UTC with milliseconds (the date part is formatted once per second)."""
        second = int(created)
        if second != self._second:
            self._second, self._second_text = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"


def setup_logging(level: str, stream: IO[str] | None = None) -> None:
    """Send every log record at `level` or above to `stream` (stderr) as JSON lines; idempotent."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
