"""SQLite's errors as the domain's: SQLITE_FULL is `InsufficientStorage`, any other a `StorageError`.

Decided by SQLite's result code (`sqlite_errorcode`, extended codes included), never by message text.
Used by the SQLite catalog, its writer thread (so a write's future carries the domain error) and the
SQLite job store.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from rhinobox.catalog.driver_errors import DriverErrors
from rhinobox.errors import InsufficientStorage, RhinoBoxError, StorageError

__all__ = ["sqlite_error", "sqlite_errors"]

PRIMARY_CODE_MASK: Final = 0xFF  # an extended result code's low byte is its primary code


def sqlite_error(exc: Exception, doing: str) -> RhinoBoxError:
    """The domain error for a failed SQLite call while trying to `doing` ("record the uploads")."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & PRIMARY_CODE_MASK == sqlite3.SQLITE_FULL:
        return InsufficientStorage(f"could not {doing}: the database's disk is full")
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return StorageError(f"could not {doing} ({name}: {exc})")


sqlite_errors: Final = DriverErrors((sqlite3.Error,), sqlite_error)
