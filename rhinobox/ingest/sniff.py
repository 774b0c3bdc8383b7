"""MIME detection with libmagic, as `file --mime-type` answers on the whole file.

Three steps, cheapest first: the signature table (media headers, microseconds); libmagic's built-in
tests without soft magic over the whole document (JSON, NDJSON, CSV, CDF, tar and the text encoding,
C-speed); then the soft magic, the costly part (0.2 ms for binary, 0.9-1.4 ms for 2-4 KiB of
text), over a window: the whole document when it is binary (the cost hardly grows with size), its
first TEXT_WINDOW bytes when it is text. The soft magic runs only the tests that may match the
window (`magic_prefilter`), on a database reduced to them (`magic_cookies`): the same answer, a
fraction of the cost. When none of those tests can print a MIME type (`magic_gates`: most text and
unknown bytes), libmagic is not run at all for plain text and plain bytes (`magic_plain`). Both
filters run compiled when the install built them (`magic_native`, RHINOBOX_MAGIC_NATIVE): the same
answers for a third of the CPU. Each thread has its own libmagic handles (they are not thread-safe).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from rhinobox.ingest.documents import DocumentScan
from rhinobox.ingest.magic_cookies import LibmagicHandle, ReducedMagic, load_prefilter
from rhinobox.ingest.magic_gates import MimeTestFilter, load_mime_filter
from rhinobox.ingest.magic_native import NativeMimeFilter, NativePrefilter, load_native_filter, load_native_prefilter
from rhinobox.ingest.magic_plain import FirstLook, plain_answer
from rhinobox.ingest.magic_prefilter import MagicPrefilter
from rhinobox.ingest.signatures import match_signature

__all__ = ["FALLBACK_MIME", "SNIFF_BYTES", "TEXT_WINDOW", "MimeSniffer"]

# What `sniff(head)` looks at, and the head a caller keeps when it can give no more.
SNIFF_BYTES: Final = 2048
# Text is searched this far: libmagic's regex tests look no further (FILE_REGEX_MAX), its HTML,
# XML and SVG searches 4 KiB past offset 19; 2 KiB missed C, C++, Makefiles and HTML (tests/test_sniff_corpus.py).
TEXT_WINDOW: Final = 8192
FALLBACK_MIME: Final = "application/octet-stream"
TEXT_MIME: Final = "text/plain"
# What the built-in tests answer when none of them decided: the soft magic must look.
_UNDECIDED: Final = frozenset({TEXT_MIME, FALLBACK_MIME, "application/x-empty"})
_UTF8_BOM: Final = b"\xef\xbb\xbf"
# Starts of the text libmagic finds in wide or 7-bit encodings (UTF-16/32 byte-order marks, UTF-7).
_UNICODE_MARKS: Final = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff", b"+/v")

# magic.h (libmagic 5.38+); python-magic predates the CSV and JSON flags.
_MIME_TYPE: Final = 0x0000010
_NO_CHECK_COMPRESS: Final = 0x0001000
_NO_CHECK_SOFT: Final = 0x0004000
_NO_CHECK_APPTYPE: Final = 0x0008000
_NO_CHECK_ELF: Final = 0x0010000
_NO_CHECK_CSV: Final = 0x0080000
_NO_CHECK_JSON: Final = 0x0400000
# The soft magic over a window: JSON and CSV were decided on the whole document already.
_WINDOW_FLAGS: Final = _MIME_TYPE | _NO_CHECK_JSON | _NO_CHECK_CSV
# The built-in tests only (tar, JSON, CSV, CDF, encoding): linear in the size, no soft magic.
_BUILTIN_FLAGS: Final = _MIME_TYPE | _NO_CHECK_SOFT | _NO_CHECK_COMPRESS | _NO_CHECK_ELF | _NO_CHECK_APPTYPE


def _handle(flags: int) -> LibmagicHandle:
    return LibmagicHandle(flags)


@dataclass(frozen=True, slots=True)
class _Handles:
    """One thread's libmagic handles."""

    full: LibmagicHandle  # everything, as `file` (for a head alone)
    window: LibmagicHandle
    builtin: LibmagicHandle
    builtin_no_json: LibmagicHandle  # a streamed document's JSON is decided by its scan
    reduced: ReducedMagic | None  # the window's soft magic on the tests that may match
    reduced_whole: ReducedMagic | None  # everything, as `file`, on the tests that may match

    @classmethod
    def open(cls, prefilter: bool) -> _Handles:
        loaded = load_prefilter() if prefilter else None
        return cls(
            full=_handle(_MIME_TYPE),
            window=_handle(_WINDOW_FLAGS),
            builtin=_handle(_BUILTIN_FLAGS),
            builtin_no_json=_handle(_BUILTIN_FLAGS | _NO_CHECK_JSON),
            reduced=ReducedMagic(loaded[0], _WINDOW_FLAGS) if loaded is not None else None,
            reduced_whole=ReducedMagic(loaded[0], _MIME_TYPE) if loaded is not None else None,
        )


def _ask(handle: LibmagicHandle, data: bytes | memoryview) -> str:
    mime = handle.answer(bytes(data))
    if mime is None or not mime.strip():
        return FALLBACK_MIME
    return mime.strip().lower()


def _text_pass(window: bytes) -> bool | None:
    """Whether libmagic's text tests see `window` as it is: ASCII or UTF-8 without a BOM (True);
    not at all, libmagic's encoding check finding no text (False); or on a converted copy, which
    the prefilter cannot read (None)."""
    if window.isascii():
        return True
    if b"\0" in window and not window.startswith(_UNICODE_MARKS):
        # A NUL is no character of any 8-bit encoding libmagic tries (encoding.c); its text pass
        # checks again without trailing NULs (ascmagic.c), and may then read a copy without them.
        return False if b"\0" in window.rstrip(b"\0") else None
    if window.startswith(_UTF8_BOM):
        return None
    try:
        window.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return True


def _mime_filter(native: bool) -> MimeTestFilter | NativeMimeFilter | None:
    """The gates' filter (built once per process): compiled when asked for and built, else Python's."""
    python = load_mime_filter()
    if python is None or not native:
        return python
    return load_native_filter(python) or python


def _prefilter(native: bool) -> MagicPrefilter | NativePrefilter | None:
    """The whole database's prefilter (built once per process): compiled when asked for and built."""
    loaded = load_prefilter()
    if loaded is None or not native:
        return None if loaded is None else loaded[1]
    return load_native_prefilter(loaded[1]) or loaded[1]


class MimeSniffer:
    """Detects MIME types; safe to share between threads (each thread gets its own handles)."""

    def __init__(self, prefilter: bool = True, native: bool = True) -> None:
        """`prefilter`: run only the soft-magic tests that may match (same answers; off: all of them).
        `native`: decide which may print with the compiled filter when it was built (same answers)."""
        self._local = threading.local()
        self._prefilter = prefilter
        self._native = native
        self._filter: MimeTestFilter | NativeMimeFilter | None = None  # chosen on first use
        self._candidates: MagicPrefilter | NativePrefilter | None = None

    def warm_up(self) -> None:
        """Load libmagic's database for the calling thread now (it takes milliseconds), not on a request."""
        self._handles()
        if self._prefilter:
            self._gates_filter()  # once per process: RE2 sets and gates (a quarter of a second)
            self._whole_prefilter()

    def _handles(self) -> _Handles:
        handles: _Handles | None = getattr(self._local, "handles", None)
        if handles is None:
            handles = self._local.handles = _Handles.open(self._prefilter)
        return handles

    def sniff(self, head: bytes | memoryview) -> str:
        """The MIME type of content of which only `head` is known (SNIFF_BYTES of it are looked at)."""
        known = match_signature(head)
        if known is not None:
            return known
        return _ask(self._handles().full, head[:SNIFF_BYTES])

    def sniff_document(self, data: bytes | memoryview) -> str:
        """The MIME type of a whole document held in memory."""
        known = match_signature(data[:SNIFF_BYTES])
        if known is not None:
            return known
        handles = self._handles()
        if len(data) <= TEXT_WINDOW:
            mime = self._in_one_pass(handles, data)
            if mime is not None:
                return mime
        builtin = _ask(handles.builtin, data)
        if builtin not in _UNDECIDED:
            return builtin
        return self._soft_magic(handles, data, builtin)

    def sniff_without_libmagic(self, data: bytes | memoryview) -> str | None:
        """The MIME type of a whole document held in memory when no libmagic call is needed (a
        signature, or plain text or bytes that no soft-magic test can type: microseconds); else None.

        What lets a caller type the file where it stands instead of handing it to a worker thread.
        """
        known = match_signature(data[:SNIFF_BYTES])
        if known is not None:
            return known
        if len(data) > TEXT_WINDOW or not self._prefilter or load_prefilter() is None:
            return None
        return self._first_look(bytes(data)).mime

    def sniff_scan(self, scan: DocumentScan) -> str:
        """The MIME type of a streamed document from what its scan kept (head and JSON verdict)."""
        head = scan.head
        known = match_signature(head[:SNIFF_BYTES])
        if known is not None:
            return known
        json_mime = scan.json_mime()
        if json_mime is not None:
            return json_mime
        handles = self._handles()
        builtin = _ask(handles.builtin_no_json, head)
        if builtin not in _UNDECIDED:
            return builtin
        return self._soft_magic(handles, head, builtin)

    def _first_look(self, whole: bytes) -> FirstLook:
        """Whether a soft-magic test may print on a whole document, and if none may, the plain answer."""
        mime_filter = self._gates_filter()
        if isinstance(mime_filter, NativeMimeFilter):
            look = mime_filter.first_look(whole)  # the same answer in one call
            if look is not None:
                return look
        if not self._untyped(whole, _text_pass(whole)):
            return FirstLook.MAY_PRINT
        mime = plain_answer(whole)
        if mime is None:
            return FirstLook.BUILTIN
        return FirstLook.PLAIN_TEXT if mime == TEXT_MIME else FirstLook.PLAIN_BYTES

    def _untyped(self, data: bytes, text: bool | None) -> bool:
        """No soft-magic test can print a MIME type on `data`: libmagic's built-in tests answer alone."""
        mime_filter = self._gates_filter() if text is not None else None
        return mime_filter is not None and not mime_filter.may_print(data, text is True)

    def _gates_filter(self) -> MimeTestFilter | NativeMimeFilter | None:
        if self._filter is None:
            self._filter = _mime_filter(self._native)
        return self._filter

    def _whole_prefilter(self) -> MagicPrefilter | NativePrefilter | None:
        if self._candidates is None:
            self._candidates = _prefilter(self._native)
        return self._candidates

    def _in_one_pass(self, handles: _Handles, data: bytes | memoryview) -> str | None:
        """A document no longer than the text window, typed by one libmagic call as `file` types it
        (built-in tests, then the soft magic on the tests that may match); None without a prefilter.

        One call, not the built-in pass and then the soft magic: both passes would run libmagic's
        text classification (about 15 us for 4 KiB of text) and its encoding detection.
        """
        loaded = load_prefilter() if handles.reduced_whole is not None else None
        if handles.reduced_whole is None or loaded is None:
            return None
        whole = bytes(data)
        look = self._first_look(whole)
        if look is not FirstLook.MAY_PRINT:
            return look.mime or _ask(handles.builtin, whole)
        prefilter = self._whole_prefilter() or loaded[1]
        candidates = prefilter.candidates(whole, _text_pass(whole))
        if not loaded[0].needs_whole.isdisjoint(candidates):
            return _ask(handles.full, whole)
        mime = handles.reduced_whole.answer(candidates, whole)
        return FALLBACK_MIME if mime is None or not mime.strip() else mime.strip().lower()

    def _soft_magic(self, handles: _Handles, data: bytes | memoryview, builtin: str) -> str:
        """The soft magic's answer: over all of `data` if it is binary, over TEXT_WINDOW if text."""
        window = data if builtin != TEXT_MIME else data[:TEXT_WINDOW]
        loaded = load_prefilter() if handles.reduced is not None else None
        if handles.reduced is None or loaded is None:
            return _ask(handles.window, window)
        window = bytes(window)
        text = _text_pass(window) if builtin == TEXT_MIME else False
        if self._untyped(window, text):
            return builtin  # the soft magic would print nothing: the built-in tests' answer stands
        prefilter = self._whole_prefilter() or loaded[1]
        candidates = prefilter.candidates(window, text)
        if not loaded[0].needs_whole.isdisjoint(candidates):
            return _ask(handles.window, window)
        mime = handles.reduced.answer(candidates, window)
        return FALLBACK_MIME if mime is None or not mime.strip() else mime.strip().lower()
