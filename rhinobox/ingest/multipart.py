"""Streaming multipart/form-data framing, fed large chunks straight off the socket.

Hand-written because python-multipart's per-byte state machine took ~13 us of the loop per 4 KiB part;
`bytes.find` (C speed) locates each delimiter and header block here, in ~4 us a part including headers.
It reads bodies as python-multipart did, except where tests/test_multipart_differential.py documents
otherwise; what to do with the bytes is the ingest session's job.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import ClassVar, Final

from python_multipart.multipart import parse_options_header

from rhinobox.errors import MalformedMultipart, NotMultipart

__all__ = [
    "PART_DATA",
    "PART_END",
    "PART_START",
    "Event",
    "MultipartStream",
    "PartHeaders",
    "boundary_from_content_type",
]

PART_START: Final = 0
PART_DATA: Final = 1
PART_END: Final = 2
MAX_HEADERS_PER_PART: Final = 16
MAX_HEADER_BYTES: Final = 8192  # a part's whole header block: its lines and the blank line that ends it
MAX_BOUNDARY_CHARS: Final = 70
_SIMPLE_FORM_DATA: Final = re.compile(r"multipart/form-data; ?boundary=([0-9A-Za-z'()+_,./:=?-]+)")
_EXT_FILENAME: Final = re.compile(r";\s*filename\*\s*=\s*([^;]+)", re.IGNORECASE)
# No quote, backslash or semicolon inside the values: parse_options_header would read them the same, with no
# escapes, IE path workaround or `filename*` to apply.
_PLAIN_DISPOSITION: Final = re.compile(r'form-data; name="([^"\\;]*)"(?:; filename="([^"\\;]*)")?')

Event = tuple[int, "PartHeaders | memoryview | None"]

_CRLF: Final = b"\r\n"
_CR: Final = b"\r"
_DASHES: Final = b"--"
_PADDING_BYTES: Final = (b" ", b"\t")  # RFC 2046 transport padding after a boundary, before its CRLF
_BLANK_LINE: Final = b"\r\n\r\n"  # ends a header block; searched from the CRLF before the block
_BLANK_LINE_OVERLAP: Final = len(_BLANK_LINE) - 1  # bytes of a blank line that may straddle two chunks
_LEADING_NEWLINES: Final = re.compile(rb"[\r\n]*")  # the only preamble accepted (clients send at most a CRLF)
_TRANSPORT_PADDING: Final = re.compile(rb"[ \t]*")
_TOKEN: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # an RFC 9110 token: a header name
# Header lines as python-multipart accepts them: a token, a colon, a value without CR (a bare LF passes);
# obsolete line folding fails, as a continuation line starts with a space, not a token.
_HEADER_BLOCK: Final = re.compile(_TOKEN + rb":[^\r]*(?:\r\n" + _TOKEN + rb":[^\r]*)*")
_NO_VIEW: Final = memoryview(b"")

# Where the framer is; each state has one method in `MultipartStream._step`.
_OPENING: Final = 0  # CR/LF, then the first `--boundary`
_AFTER_OPENING: Final = 1  # `--` (an empty body) or the rest of the first boundary line
_BOUNDARY_LINE: Final = 2  # transport padding, then the CRLF that ends a boundary line
_HEADERS: Final = 3  # a part's header block, up to its blank line
_BODY: Final = 4  # a part's data, up to the next delimiter
_EPILOGUE: Final = 5  # after the close delimiter: ignored
_FAILED: Final = 6  # a MalformedMultipart was raised; the body is not read further


@dataclass(frozen=True, slots=True)
class PartHeaders:
    """What a part's headers say. `filename` is None for a text field; raw bytes for a file."""

    field: str
    filename: bytes | None
    content_type: str | None
    headers: dict[str, str]


def boundary_from_content_type(content_type: str | None) -> bytes:
    """The boundary of a multipart/form-data Content-Type, or `NotMultipart`/`MalformedMultipart`."""
    simple = _SIMPLE_FORM_DATA.fullmatch(content_type or "")
    if simple is not None and len(simple.group(1)) <= MAX_BOUNDARY_CHARS:
        return simple.group(1).encode("latin-1")  # what every client sends; parsed without the general parser
    try:
        ctype, options = parse_options_header(content_type or "")
    except UnicodeEncodeError:  # aiohttp decodes header bytes as UTF-8: a value outside latin-1
        if (content_type or "").lower().startswith("multipart/form-data"):
            raise MalformedMultipart("missing or invalid multipart boundary") from None
        raise NotMultipart() from None
    if ctype != b"multipart/form-data":
        raise NotMultipart()
    boundary = options.get(b"boundary", b"")
    if not 1 <= len(boundary) <= MAX_BOUNDARY_CHARS:
        raise MalformedMultipart("missing or invalid multipart boundary")
    return boundary


def _parse_part_headers(raw: dict[str, str]) -> PartHeaders:
    name, filename = _parse_disposition(raw.get("content-disposition", ""))
    ctype = raw.get("content-type")
    return PartHeaders(
        field=name.decode("utf-8", errors="replace"),
        filename=filename,
        content_type=ctype.strip().lower() if ctype else None,
        headers=raw,
    )


def _parse_disposition(disposition: str) -> tuple[bytes, bytes | None]:
    """The field name and filename of a form-data part, as python-multipart's `parse_options_header` reads them."""
    plain = _PLAIN_DISPOSITION.fullmatch(disposition)
    if plain is not None:  # what every client sends; the general parser costs ~4 us a part
        name, filename = plain.groups()
        return name.encode("latin-1"), None if filename is None else filename.encode("latin-1")
    kind, options = parse_options_header(disposition)
    if kind != b"form-data":
        raise MalformedMultipart("a part lacks Content-Disposition: form-data")
    filename = options.get(b"filename")
    extended = _EXT_FILENAME.search(disposition)
    if extended:  # RFC 5987 form; RFC 7578 forbids it, but some clients send it
        charset, _, rest = extended.group(1).strip().strip('"').partition("'")
        _, _, quoted = rest.partition("'")
        decoded = urllib.parse.unquote_to_bytes(quoted)
        if charset.strip().lower() in ("iso-8859-1", "latin1", "latin-1"):
            decoded = decoded.decode("latin-1").encode()
        filename = decoded  # UTF-8 (the only other charset RFC 8187 allows); decoded leniently later
    return options.get(b"name", b""), filename


def _parse_header_block(block: bytes | bytearray, max_headers: int) -> dict[str, str]:
    """`name: value` lines (names lower-cased, values stripped) as python-multipart reads them."""
    if not block:
        return {}
    if block.count(_CRLF) >= max_headers:
        raise MalformedMultipart(f"a part has more than {max_headers} headers")
    if _HEADER_BLOCK.fullmatch(block) is None:  # one C-speed pass instead of a check per line
        raise MalformedMultipart("a part header is not a `name: value` line without a bare CR")
    lines = block.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip()
    return headers


class MultipartStream:
    """Feed body chunks; get back the events they completed, in order.

    Part data streams out as it arrives: only a tail that may begin a delimiter (at most the delimiter
    and one byte) is held back, and only a part's header block (at most `max_header_bytes`) is buffered.
    """

    max_header_bytes: ClassVar[int] = MAX_HEADER_BYTES
    max_headers_per_part: ClassVar[int] = MAX_HEADERS_PER_PART

    def __init__(self, boundary: bytes) -> None:
        if not 1 <= len(boundary) <= MAX_BOUNDARY_CHARS or _CR in boundary or b"\n" in boundary:
            raise MalformedMultipart("missing or invalid multipart boundary")
        self.complete = False
        self._dash_boundary = _DASHES + boundary
        self._delimiter = _CRLF + self._dash_boundary  # RFC 2046: a delimiter starts on a new line
        # A delimiter that ends a part, or may once more bytes come: what `_body` stops at.
        self._delimiter_line = re.compile(re.escape(self._delimiter) + rb"(?:\r\n|--|[ \t]|[\r-]?\Z)")
        self._state = _OPENING
        self._carry = b""  # held-back tail of the last chunk, to be read again before the next one
        self._head = bytearray()  # a header block split across chunks, from the CRLF before it
        self._head_scanned = 0  # how much of `_head` is known to hold no blank line
        self._events: list[Event] = []
        self._view = _NO_VIEW
        self._step = (
            self._opening,
            self._after_opening,
            self._boundary_line,
            self._headers,
            self._body,
            self._epilogue,
            self._failed,
        )

    def feed(self, chunk: bytes) -> list[Event]:
        """Parse one chunk; return the events it completed.

        PART_DATA payloads are views of `chunk`, valid as long as it is left unchanged; when bytes held back
        from the previous chunk must be read first, they are views of a new immutable `bytes` (that tail plus a
        copy of `chunk`), which they keep alive.
        """
        if self._state == _EPILOGUE:
            return []
        data = self._carry + chunk if self._carry else chunk
        self._carry = b""
        self._view = memoryview(data)
        events: list[Event] = []
        self._events = events
        pos, end, step = 0, len(data), self._step
        try:
            while pos < end:
                pos = step[self._state](data, pos)
        except MalformedMultipart:
            self._state = _FAILED
            raise
        finally:
            self._view, self._events = _NO_VIEW, []  # hold no chunk between feeds
        return events

    def finish(self) -> None:
        """Signal the end of the body; raise if the closing boundary never came."""
        if not self.complete:
            raise MalformedMultipart("the multipart body ended before its closing boundary")

    # -- one method per state: each takes the data and a position, returns the position it reached ----------

    def _opening(self, data: bytes, pos: int) -> int:
        """CR/LF before the first boundary are skipped; anything else there is refused."""
        match = _LEADING_NEWLINES.match(data, pos)
        pos = match.end() if match else pos
        expected = self._dash_boundary
        got = data[pos : pos + len(expected)]
        if not expected.startswith(got):
            raise MalformedMultipart("the multipart body does not start with its boundary")
        if len(got) < len(expected):
            self._carry = got
            return len(data)
        self._state = _AFTER_OPENING
        return pos + len(expected)

    def _after_opening(self, data: bytes, pos: int) -> int:
        """`--boundary--` is a body without parts; otherwise the first boundary line goes on."""
        if data.startswith(_DASHES, pos):
            return self._close(data)
        if pos == len(data) - 1 and data.startswith(b"-", pos):
            self._carry = b"-"
            return len(data)
        self._state = _BOUNDARY_LINE
        return pos

    def _boundary_line(self, data: bytes, pos: int) -> int:
        """Transport padding, then CRLF, then the part's headers."""
        match = _TRANSPORT_PADDING.match(data, pos)
        pos = match.end() if match else pos
        if data.startswith(_CRLF, pos):
            self._state = _HEADERS
            return pos + len(_CRLF)
        if pos == len(data):
            return pos
        if pos == len(data) - 1 and data.startswith(_CR, pos):
            self._carry = _CR
            return len(data)
        raise MalformedMultipart("a multipart boundary line does not end in CRLF")

    def _headers(self, data: bytes, pos: int) -> int:
        """The header block up to its blank line, never more than `max_header_bytes` of it."""
        if self._head or pos == 0:
            return self._headers_across_chunks(data, pos)
        # The boundary line's CRLF sits just before `pos`: searching from it finds an empty block too.
        limit = pos + self.max_header_bytes
        blank = data.find(_BLANK_LINE, pos - len(_CRLF), limit)
        if blank < 0:
            if len(data) >= limit:
                raise MalformedMultipart(f"a part's headers exceed {self.max_header_bytes} bytes")
            self._head = bytearray(self._view[pos - len(_CRLF) :])
            self._head_scanned = max(len(self._head) - _BLANK_LINE_OVERLAP, 0)
            return len(data)
        self._start_part(data[pos:blank])
        return blank + len(_BLANK_LINE)

    def _headers_across_chunks(self, data: bytes, pos: int) -> int:
        """Accumulate a header block that spans chunks, searching each byte for the blank line once."""
        head = self._head or bytearray(_CRLF)
        held = len(head)
        head += self._view[pos : pos + self.max_header_bytes + len(_CRLF) - held]
        blank = self._find_blank_line(head, self._head_scanned)
        if blank < 0:
            if len(head) >= self.max_header_bytes + len(_CRLF):
                raise MalformedMultipart(f"a part's headers exceed {self.max_header_bytes} bytes")
            self._head = head
            self._head_scanned = max(len(head) - _BLANK_LINE_OVERLAP, 0)
            return len(data)
        self._head = bytearray()
        self._head_scanned = 0
        self._start_part(head[len(_CRLF) : blank])
        return pos + blank + len(_BLANK_LINE) - held

    def _find_blank_line(self, head: bytearray, start: int) -> int:
        """Where the blank line ending a buffered header block starts, or -1 (its own method for tests)."""
        return head.find(_BLANK_LINE, start)

    def _start_part(self, block: bytes | bytearray) -> None:
        headers = _parse_header_block(block, self.max_headers_per_part)
        self._events.append((PART_START, _parse_part_headers(headers)))
        self._state = _BODY

    def _body(self, data: bytes, pos: int) -> int:
        """Emit the part's data up to the next delimiter; hold back only a tail that may start one."""
        delimiter = self._delimiter
        at = data.find(delimiter, pos)
        while at >= 0:
            after = at + len(delimiter)
            if data.startswith(_CRLF, after):
                self._end_part(pos, at)
                self._state = _HEADERS
                return after + len(_CRLF)
            if data.startswith(_DASHES, after):
                self._end_part(pos, at)
                return self._close(data)
            follower = data[after : after + 1]
            if follower in _PADDING_BYTES:
                self._end_part(pos, at)
                self._state = _BOUNDARY_LINE
                return after
            if not follower or (after == len(data) - 1 and follower in (_CR, b"-")):
                self._emit_data(pos, at)  # not yet known whether this is a delimiter
                self._carry = data[at:]
                return len(data)
            # `\r\n--boundary` then other bytes is data, as python-multipart reads it. Past one such lookalike,
            # a regex skips the rest in C: a body full of them costs ~5 us/KiB, not ~50 with a loop turn each.
            found = self._delimiter_line.search(data, after)
            at = found.start() if found else -1
        held = self._delimiter_prefix_at(data, pos)
        self._emit_data(pos, held)
        self._carry = data[held:]
        return len(data)

    def _delimiter_prefix_at(self, data: bytes, start: int) -> int:
        """Where a tail of `data` that may begin a delimiter starts (`len(data)` if none)."""
        delimiter = self._delimiter
        at = data.rfind(_CR, max(start, len(data) - len(delimiter) + 1))
        # A delimiter's only CR is its first byte (a boundary holds none), so only the last CR can start one.
        if at >= 0 and delimiter.startswith(data[at:]):
            return at
        return len(data)

    def _emit_data(self, start: int, end: int) -> None:
        if end > start:
            self._events.append((PART_DATA, self._view[start:end]))

    def _end_part(self, start: int, end: int) -> None:
        self._emit_data(start, end)
        self._events.append((PART_END, None))

    def _close(self, data: bytes) -> int:
        """The close delimiter: the body is complete and the epilogue after it is ignored (RFC 2046)."""
        self.complete = True
        self._state = _EPILOGUE
        return len(data)

    def _epilogue(self, data: bytes, pos: int) -> int:
        return len(data)

    def _failed(self, data: bytes, pos: int) -> int:
        raise MalformedMultipart("the multipart body was already found malformed")
