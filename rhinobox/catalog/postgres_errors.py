"""asyncpg's errors as the domain's: a full disk on the server is `InsufficientStorage`, any other a `StorageError`.

Decided by SQLSTATE, never by message text. A lost or refused connection (asyncpg's InterfaceError,
an OSError from the socket, a command timeout) is a `StorageError` too. Used by the PostgreSQL catalog
and its side stores (rules, jobs).
"""

from __future__ import annotations

from typing import Final

import asyncpg

from rhinobox.catalog.driver_errors import DriverErrors
from rhinobox.errors import InsufficientStorage, RhinoBoxError, StorageError

__all__ = ["postgres_error", "postgres_errors"]

# insufficient_resources (the class's generic code) and disk_full; PostgreSQL also reports ENOSPC while
# extending a file as disk_full. Out of memory and too many connections (53200, 53300) pass: the
# server's disk is not what is short.
FULL_SQLSTATES: Final = frozenset({"53000", "53100"})


def postgres_error(exc: Exception, doing: str) -> RhinoBoxError:
    """The domain error for a failed PostgreSQL call while trying to `doing` ("record the uploads")."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in FULL_SQLSTATES:
        return InsufficientStorage(f"could not {doing}: the database server's disk is full")
    if isinstance(exc, TimeoutError):
        return StorageError(f"could not {doing} (the database did not answer in time)")
    reason = f"SQLSTATE {sqlstate}: {exc}" if sqlstate else f"{type(exc).__name__}: {exc}"
    return StorageError(f"could not {doing} ({reason})")


postgres_errors: Final = DriverErrors(
    (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError), postgres_error
)
