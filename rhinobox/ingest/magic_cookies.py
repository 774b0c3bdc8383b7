"""libmagic handles over reduced databases built in memory from the machine's magic.mgc.

python-magic can only load databases from files; `magic_load_buffers` (libmagic 5.19+) loads one
from memory, so each set of candidate tests gets its own small database without touching disk.
A thread keeps the handles of the sets it met last (the same few sets recur: none for random
bytes, one or two for most text), so building one is rare.
"""

from __future__ import annotations

import ctypes
import logging
import os
import weakref
from collections import OrderedDict
from functools import cache
from pathlib import Path
from typing import Final

import magic

from rhinobox.ingest.magic_db import MagicDatabase, MagicFormatError
from rhinobox.ingest.magic_prefilter import MagicPrefilter

log = logging.getLogger(__name__)

__all__ = ["LibmagicHandle", "ReducedMagic", "load_prefilter"]

_CACHE_SIZE: Final = 16  # handles per thread; each holds its database (about 250 KiB)
# A cached handle whose tests are a superset of a buffer's candidates, with at most this many more,
# answers for it: the extra tests cannot match that buffer. Building a handle costs about 0.7 ms.
_SUPERSET_SLACK: Final = 96


def _library(kind: type[ctypes.CDLL]) -> ctypes.CDLL:
    """A private handle on libmagic, so these signatures never clash with python-magic's."""
    library = kind(magic.libmagic._name)
    library.magic_open.argtypes = [ctypes.c_int]
    library.magic_open.restype = ctypes.c_void_p
    library.magic_close.argtypes = [ctypes.c_void_p]
    library.magic_close.restype = None
    library.magic_load.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.magic_load.restype = ctypes.c_int
    library.magic_load_buffers.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.POINTER(ctypes.c_size_t),
        ctypes.c_size_t,
    ]
    library.magic_load_buffers.restype = ctypes.c_int
    library.magic_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    library.magic_buffer.restype = ctypes.c_char_p
    library.magic_getpath.argtypes = [ctypes.c_char_p, ctypes.c_int]
    library.magic_getpath.restype = ctypes.c_char_p
    return library


# Two views of the one library: calls through `_LIB` let other threads run (for long ones), calls
# through `_LIB_HOLDING` keep the GIL: for a buffer of a few KiB libmagic takes microseconds, less
# than handing the GIL to another thread and back costs a worker.
_LIB: Final = _library(ctypes.CDLL)
_LIB_HOLDING: Final = _library(ctypes.PyDLL)
_HOLD_GIL_BELOW: Final = 16 * 1024


def _only_comments(path: Path) -> bool:
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return False
    return all(not line.strip() or line.lstrip().startswith(b"#") for line in lines)


def database_path() -> Path | None:
    """The one compiled database libmagic loads by default, or None when it loads anything else too."""
    raw = _LIB.magic_getpath(None, 0)
    if not raw:
        return None
    compiled: list[Path] = []
    for part in os.fsdecode(raw).split(":"):
        path = Path(part)
        mgc = path.with_name(path.name + ".mgc")
        if mgc.is_file():
            compiled.append(mgc)
        elif path.is_file() and _only_comments(path):
            continue  # /etc/magic as Debian ships it: comments only, it adds nothing
        elif path.exists():
            return None  # local magic sources: a reduced copy of the .mgc alone would miss them
    return compiled[0] if len(compiled) == 1 else None


@cache
def load_prefilter() -> tuple[MagicDatabase, MagicPrefilter] | None:
    """The machine's database and its prefilter (built once per process), or None when unusable."""
    path = database_path()
    if path is None:
        log.warning(
            "soft-magic prefilter off: libmagic loads more than one compiled database (MAGIC=%s); "
            "types stay exact, unknown content and text cost more CPU",
            os.environ.get("MAGIC", "unset"),
        )
        return None
    try:
        database = MagicDatabase.read(path)
    except (OSError, MagicFormatError) as exc:
        log.warning("soft-magic prefilter off: %s cannot be read (%s); types stay exact, typing costs more", path, exc)
        return None
    return database, MagicPrefilter(database)


class LibmagicHandle:
    """One libmagic handle, on the default database or on one given in memory (libmagic keeps a pointer)."""

    def __init__(self, flags: int, database: bytes | None = None) -> None:
        cookie = _LIB.magic_open(flags)
        if not cookie:
            raise MemoryError("magic_open failed")
        self._cookie: int = cookie
        self._close = weakref.finalize(self, _LIB.magic_close, cookie)  # also when a thread's handles are dropped
        self._memory = None if database is None else ctypes.create_string_buffer(database, len(database))
        if self._memory is None:
            loaded = _LIB.magic_load(cookie, None)
        else:
            pointers = (ctypes.c_void_p * 1)(ctypes.cast(self._memory, ctypes.c_void_p))
            sizes = (ctypes.c_size_t * 1)(len(self._memory))
            loaded = _LIB.magic_load_buffers(cookie, pointers, sizes, 1)
        if loaded != 0:
            self.close()
            raise MagicFormatError("libmagic could not load its database")

    def answer(self, data: bytes) -> str | None:
        """libmagic's answer for `data` (None: libmagic failed on it)."""
        library = _LIB_HOLDING if len(data) < _HOLD_GIL_BELOW else _LIB
        result = library.magic_buffer(self._cookie, data, len(data))
        return result.decode("utf-8", "replace") if result else None

    def close(self) -> None:
        self._close()


class ReducedMagic:
    """Answers as the full database would, by running libmagic on the candidate tests only (one thread)."""

    def __init__(self, database: MagicDatabase, flags: int) -> None:
        self._database = database
        self._flags = flags
        self._handles: OrderedDict[tuple[int, ...], LibmagicHandle] = OrderedDict()
        self._tests: dict[tuple[int, ...], frozenset[int]] = {}  # each cached handle's tests
        self.built = 0  # handles built so far (a figure for tests and benchmarks)

    def answer(self, candidates: list[int], data: bytes) -> str | None:
        """libmagic's answer for `data` from a database of `candidates` (None: libmagic failed)."""
        key = tuple(candidates)
        handle = self._handles.get(key)
        if handle is None:
            key, handle = self._superset(candidates)
        if handle is None:
            key = self._widened(candidates)
            handle = LibmagicHandle(self._flags, self._database.reduced(list(key)))
            self.built += 1
            self._handles[key] = handle
            self._tests[key] = frozenset(key)
            if len(self._handles) > _CACHE_SIZE:
                evicted, old = self._handles.popitem(last=False)
                del self._tests[evicted]
                old.close()
        else:
            self._handles.move_to_end(key)
        return handle.answer(data)

    def _widened(self, candidates: list[int]) -> tuple[int, ...]:
        """The tests of a new handle: the candidates plus those of every cached handle, when few
        more, so that one handle grows to cover the rare tests that come and go instead of many."""
        wanted = frozenset(candidates)
        merged = wanted.union(*self._tests.values())
        return tuple(sorted(merged)) if len(merged) <= len(wanted) + _SUPERSET_SLACK else tuple(candidates)

    def _superset(self, candidates: list[int]) -> tuple[tuple[int, ...], LibmagicHandle | None]:
        """A cached handle with every candidate among its tests and few others, if there is one."""
        wanted = frozenset(candidates)
        limit = len(wanted) + _SUPERSET_SLACK
        for key, tests in self._tests.items():
            if len(tests) <= limit and wanted <= tests:
                return key, self._handles[key]
        return tuple(candidates), None

    def close(self) -> None:
        while self._handles:
            self._handles.popitem()[1].close()
