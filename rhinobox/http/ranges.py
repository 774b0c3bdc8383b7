"""Conditional requests and byte ranges against a blob whose strong validator is its hash (RFC 9110)."""

from __future__ import annotations

from aiohttp import hdrs, web

from rhinobox.errors import RangeNotSatisfiable

__all__ = ["ByteRange", "if_match", "if_none_match", "parse_byte_range", "requested_range"]

ByteRange = tuple[int, int]  # [start, end)


def if_match(request: web.Request, digest: str) -> bool:
    """RFC 9110 13.1.1: strong comparison; absent means true."""
    tags = request.if_match
    if tags is None:
        return True
    return any(tag.value in ("*", digest) and not tag.is_weak for tag in tags)


def if_none_match(request: web.Request, digest: str) -> bool:
    """RFC 9110 13.1.2: True when the client's copy is current (weak comparison)."""
    tags = request.if_none_match
    return tags is not None and any(tag.value in ("*", digest) for tag in tags)


def requested_range(request: web.Request, digest: str, size: int) -> ByteRange | None:
    header = request.headers.get(hdrs.RANGE)
    if header is None:
        return None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range.strip() != f'"{digest}"':
        return None  # a stale validator (or a date: we only issue tags): send the whole blob
    return parse_byte_range(header, size)


def parse_byte_range(header: str, size: int) -> ByteRange | None:
    """The one range a `Range` header asks of `size` bytes, as [start, end); None means "send it all".

    Syntax we do not serve (other units, several ranges, malformed specs) is ignored, as RFC 9110
    14.2 allows; a well-formed range that starts past the end raises `RangeNotSatisfiable`. Numbers
    of any length are read exactly as RFC 9110 means them (a start past the end is 416, an end past
    it is clipped), without ever converting more digits than a size can have.
    """
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not _digits(first, allow_empty=True) or not _digits(last, allow_empty=True):
        return None
    if not first:
        if not last:
            return None
        suffix = _bounded(last, size)
        if suffix == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - suffix), size
    first, last = first.lstrip("0") or "0", last.lstrip("0") or ("0" if last else "")
    if last and (len(last), last) < (len(first), first):
        return None  # last < start, compared as numbers of any length
    start = _bounded(first, size)
    if start >= size:
        raise RangeNotSatisfiable(size)
    end = min(_bounded(last, size) + 1, size) if last else size
    return start, end


def _digits(text: str, *, allow_empty: bool) -> bool:
    return (allow_empty and text == "") or (text.isascii() and text.isdigit())


def _bounded(digits: str, size: int) -> int:
    """The value of a decimal string, or `size + 1` when it is longer than any number up to `size`."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(size)) else size + 1
