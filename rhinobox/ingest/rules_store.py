"""`RulesStore`: where the category rule set lives, so every node (and the next start) uses the same one.

The embedded default keeps `<data_dir>/categories.json` (`FileRulesStore`); with a PostgreSQL catalog
the rules live in the database (rhinobox/catalog/postgres_rules.py) and nodes poll its version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from rhinobox.errors import InvalidRules, storage_failure

__all__ = ["RULES_FILENAME", "RULES_POLL_INTERVAL", "FileRulesStore", "RulesStore", "StoredRules"]

RULES_FILENAME: Final = "categories.json"
RULES_POLL_INTERVAL: Final = 2.0  # seconds between version checks of a shared store: a one-row query


@dataclass(frozen=True, slots=True)
class StoredRules:
    """A saved rule document (JSON-shaped, as `CategoryRules.source`) and the version it was saved as."""

    document: Any
    version: int


class RulesStore(Protocol):
    """The saved rule set. Versions only grow: a node whose version differs from the store's reloads."""

    @property
    def shared(self) -> bool:
        """True when other processes may change the rules (so a node polls `version`)."""
        ...

    @property
    def location(self) -> str:
        """Where the rules are kept, for an operator reading an error."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def load(self) -> StoredRules | None:
        """The saved rules, or None when nothing was ever saved (the defaults apply)."""
        ...

    async def save(self, document: Mapping[str, Any]) -> int:
        """Durably replace the rule set; returns its new version."""
        ...

    async def version(self) -> int:
        """The version of the saved rules (0 when none): a cheap check for a change."""
        ...


class FileRulesStore:
    """Rules in one JSON file, written atomically (temp file, fsync, rename).

    `shared` when several serving processes use the data directory: each then polls the file's version
    (a `stat`), as nodes poll a shared database.
    """

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        self.path = path
        self.shared = shared

    @property
    def location(self) -> str:
        return str(self.path)

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, shared: bool = False) -> FileRulesStore:
        return cls(data_dir / RULES_FILENAME, shared=shared)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def read(self) -> StoredRules | None:
        """Blocking `load` (for synchronous start-up paths)."""
        try:
            text = self.path.read_text("utf-8")
            version = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        except UnicodeDecodeError as exc:
            raise InvalidRules(f"{self.path} is not UTF-8 text ({exc.reason})") from None
        try:
            return StoredRules(json.loads(text), version)
        except json.JSONDecodeError as exc:  # edited by hand: say where, not a traceback
            raise InvalidRules(f"{self.path} is not valid JSON ({exc})") from None

    def write(self, document: Mapping[str, Any]) -> int:
        """Blocking `save`; a failed disk call is the domain's error (a full disk is a 507), the old file stays."""
        tmp = self.path.with_suffix(f".json.{os.getpid()}.tmp")  # processes sharing the directory: one each
        try:
            before = self._version_now()
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(document, indent=1, sort_keys=True))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
            version = self.path.stat().st_mtime_ns
            if version <= before:  # two saves within one tick of the kernel's file clock: still a new version
                version = before + 1
                os.utime(self.path, ns=(version, version))
            return version
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise storage_failure(exc, "save the category rules") from exc

    async def load(self) -> StoredRules | None:
        return await asyncio.get_running_loop().run_in_executor(None, self.read)

    async def save(self, document: Mapping[str, Any]) -> int:
        # Slow (fsync): off the event loop.
        return await asyncio.get_running_loop().run_in_executor(None, self.write, document)

    async def version(self) -> int:
        return self._version_now()

    def _version_now(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0
