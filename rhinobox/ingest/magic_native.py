"""The gates' filter (`magic_gates`) compiled: the same answers, one call per buffer holding the GIL.

In Python the filter costs 30-60 us per buffer, and its RE2 call lets go of the GIL, which costs a
worker two thread switches when the event loop wants it: in the server that doubled typing's CPU. The
helper (`magic_native.cc`, built by `pip install` as `_magic_native` when a C++ compiler and RE2's
headers are there) holds the same checks as data, copied here from the Python filter at start-up, and
is loaded with `ctypes.PyDLL` so a call keeps the GIL. Conditions it does not model (a regex below a
test's first line) it hands back by test, for the Python gates to decide. Without the library the
Python filter runs alone.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import threading
from collections.abc import Callable, Sequence
from enum import IntEnum
from functools import cache
from typing import Final, TypeVar

from rhinobox.ingest.magic_fixed import FixedTest, ModuloTest, RelationTest
from rhinobox.ingest.magic_gates import (
    NEVER,
    Gate,
    GuidTest,
    LiteralTest,
    MimeTestFilter,
    ModelledTest,
    NegatedRegexTest,
    Utf16Test,
)
from rhinobox.ingest.magic_plain import FirstLook
from rhinobox.ingest.magic_prefilter import MagicPrefilter, SetPatterns, split_patterns
from rhinobox.ingest.magic_regex import CertainTest, Re2Search, RegexTest

log = logging.getLogger(__name__)

_Built = TypeVar("_Built", bound="NativePrefilter")

__all__ = ["NativeMimeFilter", "NativePrefilter", "load_native_filter", "load_native_prefilter", "native_library"]

_MODULE: Final = "rhinobox.ingest._magic_native"
_DEFERRED_CAPACITY: Final = 4096  # tests handed back to Python at most; more: Python decides alone
_U64: Final = (1 << 64) - 1
_TO_END: Final = _U64  # a find's window reaching the buffer's end

# magic_native.cc's answers.
_NO: Final = 0
_YES: Final = 1
_DEFERRED: Final = 2
_LOOKS: Final = tuple(sorted(FirstLook))  # by number: 0, 1, 2, 3


class ConditionKind(IntEnum):
    """magic_native.cc's `Kind`."""

    ALWAYS = 0
    NEVER = 1
    PYTHON_ONLY = 2
    FIXED = 3
    RELATION = 4
    MODULO = 5
    UTF16 = 6
    GUID = 7
    LITERALS = 8
    REGEX = 9
    NOT_CERTAIN = 10


def _signatures(library: ctypes.CDLL) -> ctypes.CDLL:
    u64, c_int, size, handle = ctypes.c_uint64, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p
    ints = ctypes.POINTER(ctypes.c_int)
    functions: dict[str, tuple[list[type], type | None]] = {
        "rb_filter_new": ([c_int], handle),
        "rb_filter_free": ([handle], None),
        "rb_condition": ([handle, c_int, u64, c_int, c_int, c_int, u64, u64, c_int, u64, u64, c_int, ctypes.c_char_p,
                          size], c_int),
        "rb_condition_literal": ([handle, c_int, ctypes.c_char_p, size], c_int),
        "rb_node": ([handle, c_int, c_int], c_int),
        "rb_node_below": ([handle, c_int, c_int], c_int),
        "rb_gate": ([handle, c_int, c_int], c_int),
        "rb_always": ([handle, c_int], c_int),
        "rb_text_only": ([handle, c_int], c_int),
        "rb_set": ([handle, c_int, c_int], c_int),
        "rb_set_add": ([handle, c_int, c_int, ctypes.c_char_p, size, ints, size], c_int),
        "rb_set_compile": ([handle, c_int, c_int], c_int),
        "rb_find": ([handle, c_int, ctypes.c_char_p, size, c_int, u64, u64, ints, size], None),
        "rb_fixed": ([handle, c_int, c_int, c_int, ctypes.c_char_p, size], None),
        "rb_relation": ([handle, c_int, c_int, c_int], None),
        "rb_may_print": ([handle, ctypes.c_char_p, size, c_int, ints, size, ctypes.POINTER(size)], c_int),
        "rb_candidates": ([handle, ctypes.c_char_p, size, c_int, ints, size], c_int),
        "rb_gate_may_print": ([handle, c_int, ctypes.c_char_p, size], c_int),
        "rb_condition_holds": ([handle, c_int, ctypes.c_char_p, size], c_int),
        "rb_hyperscan": ([], c_int),
        "rb_first_look": ([handle, ctypes.c_char_p, size], c_int),
        "rb_text_pass": ([ctypes.c_char_p, size], c_int),
        "rb_plain_answer": ([ctypes.c_char_p, size], c_int),
    }  # fmt: skip
    for name, (argtypes, restype) in functions.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = restype
    return library


@cache
def native_library() -> ctypes.CDLL | None:
    """The compiled helper, loaded to keep the GIL in its calls; None when it was not built."""
    try:
        spec = importlib.util.find_spec(_MODULE)
    except ImportError:
        spec = None
    if spec is None or spec.origin is None:
        return None
    try:
        return _signatures(ctypes.PyDLL(spec.origin))
    except (OSError, AttributeError) as error:
        log.warning("type detection: the compiled filter %s does not load (%s); Python's runs", spec.origin, error)
        return None


def _checked(answer: int, what: object) -> int:
    if answer < 0:
        raise ValueError(f"the compiled filter refused {what!r}")
    return answer


def _tests(indices: Sequence[int]) -> tuple[ctypes.Array[ctypes.c_int], int]:
    return (ctypes.c_int * max(len(indices), 1))(*indices), len(indices)


class FilterBuilder:
    """Copies the Python filter's checks into a native filter (once per process, tens of ms)."""

    def __init__(self, library: ctypes.CDLL, handle: int) -> None:
        self._library = library
        self._handle = handle

    def condition(self, test: ModelledTest | None, kind: ConditionKind | None = None) -> int:
        lib, handle = self._library, self._handle
        regex = _regex(test)
        if test is None or (regex is not None and regex.re2 is None):
            kind = kind or (ConditionKind.PYTHON_ONLY if test is not None else ConditionKind.ALWAYS)
            return int(lib.rb_condition(handle, kind, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b"", 0))
        made = int(lib.rb_condition(handle, *_fields(test)))
        if made < 0 and regex is not None:  # the system's RE2 refuses the pattern: Python decides
            return self.condition(None, ConditionKind.PYTHON_ONLY)
        _checked(made, test)
        if isinstance(test, LiteralTest):
            for literal in test.literals:
                _checked(lib.rb_condition_literal(handle, made, literal, len(literal)), test)
        return made

    def gate(self, gate: Gate) -> int:
        if gate is NEVER:
            condition = self.condition(None, ConditionKind.NEVER)
        elif gate.modelled is not None:
            condition = self.condition(gate.modelled)
        else:
            condition = -1
        node = _checked(self._library.rb_node(self._handle, condition, int(gate.prints)), gate)
        for below in gate.below:
            _checked(self._library.rb_node_below(self._handle, node, self.gate(below)), gate)
        return node

    def match_set(self, group: int, patterns: SetPatterns) -> None:
        lib, handle = self._library, self._handle
        by_pattern, anchored = patterns
        number = int(lib.rb_set(handle, group, int(anchored)))
        for pattern, indices in by_pattern.items():
            if lib.rb_set_add(handle, group, number, pattern, len(pattern), *_tests(indices)) != 0:
                raise ValueError(f"RE2 (the system's) refused {pattern!r}")
        if lib.rb_set_compile(handle, group, number) != 0:
            raise ValueError("RE2 (the system's) could not compile a set")

    def group(self, group: int, prefilter: MagicPrefilter) -> None:
        lib, handle = self._library, self._handle
        tests = prefilter.text if group else prefilter.binary
        if not group:  # the text group's own sets are never searched: text goes through the merged set
            for patterns in tests.set_patterns:
                self.match_set(group, patterns)
        for literal, fold, start, end, indices in tests.finds:
            until = _TO_END if end is None else end
            lib.rb_find(handle, group, literal, len(literal), fold, start, until, *_tests(indices))
        for fixed in tests.table_tests:
            first = bytes(fixed.first_bytes())
            lib.rb_fixed(handle, group, fixed.index, self.condition(fixed), first, len(first))
        for relation in tests.relations:
            lib.rb_relation(handle, group, relation.index, self.condition(relation))


def _regex(test: ModelledTest | None) -> RegexTest | CertainTest | None:
    if isinstance(test, RegexTest):
        return test
    return test.certain if isinstance(test, NegatedRegexTest) else None


def _fields(test: ModelledTest) -> tuple[int, int, int, int, int, int, int, int, int, int, int, bytes, int]:
    """rb_condition's arguments after the handle: kind, offset, width, little, has_mask, mask,
    sign_bit, op, value, expected, fold, bytes, length."""
    if isinstance(test, FixedTest):
        mask = test.mask
        return (ConditionKind.FIXED, test.offset, len(test.expected), 0, mask is not None, mask or 0, 0, 0, 0, 0,
                test.fold, test.expected, len(test.expected))  # fmt: skip
    if isinstance(test, RelationTest):
        little = test.byteorder == "little"
        return (ConditionKind.RELATION, test.offset, test.width, little, test.mask is not None, (test.mask or 0) & _U64,
                test.sign_bit, test.reln, test.value & _U64, 0, 0, b"", 0)  # fmt: skip
    if isinstance(test, ModuloTest):
        little = test.byteorder == "little"
        return (ConditionKind.MODULO, test.offset, test.width, little, 0, 0, 0, 0, test.modulus, test.expected, 0,
                b"", 0)  # fmt: skip
    if isinstance(test, Utf16Test):
        return (ConditionKind.UTF16, test.at, 0, 0, 0, 0, 0, 0, 0, 0, 0, test.first, len(test.first))
    if isinstance(test, GuidTest):
        return (ConditionKind.GUID, test.at, 0, 0, 0, 0, 0, 0, 0, 0, 0, test.expected, len(test.expected))
    if isinstance(test, RegexTest | NegatedRegexTest):
        regex = test if isinstance(test, RegexTest) else test.certain
        kind = ConditionKind.REGEX if isinstance(test, RegexTest) else ConditionKind.NOT_CERTAIN
        search = regex.re2 or Re2Search(b"", False)
        lines = regex.lines if isinstance(regex, CertainTest) else 0
        return (kind, regex.offset, lines, 0, 0, 0, 0, search.line_start, regex.span, 0, 0, search.pattern,
                len(search.pattern))  # fmt: skip
    return (ConditionKind.LITERALS, 0, 0, 0, 0, 0, 0, 0, 0, 0, test.fold, b"", 0)


class NativePrefilter:
    """`MagicPrefilter.candidates` in one call to the compiled helper (the same tests, ascending)."""

    def __init__(self, library: ctypes.CDLL, prefilter: MagicPrefilter) -> None:
        self._library = library
        self._prefilter = prefilter
        self._test_count = prefilter.test_count
        self._local = threading.local()
        self._handle = int(library.rb_filter_new(self._test_count))
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        lib, handle, prefilter = self._library, self._handle, self._prefilter
        builder = FilterBuilder(lib, handle)
        for index in prefilter.always:
            _checked(lib.rb_always(handle, index), index)
        builder.group(0, prefilter)
        builder.group(1, prefilter)
        for patterns in split_patterns(prefilter.text_set_patterns[0]):  # anchored ones stop early
            builder.match_set(2, patterns)

    def close(self) -> None:
        if self._handle:
            self._library.rb_filter_free(self._handle)
            self._handle = 0

    def candidates(self, data: bytes, text: bool | None) -> list[int]:
        """The tests that may match `data` (`text` as `MagicPrefilter.candidates` takes it)."""
        local = self._local
        out = getattr(local, "candidates", None)
        if out is None:
            out = local.candidates = (ctypes.c_int * self._test_count)()
        found = int(self._library.rb_candidates(self._handle, data, len(data), text is True, out, self._test_count))
        if found < 0:
            return self._prefilter.candidates(data, text)  # RE2 gave up: Python's decide
        if text is None:  # libmagic's text pass reads a converted copy: all its tests stay
            return sorted({*out[:found], *self._prefilter.text.indices})
        return sorted(out[:found])


class NativeMimeFilter(NativePrefilter):
    """`MimeTestFilter.may_print` in one call to the compiled helper; the Python filter decides what it hands back."""

    def __init__(self, library: ctypes.CDLL, python: MimeTestFilter) -> None:
        self._python = python
        super().__init__(library, python.prefilter)
        self._may_print = library.rb_may_print
        self._first_look = library.rb_first_look

    def _build(self) -> None:
        super()._build()
        lib, handle = self._library, self._handle
        builder = FilterBuilder(lib, handle)
        for index in self._python.text_only:
            _checked(lib.rb_text_only(handle, index), index)
        for index, gate in self._python.gates.items():
            _checked(lib.rb_gate(handle, index, builder.gate(gate)), index)

    def gate_may_print(self, test: int, data: bytes) -> bool | None:
        """Whether `test`'s gate may print a MIME type on `data` (None: it reaches a condition Python only models)."""
        answer = int(self._library.rb_gate_may_print(self._handle, test, data, len(data)))
        return None if answer == 2 else bool(answer)

    def first_look(self, data: bytes) -> FirstLook | None:
        """libmagic's text pass, `may_print` and `plain_answer` on a document in one call, as sniff.py
        composes them in Python; None when a test was deferred (the Python side looks again)."""
        answer = self._first_look(self._handle, data, len(data))
        return _LOOKS[answer] if 0 <= answer < len(_LOOKS) else None

    def may_print(self, data: bytes, text: bool) -> bool:
        """`MimeTestFilter.may_print(data, text)`, the same answer."""
        local = self._local
        deferred = getattr(local, "deferred", None)
        if deferred is None:
            deferred = local.deferred = (ctypes.c_int * _DEFERRED_CAPACITY)()
            local.count = ctypes.c_size_t()
        count = local.count
        answer = self._may_print(self._handle, data, len(data), text, deferred, _DEFERRED_CAPACITY, ctypes.byref(count))
        if answer == _NO:
            return False
        if answer == _YES:
            return True
        if answer == _DEFERRED:
            return self._python.gates_may_print(data, deferred[: count.value])
        return self._python.may_print(data, text)


def _built(make: Callable[[ctypes.CDLL], _Built], what: str) -> _Built | None:
    """`make` over the loaded helper, or None (no helper, or checks it cannot hold: logged)."""
    library = native_library()
    if library is None:
        return None
    try:
        return make(library)
    except ValueError as error:
        log.warning("type detection: the compiled %s cannot hold the checks (%s); the Python one runs", what, error)
        return None


@cache
def load_native_filter(python: MimeTestFilter) -> NativeMimeFilter | None:
    """The compiled filter over the same checks as `python` (built once per process), or None without the helper."""
    return _built(lambda library: NativeMimeFilter(library, python), "filter")


@cache
def load_native_prefilter(prefilter: MagicPrefilter) -> NativePrefilter | None:
    """The compiled prefilter over the same checks as `prefilter` (built once per process), or None."""
    return _built(lambda library: NativePrefilter(library, prefilter), "prefilter")
