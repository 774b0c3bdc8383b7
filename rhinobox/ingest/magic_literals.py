"""Literal text a POSIX extended regex (as libmagic compiles it) cannot match without.

libmagic's `regex` tests are costly (regexec over up to 8 KiB); a buffer that holds none of the
literals a regex requires cannot match it, so the prefilter looks for those instead. The answer
is a set of alternatives (`(class|module)` requires "class" or "module"). The extraction errs one
way only: it may name fewer or shorter literals than the regex needs, or none, never a literal
the regex could match without.
"""

from __future__ import annotations

from typing import Final

__all__ = ["required_literals"]

Requirement = frozenset[bytes]  # every match contains at least one of these

# Escaped characters that stand for themselves; any other escape (\< \> \w \s \B, GNU extensions
# among them) is taken as matching unknown text.
_SELF_ESCAPES: Final = frozenset(b".[]()*+?{}|^$\\/-")


class _GiveUp(Exception):
    """Syntax this module does not read with certainty: no requirement."""


def _bracket_end(pattern: bytes, start: int) -> int:
    """The index just past the bracket expression opened at `start` (POSIX rules)."""
    i = start + 1
    if i < len(pattern) and pattern[i] == ord("^"):
        i += 1
    if i < len(pattern) and pattern[i] == ord("]"):
        i += 1
    while i < len(pattern):
        if pattern[i] == ord("[") and i + 1 < len(pattern) and pattern[i + 1] in b":.=":
            close = pattern.find(bytes([pattern[i + 1], ord("]")]), i + 2)
            if close < 0:
                raise _GiveUp
            i = close + 2
            continue
        if pattern[i] == ord("]"):
            return i + 1
        i += 1
    raise _GiveUp


def _best(requirements: list[Requirement]) -> Requirement | None:
    """The most selective requirement of a branch: longest shortest literal, then fewest alternatives."""
    if not requirements:
        return None
    return max(requirements, key=lambda req: (min(map(len, req)), -len(req)))


class _Parser:
    """A recursive reading of the pattern into branches, each a list of requirements."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.i = 0

    def quantifier_allows_zero(self) -> bool | None:
        """Consume a quantifier at the cursor: None if none, else whether it allows zero repeats."""
        if self.i >= len(self.pattern):
            return None
        char = self.pattern[self.i]
        if char in b"*?":
            self.i += 1
            return True
        if char == ord("+"):
            self.i += 1
            return False
        if char == ord("{"):
            end = self.pattern.find(b"}", self.i)
            body = self.pattern[self.i + 1 : end] if end > 0 else b"x"
            if not body or body.strip(b"0123456789,") or body.startswith(b","):
                raise _GiveUp
            self.i = end + 1
            return int(body.split(b",")[0]) == 0
        return None

    def alternation(self) -> list[list[Requirement]]:
        branches: list[list[Requirement]] = []
        requirements: list[Requirement] = []
        run = bytearray()

        def close_run() -> None:
            if run:
                requirements.append(frozenset([bytes(run)]))
                run.clear()

        while self.i < len(self.pattern):
            char = self.pattern[self.i]
            if char == ord(")"):
                break
            self.i += 1
            if char == ord("|"):
                close_run()
                branches.append(requirements)
                requirements = []
                continue
            if char == ord("("):
                close_run()
                inner = self.alternation()
                if self.i >= len(self.pattern):
                    raise _GiveUp  # unbalanced
                self.i += 1  # the ")"
                group = _union_of_bests(inner)
                if not self.quantifier_allows_zero() and group is not None:
                    requirements.append(group)
                continue
            literal: int | None = None
            if char == ord("\\") and self.i < len(self.pattern):
                escaped = self.pattern[self.i]
                self.i += 1
                literal = escaped if escaped in _SELF_ESCAPES else None
            elif char == ord("["):
                self.i = _bracket_end(self.pattern, self.i - 1)
            elif char in b"*+?{":
                raise _GiveUp  # a quantifier with nothing before it
            elif char not in b".^$":
                literal = char
            if literal is None:
                close_run()
                self.quantifier_allows_zero()
                continue
            zero = self.quantifier_allows_zero()
            if zero is None:
                run.append(literal)
            elif zero:
                close_run()
            else:
                run.append(literal)
                close_run()
        close_run()
        branches.append(requirements)
        return branches


def _union_of_bests(branches: list[list[Requirement]]) -> Requirement | None:
    """What every match of an alternation contains: one of each branch's best, if each has one."""
    bests = [_best(branch) for branch in branches]
    if any(best is None for best in bests):
        return None
    return frozenset().union(*(best for best in bests if best is not None))


def required_literals(pattern: bytes) -> Requirement | None:
    """Literals one of which every match of `pattern` contains, or None when none can be told."""
    parser = _Parser(pattern.split(b"\0", 1)[0])  # regcomp sees a C string
    try:
        branches = parser.alternation()
    except _GiveUp:
        return None
    if parser.i != len(parser.pattern):
        return None  # a stray ")"
    return _union_of_bests(branches)
