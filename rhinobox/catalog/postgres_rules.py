"""Category rules in PostgreSQL: one row holding the rule document and a version that every save bumps.

Nodes sharing the database poll `version` (a one-row primary-key read) and reload when it moved. The
table is the store's own, created at open under an advisory lock so nodes starting together agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from rhinobox.catalog.postgres_errors import postgres_errors
from rhinobox.catalog.postgres_pool import PooledStore
from rhinobox.ingest.rules_store import StoredRules

__all__ = ["PostgresRulesStore"]

POOL_MAX_SIZE: Final = 2  # a poll every few seconds and the odd PUT
COMMAND_TIMEOUT_S: Final = 30.0
# Two-int advisory lock form ("RBO" + 0x10, 1): apart from the catalog's keys.
SCHEMA_LOCK: Final = (0x52424F10, 1)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS category_rules (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL,
    document TEXT NOT NULL,
    saved_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
)
"""
_SAVE: Final = """
INSERT INTO category_rules AS r (id, version, document) VALUES (1, 1, $1)
ON CONFLICT (id) DO UPDATE SET version = r.version + 1, document = excluded.document, saved_at = clock_timestamp()
RETURNING r.version
"""


class PostgresRulesStore(PooledStore):
    """A `RulesStore` in the PostgreSQL database named by `dsn`, with a small pool of its own."""

    shared: Final = True
    pool_max_size = POOL_MAX_SIZE
    command_timeout = COMMAND_TIMEOUT_S
    application_name = "rhinobox-rules"
    schema_lock = SCHEMA_LOCK
    schema = _SCHEMA

    @property
    def location(self) -> str:
        return "the category_rules table of the PostgreSQL catalog"

    @postgres_errors("load the category rules")
    async def load(self) -> StoredRules | None:
        row = await self._db().fetchrow("SELECT version, document FROM category_rules WHERE id = 1")
        if row is None:
            return None
        return StoredRules(json.loads(row["document"]), int(row["version"]))

    @postgres_errors("save the category rules")
    async def save(self, document: Mapping[str, Any]) -> int:
        version = await self._db().fetchval(_SAVE, json.dumps(document, sort_keys=True))
        return int(version)

    @postgres_errors("check the category rules for changes")
    async def version(self) -> int:
        version = await self._db().fetchval("SELECT version FROM category_rules WHERE id = 1")
        return 0 if version is None else int(version)
