"""Categorization rules: MIME type (and extension as fallback) to `category/subtype`.

Rules are immutable values; `Categorizer` holds the current one behind a read-write lock, so a
`PUT /categories` (or a change another node saved in the shared `RulesStore`) swaps the whole set at
once and readers never see half of an update.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rhinobox.errors import InvalidRules
from rhinobox.ingest.rules_store import RULES_FILENAME, FileRulesStore, RulesStore, StoredRules
from rhinobox.ingest.rwlock import ReadWriteLock

__all__ = [
    "DEFAULT_RULES",
    "MAX_CATEGORY_SEGMENTS",
    "MAX_CATEGORY_SEGMENT_CHARS",
    "MAX_MIME_CHARS",
    "MAX_RULES",
    "RULES_FILENAME",
    "Categorizer",
    "CategoryRules",
]

MAX_RULES: Final = 10_000  # mime, extension and generic entries together
# A rule's category: at most this many segments of at most this many characters each, like an upload
# hint's (ingest/names.py), which an upload's category adds below it.
MAX_CATEGORY_SEGMENTS: Final = 4
MAX_CATEGORY_SEGMENT_CHARS: Final = 64
MAX_MIME_CHARS: Final = 255  # a type and a subtype of at most 127 characters each (RFC 6838)
SUBTYPE: Final = "{subtype}"  # the segment a rule's category fills with the detected MIME subtype
# Answers a rule set remembers; (type, extension) pairs come from clients, so the memo is bounded.
MEMO_ENTRIES: Final = 4096
_MIME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9.+_-]*/(\*|[a-z0-9][a-z0-9.+_-]*)")
_EXTENSION_PATTERN: Final = re.compile(r"\.[a-z0-9]{1,16}")
# Category segments: the first names a top level ("images"), the later ones may hold a "+" ("svg+xml").
# Neither starts or ends with "." or "-" (so never "." or ".."), as no cleaned hint segment does.
_FIRST_SEGMENT: Final = re.compile(r"[a-z0-9]([a-z0-9._-]*[a-z0-9_])?")
_LATER_SEGMENT: Final = re.compile(r"[a-z0-9_+]([a-z0-9.+_-]*[a-z0-9_+])?")
_CATEGORY_SHAPE: Final = "lowercase segments like 'images/png' or 'images/{subtype}'"
_SUBTYPE_UNSAFE: Final = re.compile(r"[^a-z0-9.+_-]+")
_RULE_KEYS: Final = frozenset({"mime", "extension", "generic", "default"})

DEFAULT_RULES: Final[Mapping[str, Any]] = {
    "mime": {
        "image/*": "images/{subtype}",
        "video/*": "videos/{subtype}",
        "audio/*": "audio/{subtype}",
        "application/pdf": "documents/pdf",
        "application/msword": "documents/doc",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "documents/docx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "documents/xlsx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation": "documents/pptx",
        "application/vnd.oasis.opendocument.text": "documents/odt",
        "application/rtf": "documents/rtf",
        "text/rtf": "documents/rtf",
        "application/epub+zip": "documents/epub",
        "text/plain": "documents/text",
        "text/markdown": "documents/markdown",
        "text/csv": "documents/csv",
        "text/html": "code/html",
        "text/css": "code/css",
        "application/json": "code/json",
        "application/x-ndjson": "code/json",  # one JSON document per line: where a user looks for JSON
        "text/x-python": "code/python",
        "text/x-script.python": "code/python",
        "text/x-shellscript": "code/shell",
        "text/x-c": "code/c",
        "text/x-c++": "code/cpp",
        "text/x-java": "code/java",
        "application/javascript": "code/javascript",
        "text/javascript": "code/javascript",
        "application/zip": "archives/zip",
        "application/gzip": "archives/gzip",
        "application/x-tar": "archives/tar",
        "application/x-bzip2": "archives/bzip2",
        "application/x-xz": "archives/xz",
        "application/zstd": "archives/zstd",
        "application/x-7z-compressed": "archives/7z",
        "application/x-rar": "archives/rar",
        "application/vnd.rar": "archives/rar",
    },
    "extension": {
        ".py": "code/python",
        ".js": "code/javascript",
        ".mjs": "code/javascript",
        ".ts": "code/typescript",
        ".go": "code/go",
        ".rs": "code/rust",
        ".c": "code/c",
        ".h": "code/c",
        ".cpp": "code/cpp",
        ".java": "code/java",
        ".rb": "code/ruby",
        ".sh": "code/shell",
        ".json": "code/json",
        ".ndjson": "code/json",
        ".jsonl": "code/json",
        ".yaml": "code/yaml",
        ".yml": "code/yaml",
        ".toml": "code/toml",
        ".sql": "code/sql",
        ".html": "code/html",
        ".css": "code/css",
        ".md": "documents/markdown",
        ".txt": "documents/text",
        ".csv": "documents/csv",
        ".mp3": "audio/mpeg",
        ".mp4": "videos/mp4",
        ".mov": "videos/quicktime",
        ".mkv": "videos/x-matroska",
        ".heic": "images/heic",
        ".dng": "images/dng",
    },
    "generic": ["application/octet-stream", "text/plain", "inode/x-empty", "application/x-empty"],
    "default": "other/{subtype}",
}


@dataclass(frozen=True, slots=True)
class CategoryRules:
    """A validated rule set. `categorize` is pure, so any thread may call it on a snapshot."""

    mime: Mapping[str, str]
    extension: Mapping[str, str]
    generic: frozenset[str]
    default: str
    source: Mapping[str, Any] = field(compare=False)
    # The rules never change, so an answer stays right for the life of this set (a swap brings a new memo).
    _memo: dict[tuple[str, str], str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, document: object) -> CategoryRules:
        """Validate a JSON-shaped rule document as a whole; raise `InvalidRules` naming the first fault."""
        if not isinstance(document, dict):
            raise InvalidRules("rules must be a JSON object")
        unknown = set(document) - _RULE_KEYS
        if unknown:
            raise InvalidRules(f"unknown keys: {', '.join(sorted(unknown))}")
        mime = _string_map(document.get("mime", {}), "mime", _is_mime)
        extension = _string_map(document.get("extension", {}), "extension", _EXTENSION_PATTERN.fullmatch)
        generic = document.get("generic", [])
        if not isinstance(generic, list) or not all(isinstance(g, str) and _is_mime(g) for g in generic):
            raise InvalidRules(f"generic must be a list of MIME types (at most {MAX_MIME_CHARS} characters each)")
        default = document.get("default", "other/{subtype}")
        _check_category(default, "default")
        if len(mime) + len(extension) + len(generic) > MAX_RULES:
            raise InvalidRules(f"at most {MAX_RULES} rules")
        source = {"mime": dict(mime), "extension": dict(extension), "generic": list(generic), "default": default}
        return cls(mime, extension, frozenset(generic), default, source)

    def categorize(self, mime: str, extension: str) -> str:
        """The category for a detected MIME type and a (lowercase, dotted) extension."""
        key = (mime, extension)
        known = self._memo.get(key)
        if known is None:
            known = self._categorize(mime, extension)
            if len(self._memo) < MEMO_ENTRIES:
                self._memo[key] = known
        return known

    def _categorize(self, mime: str, extension: str) -> str:
        by_extension = self.extension.get(extension) if extension else None
        if by_extension and mime in self.generic:
            return _fill(by_extension, mime)
        rule = self.mime.get(mime) or self.mime.get(mime.partition("/")[0] + "/*") or by_extension
        return _fill(rule or self.default, mime)


def _is_mime(text: str) -> bool:
    return len(text) <= MAX_MIME_CHARS and _MIME_PATTERN.fullmatch(text) is not None


def _string_map(value: object, key: str, valid_key: Callable[[str], object]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidRules(f"{key} must be an object")
    for match, category in value.items():
        if not isinstance(match, str) or not valid_key(match):
            raise InvalidRules(f"{key}: bad key {_shown(match)}")
        _check_category(category, f"{key}[{match!r}]")
    return dict(value)


def _check_category(category: object, where: str) -> None:
    """Every category a rule names: loaded or PUT, it is checked here, and nowhere else."""
    fault = _category_fault(category)
    if fault is not None:
        raise InvalidRules(f"{where}: {fault}; a category is {_CATEGORY_SHAPE}")


def _category_fault(category: object) -> str | None:
    """What is wrong with a rule's category, or None; a filled {subtype} obeys the same rules (_fill)."""
    if not isinstance(category, str):
        return f"{_shown(category)} is not a string"
    segments = category.split("/")
    if not 2 <= len(segments) <= MAX_CATEGORY_SEGMENTS:
        return f"{_shown(category)} has {len(segments)} segment(s), not 2 to {MAX_CATEGORY_SEGMENTS}"
    for index, segment in enumerate(segments):
        if not segment:
            return f"{_shown(category)} has an empty segment (a leading, trailing or doubled '/')"
        if len(segment) > MAX_CATEGORY_SEGMENT_CHARS:
            return f"a segment of {_shown(category)} is longer than {MAX_CATEGORY_SEGMENT_CHARS} characters"
        if segment == SUBTYPE:
            if index == 0:
                return f"{SUBTYPE} cannot be the first segment"
            continue
        if not (_LATER_SEGMENT if index else _FIRST_SEGMENT).fullmatch(segment):
            return (
                f"{_shown(segment)} is not a valid segment (lowercase letters, digits and . _ - +, not starting"
                " or ending with '.' or '-': never '.' or '..')"
            )
    return None


def _shown(value: object) -> str:
    """A value for an error message, cut short: a rejected value may be megabytes long."""
    text = repr(value)
    return text if len(text) <= MAX_CATEGORY_SEGMENT_CHARS * 2 else text[: MAX_CATEGORY_SEGMENT_CHARS * 2] + "..."


def _fill(template: str, mime: str) -> str:
    subtype = _SUBTYPE_UNSAFE.sub("-", mime.partition("/")[2].lower())[:MAX_CATEGORY_SEGMENT_CHARS].strip("-.")
    return template.replace(SUBTYPE, subtype or "unknown")


class Categorizer:
    """The current rules, swappable at run time, saved in a `RulesStore` (if given) before they apply."""

    def __init__(self, rules: CategoryRules, store: RulesStore | None = None, version: int = 0) -> None:
        self._rules = rules
        self._version = version
        self._lock = ReadWriteLock()
        self._store = store
        # One change at a time (a PUT, or a reload seen by polling): store and memory stay in step,
        # and a slow reload never swaps in a set older than one a PUT just saved.
        self._changing = asyncio.Lock()

    @classmethod
    def load(cls, data_dir: Path) -> Categorizer:
        """Rules saved in the data directory by a previous replacement, else the defaults (blocking)."""
        store = FileRulesStore.in_data_dir(data_dir)
        saved = store.read()
        return cls(_parse_saved(saved, store), store, saved.version if saved else 0)

    @classmethod
    async def open(cls, store: RulesStore) -> Categorizer:
        """Rules saved in `store`, else the defaults."""
        saved = await store.load()
        return cls(_parse_saved(saved, store), store, saved.version if saved else 0)

    @property
    def version(self) -> int:
        """The store version of the rules in force (0: the defaults, never saved)."""
        return self._version

    def categorize(self, mime: str, extension: str) -> str:
        with self._lock.read():
            return self._rules.categorize(mime, extension)

    def snapshot(self) -> CategoryRules:
        """The rules in force now; a batch may categorize many files against one snapshot."""
        with self._lock.read():
            return self._rules

    def replace(self, document: object) -> CategoryRules:
        """Validate and swap in a new rule set in memory only (the stored set is `update`'s job)."""
        rules = CategoryRules.parse(document)
        self._swap(rules, self._version)
        return rules

    async def update(self, document: object) -> CategoryRules:
        """Validate, save, then swap in a new rule set; on any fault the old set stays, here and stored."""
        rules = CategoryRules.parse(document)
        async with self._changing:
            version = self._version
            if self._store is not None:
                version = await self._store.save(rules.source)
            self._swap(rules, version)
        return rules

    async def refresh(self) -> bool:
        """Swap in the stored rules if another process changed them; True if it did.

        A stored set that no longer parses (edited by hand) is not applied: raises `InvalidRules`.
        """
        if self._store is None or await self._store.version() == self._version:
            return False
        async with self._changing:
            saved = await self._store.load()
            if saved is None or saved.version == self._version:
                return False
            self._swap(CategoryRules.parse(saved.document), saved.version)
        return True

    def _swap(self, rules: CategoryRules, version: int) -> None:
        # Readers hold the lock for one lookup, so the write lock is quick to get even on the event loop.
        with self._lock.write():
            self._rules, self._version = rules, version


def _parse_saved(saved: StoredRules | None, store: RulesStore) -> CategoryRules:
    if saved is None:
        return CategoryRules.parse(dict(DEFAULT_RULES))
    try:
        return CategoryRules.parse(saved.document)
    except InvalidRules as exc:
        raise InvalidRules(f"the category rules saved in {store.location} are not valid: {exc}") from None
