"""`JsonScan`: libmagic's JSON test, fed a document in pieces so a large upload is never held whole.

libmagic (is_json.c) calls a document JSON only after parsing all of it, so a head cannot decide:
a 2 KiB head of a 3 KiB JSON file reads as `text/plain`. This parser accepts exactly what is_json.c
accepts (its leniencies too: `[1,]`, `01`, `1.`, control bytes inside strings) and gives its two
answers: one value that holds an object or array and nothing after it but blanks is
`application/json`; a first value followed by a second that starts with the same byte is
`application/x-ndjson`, whatever comes after the second. tests/test_sniff_json.py checks it
against libmagic on generated documents split at every kind of boundary.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["JSON_MIME", "MAX_DEPTH", "MAX_TOKEN_BYTES", "NDJSON_MIME", "SCAN_LIMIT", "JsonScan"]

JSON_MIME: Final = "application/json"
NDJSON_MIME: Final = "application/x-ndjson"
# is_json.c refuses a value nested in more than this many arrays and objects (its `lvl > 500`; one
# less inside the second value of NDJSON, which it parses from level 1).
MAX_DEPTH: Final = 250
# A number or constant split across pieces is carried over; none in a real document is this long.
MAX_TOKEN_BYTES: Final = 64 * 1024
# `file` parses at most this much (libmagic's FILE_BYTES_MAX); a document that parses this far and
# goes on is taken for JSON (`file` says text/plain: it sees no end). Parsing runs at 4-10 MB/s.
SCAN_LIMIT: Final = 7 * 1024 * 1024

_SKIP_BLANKS: Final = re.compile(rb"[ \t\n\r]*")
_STRING_BODY: Final = re.compile(rb'[^"\\\x00]*')
_HEX4: Final = re.compile(rb"[0-9a-fA-F]{4}")
_SIMPLE_ESCAPES: Final = frozenset(b'"\\/bfnrt')
# is_json.c's number: `-`, digits, `.`, digits (one digit at least), then an exponent with a digit.
_NUMBER_CHARS: Final = frozenset(b"-+.eE0123456789")
_CONSTANTS: Final = {ord("t"): b"true", ord("f"): b"false", ord("n"): b"null"}

# Fast paths: runs of `"key": scalar,` (objects) and `scalar,` (arrays), consumed in one C call.
_STR: Final = rb'"(?:[^"\\\x00]|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*"'
_NUM: Final = rb"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_SCALAR: Final = rb"(?:" + _STR + rb"|" + _NUM + rb"|true|false|null)"
_WS: Final = rb"[ \t\n\r]*"
_OBJECT_RUN: Final = re.compile(rb"(?:" + _STR + _WS + rb":" + _WS + _SCALAR + _WS + rb"," + _WS + rb")+")
_ARRAY_RUN: Final = re.compile(rb"(?:" + _SCALAR + _WS + rb"," + _WS + rb")+")
_NUMBER: Final = re.compile(_NUM)

# What the parser expects next.
_VALUE: Final = 0  # a value (or, right after `[` or a comma in an array, `]`)
_KEY: Final = 1  # a key string (or, right after `{` or a comma in an object, `}`)
_COLON: Final = 2
_AFTER: Final = 3  # `,` or the closing bracket, after a value inside a container
_TOP_AFTER: Final = 4  # the first value is complete: blanks, then the end or a second value

# Answers.
_OPEN: Final = 0
_NOT_JSON: Final = 1
_JSON: Final = 2  # provisional until the end: only blanks so far after the first value
_NDJSON: Final = 3  # final


class JsonScan:
    """Feed pieces in order, then `finish`; stops working as soon as the answer is known."""

    def __init__(self) -> None:
        self._stack: list[int] = []  # open containers: ord("[") or ord("{")
        self._state = _VALUE
        self._answer = _OPEN
        self._first: int | None = None  # the first byte of the first value (is_json's `*ouc`)
        self._second = False  # parsing the second top-level value
        self._in_string = False
        self._carry = b""  # an incomplete escape, number or constant at the end of a piece
        self._parsed = 0

    @property
    def decided(self) -> bool:
        """True once more bytes cannot change the answer (not JSON, or NDJSON)."""
        return self._answer in (_NOT_JSON, _NDJSON) or (self._answer == _JSON and self._parsed >= SCAN_LIMIT)

    def feed(self, piece: bytes | memoryview) -> None:
        """Parse the next piece of the document."""
        if self.decided or not piece:
            return
        if self._parsed >= SCAN_LIMIT:
            if self._answer == _OPEN:
                self._answer = _JSON  # parsed as far as `file` looks, and still JSON
            return
        self._parsed += len(piece)
        buf = self._carry + bytes(piece) if self._carry else bytes(piece)
        self._carry = b""
        self._parse(buf)

    def finish(self) -> str | None:
        """`application/json`, `application/x-ndjson`, or None: the answer for the whole document."""
        if self._answer == _NDJSON:
            return NDJSON_MIME
        if self._answer == _OPEN:
            self._end_of_document()
        return JSON_MIME if self._answer == _JSON else None

    # -- the parser -------------------------------------------------------------------------

    def _fail(self) -> None:
        self._answer = _NOT_JSON

    def _end_of_document(self) -> None:
        # The document ended: only a complete first value followed by blanks is JSON.
        complete = self._state == _TOP_AFTER and not self._second and not self._in_string and not self._carry
        self._answer = _JSON if complete else _NOT_JSON

    def _parse(self, buf: bytes) -> None:
        pos, end = 0, len(buf)
        while pos < end and not self.decided:
            if self._in_string:
                pos = self._string(buf, pos)
                continue
            pos = _SKIP_BLANKS.match(buf, pos).end()  # type: ignore[union-attr]
            if pos == end:
                return
            if self._state == _TOP_AFTER:
                pos = self._second_value(buf, pos)
            elif self._state == _VALUE:
                pos = self._value(buf, pos)
            elif self._state == _KEY:
                pos = self._key(buf, pos)
            elif self._state == _COLON:
                if buf[pos] != 0x3A:  # ':'
                    self._fail()
                    return
                self._state = _VALUE
                pos += 1
            else:
                pos = self._after(buf, pos)

    def _second_value(self, buf: bytes, pos: int) -> int:
        if buf[pos] != self._first:
            self._fail()
            return pos
        self._second = True
        self._state = _VALUE
        return pos

    def _too_deep(self) -> bool:
        """A value may not start here: nested deeper than is_json.c goes."""
        return len(self._stack) > MAX_DEPTH - self._second

    def _value(self, buf: bytes, pos: int) -> int:
        byte = buf[pos]
        if self._stack and self._stack[-1] == 0x5B and byte == 0x5D:  # `]` closes an array
            return self._close(pos)
        if self._too_deep():
            self._fail()
            return pos
        if self._stack and self._stack[-1] == 0x5B:  # a run of scalars
            run = _ARRAY_RUN.match(buf, pos)
            if run is not None:
                return run.end()
        if not self._stack and self._first is None:
            self._first = byte
            if byte not in (0x7B, 0x5B):
                self._fail()  # no object or array can make this JSON
                return pos
        if byte == 0x22:  # '"'
            self._in_string = True
            return pos + 1
        if byte in (0x7B, 0x5B):
            return self._open(byte, pos)
        constant = _CONSTANTS.get(byte)
        if constant is not None:
            return self._constant(buf, pos, constant)
        return self._number(buf, pos)

    def _open(self, byte: int, pos: int) -> int:
        self._stack.append(byte)
        self._state = _KEY if byte == 0x7B else _VALUE
        return pos + 1

    def _close(self, pos: int) -> int:
        self._stack.pop()
        self._value_done()
        return pos + 1

    def _key(self, buf: bytes, pos: int) -> int:
        byte = buf[pos]
        if byte == 0x7D:  # '}'
            return self._close(pos)
        if byte != 0x22:
            self._fail()
            return pos
        run = None if self._too_deep() else _OBJECT_RUN.match(buf, pos)
        if run is not None:
            return run.end()
        self._in_string = True
        return pos + 1

    def _after(self, buf: bytes, pos: int) -> int:
        byte, container = buf[pos], self._stack[-1]
        if byte == 0x2C:  # ','
            self._state = _KEY if container == 0x7B else _VALUE
            return pos + 1
        if byte == container + 2:  # `]` closes `[`, `}` closes `{`
            return self._close(pos)
        self._fail()
        return pos

    def _value_done(self) -> None:
        if self._stack:
            self._state = _AFTER
        elif self._second:
            self._answer = _NDJSON
        else:
            self._state = _TOP_AFTER

    def _string(self, buf: bytes, pos: int) -> int:
        """Inside a string (key or value): scan to its closing quote, checking escapes."""
        end = len(buf)
        pos = _STRING_BODY.match(buf, pos).end()  # type: ignore[union-attr]
        if pos == end:
            return pos
        byte = buf[pos]
        if byte == 0x22:
            self._in_string = False
            if self._state == _KEY:
                self._state = _COLON
            else:
                self._value_done()
            return pos + 1
        if byte == 0:
            self._fail()
            return pos
        # A backslash: the escape may be cut by the end of this piece.
        if pos + 1 == end or (buf[pos + 1] == 0x75 and pos + 6 > end):
            self._carry = buf[pos:]
            return end
        escape = buf[pos + 1]
        if escape in _SIMPLE_ESCAPES:
            return pos + 2
        if escape == 0x75 and _HEX4.match(buf, pos + 2) is not None:
            return pos + 6
        self._fail()
        return pos

    def _constant(self, buf: bytes, pos: int, constant: bytes) -> int:
        got = buf[pos : pos + len(constant)]
        if not constant.startswith(got):
            self._fail()
            return pos
        if len(got) < len(constant):  # cut by the end of this piece
            self._carry = got
            return len(buf)
        self._value_done()
        return pos + len(constant)

    def _number(self, buf: bytes, pos: int) -> int:
        stop = pos
        while stop < len(buf) and buf[stop] in _NUMBER_CHARS:
            stop += 1
        if stop == len(buf):  # may continue in the next piece
            if stop - pos > MAX_TOKEN_BYTES:
                self._fail()
                return stop
            self._carry = buf[pos:]
            return stop
        match = _NUMBER.match(buf, pos)
        if match is None:
            self._fail()
            return pos
        self._value_done()
        return match.end()
