"""What the type-detection tests compare: the sniffer with its shortcuts against libmagic on everything."""

from __future__ import annotations

import io
import random
import re
import tarfile

from benchmarks.workload import small_files
from rhinobox.ingest.sniff import MimeSniffer

__all__ = ["disagreements", "plain_edges", "regex_example", "varied_buffers"]


def disagreements(buffers: list[bytes]) -> list[str]:
    """Buffers on which the sniffer with the prefilter answers otherwise than without it."""
    fast, whole = MimeSniffer(prefilter=True), MimeSniffer(prefilter=False)
    found = []
    for data in buffers:
        got, want = fast.sniff_document(data), whole.sniff_document(data)
        if got != want:
            found.append(f"{data[:40]!r}: {got} instead of {want}")
    return found


def _tar_head() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo("notes.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    return out.getvalue()


def varied_buffers(rng: random.Random) -> list[bytes]:
    """Text and bytes near each built-in test's edge: CSV-like, JSON-like, tar, NULs, controls, encodings."""
    texts = [bytes(t) for t in small_files(rng, 60, 3000, "text")]
    made: list[bytes] = [b"", b"a", b"ab", b"\0\0", b"x\0", _tar_head(), _tar_head()[:600], b"ustar" * 200]
    for text in texts:
        lines = text.split(b"\n")
        made += [
            text,
            b"a,b,c\n" * rng.randrange(1, 14) + text[:100],
            b"a,b\n1,2\n3,4,5\n" + text[:50],
            b'"x,y",z\nq,"w\nv"\n1,2\n' + text[:80],
            b"\n".join(line.replace(b" ", b",", 2) for line in lines[:12]),
            b"  {" + text[:200],
            b"[1, 2]" + text[:10],
            b"[1]",
            b'{"a": 1}\n{"b": 2}\n',
            text[:500] + b"\0" * rng.randrange(1, 9),
            text[:500] + b"\0" + text[500:900],
            text[:300] + bytes([rng.randrange(0, 32)]) + text[300:600],
            text[:300] + b"\x7f" + text[300:400],
            ("é" + text[:400].decode()).encode(),
            ("é" + text[:400].decode()).encode() + b"\0\0",
            text[:400].decode().encode("cp500"),
            text[:400] + b"\xe9\xa0",
            b"\xef\xbb\xbf" + text[:300],
            b"\xff\xfe" + text[:300].decode().encode("utf-16-le"),
            bytes.fromhex("d0cf11e0a1b11ae1") + rng.randbytes(600),
            rng.randbytes(rng.randrange(2, 5000)),
            b"{" + rng.randbytes(700),
        ]
    return made


def regex_example(pattern: bytes, rng: random.Random) -> bytes | None:
    """A string the POSIX ERE `pattern` matches (first branch, fewest repeats), or None if not made here."""
    out = bytearray()
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char in b"^":
            i += 1
            continue
        if char == ord("$"):
            out += b"\n"
            i += 1
            continue
        if char == ord("|") or char == ord(")"):
            break
        if char == ord("("):
            depth, j = 0, i
            while j < len(pattern):
                depth += {ord("("): 1, ord(")"): -1}.get(pattern[j], 0)
                if depth == 0:
                    break
                j += 1
            inner = regex_example(pattern[i + 1 : j], rng)
            if inner is None:
                return None
            atom, i = inner, j + 1
        elif char == ord("["):
            end = pattern.find(b"]", i + 2)
            if end < 0:
                return None
            body = pattern[i + 1 : end]
            if body.startswith(b"^"):
                atom = next((bytes([c]) for c in b"xyzq0" if c not in body), b"")
            elif body.startswith(b"[:"):
                atom = b"a"
            else:
                atom = body[:1]
            i = end + 1
        elif char == ord("\\"):
            atom, i = pattern[i + 1 : i + 2], i + 2
        elif char == ord("."):
            atom, i = b"a", i + 1
        else:
            atom, i = bytes([char]), i + 1
        quantifier = pattern[i : i + 1]
        if quantifier in (b"*", b"?"):
            atom, i = b"", i + 1
        elif quantifier == b"+":
            i += 1
        elif quantifier == b"{":
            close = pattern.find(b"}", i)
            count = re.match(rb"\d+", pattern[i + 1 : close])
            atom, i = atom * (int(count.group()) if count else 1), close + 1
        out += atom
    return bytes(out)


# UTF-8 at the edges of Python's strict decoder: the shortest and longest of each length, overlong
# forms, surrogates, past U+10FFFF, stray continuation bytes, sequences cut short.
_UTF8_EDGES = (
    *("c280", "dfbf", "c080", "c1bf", "e0a080", "e09fbf", "ed9fbf", "eda080", "edbfbf", "efbfbf"),
    *("f0908080", "f08fbfbf", "f48fbfbf", "f4908080", "f5808080", "ff", "fe", "80", "bf", "e282"),
    *("e228a1", "f09080", "c2", "e2829f28"),
)


def plain_edges(rng: random.Random) -> list[bytes]:
    """Buffers at the edges of libmagic's plain checks (magic_plain, sniff's text pass): UTF-8, tar
    checksums, CSV line counts, JSON starts, NULs inside and trailing, control bytes, marks."""
    text = bytes(small_files(rng, 1, 1500, "text")[0])
    made = [text[:2], text[:1], b"\t\n", b" \r\n\t", b"  \n[", b"x\0", b"\0x", b"\0\0x\0\0"]
    for edge in _UTF8_EDGES:
        sequence = bytes.fromhex(edge)
        made += [text[:40] + sequence + text[40:80], text[:40] + sequence, sequence + b"\0\0"]
        made.append(b"\xef\xbb\xbf" + sequence)
    made += [text[:60] + bytes([byte]) + text[60:90] for byte in range(32)] + [text[:60] + b"\x7f" + text[60:90]]
    for mark in (b"\xff\xfe", b"\xfe\xff", b"\0\0\xfe\xff", b"+/v", bytes.fromhex("d0cf11e0a1b11ae1")):
        made += [mark + text[:100], mark + text[:100] + b"\0", mark + b"\0" + text[:100]]
    head = _tar_head()[:512]
    for field in (b"       \0", b"        ", b"0000000 ", b"\t\t\t\t\t\t\t\t", b"1234567x", b" 12 3456", b"7777777\0"):
        made += [head[:148] + field + head[156:], (head[:148] + field + head[156:])[:520] + text[:40]]
    made += [head, head + text[:100], head[:511]]
    for lines in range(1, 14):
        made += [b"a,b\n" * lines + text[:30], b"a,b\n" * lines + b'"q"\n', b"a,b\n" * lines, b"a\n" * lines]
    made += [b"a,b\nc,d\n" + b'x"' + text[:30], b"a,b,c\nd,e,f\ng,h,i\nj,k\n" + text[:30]]
    return made
