"""Output comparison for stdio and call tests.

The rules are strict on purpose: lenient fallbacks in APPS-style testers (set and frozenset
comparisons, prefix matches, ``eval`` of printed text) let wrong programs pass and corrupt rewards.

stdio (``outputs_match``):
  1. Split both texts into lines (``\\n``; a ``\\r`` before it counts as whitespace), drop trailing
     whitespace of every line and trailing empty lines.
  2. The number of lines must be equal, and each line must have the same number of
     whitespace-separated tokens.
  3. Tokens must be equal as strings, except when the expected token is a float literal (it has a
     ``.`` or an exponent and parses as a finite float) and the actual token parses as a float:
     then ``|a - e| <= FLOAT_TOL * max(1, |e|)`` (absolute 1e-6 for small values, relative beyond).

call (``values_match``), applied to builtins rebuilt on the trusted side:
  * lists and tuples are interchangeable, compared element by element with equal lengths;
  * dicts need equal key sets and matching values; sets compare as sets (exact elements);
  * floats (on either side) compare with the tolerance above; ints, bools, strings, bytes and
    ``None`` compare with ``==`` (so ``1 == 1.0 == True`` as in Python);
  * anything else (an opaque program object) matches nothing.
  APPS call-based outputs are often wrapped in a one-element list; ``call_result_matches`` accepts
  the bare value as well, as the APPS tester does.
"""

from __future__ import annotations

import itertools
import math
import reprlib
from typing import Any

FLOAT_TOL = 1e-6


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _is_float_literal(token: str) -> bool:
    if not any(c in token for c in ".eE"):
        return False
    try:
        return math.isfinite(float(token))
    except ValueError:
        return False


def _close(actual: float, expected: float) -> bool:
    return abs(actual - expected) <= FLOAT_TOL * max(1.0, abs(expected))


def _tokens_match(actual: str, expected: str) -> bool:
    if actual == expected:
        return True
    if not _is_float_literal(expected):
        return False
    try:
        return _close(float(actual), float(expected))
    except ValueError:
        return False


def outputs_match(actual: str, expected: str) -> bool:
    """Whether a program's standard output matches the expected output (rules in the module doc)."""
    actual_lines, expected_lines = _lines(actual), _lines(expected)
    if len(actual_lines) != len(expected_lines):
        return False
    for got_line, want_line in zip(actual_lines, expected_lines):
        got, want = got_line.split(), want_line.split()
        if len(got) != len(want) or not all(_tokens_match(g, w) for g, w in zip(got, want)):
            return False
    return True


_SCALARS = (bool, int, float, str, bytes, type(None))


def values_match(actual: Any, expected: Any) -> bool:
    """Structural equality of builtin values with float tolerance (rules in the module doc)."""
    if isinstance(expected, float) or isinstance(actual, float):
        if not isinstance(actual, (int, float)) or not isinstance(expected, (int, float)):
            return False
        if math.isnan(expected):
            return math.isnan(actual)
        if math.isinf(expected) or math.isinf(actual):
            return actual == expected
        return _close(float(actual), float(expected))
    if isinstance(expected, (list, tuple)):
        return (isinstance(actual, (list, tuple)) and len(actual) == len(expected)
                and all(values_match(a, e) for a, e in zip(actual, expected)))
    if isinstance(expected, dict):
        return (isinstance(actual, dict) and actual.keys() == expected.keys()
                and all(values_match(actual[k], v) for k, v in expected.items()))
    if isinstance(expected, (set, frozenset)):
        return isinstance(actual, (set, frozenset)) and actual == expected
    if isinstance(expected, _SCALARS) and isinstance(actual, _SCALARS):
        return actual == expected
    return False


def is_plain_data(value: Any, depth: int = 0) -> bool:
    """Builtin scalars and containers of them only (exact types: no subclass, no wire reference),
    so that ``repr`` is a Python literal of the value."""
    if depth > 50:
        return False
    if type(value) in (bool, int, float, str, bytes, complex, type(None)):
        return True
    if type(value) in (list, tuple, set, frozenset):
        return all(is_plain_data(v, depth + 1) for v in value)
    if type(value) is dict:
        return all(is_plain_data(k, depth + 1) and is_plain_data(v, depth + 1) for k, v in value.items())
    return False


def call_result_matches(actual: Any, expected: Any) -> bool:
    """APPS call-based check: the value itself, or the content of a one-element list wrapper."""
    if values_match(actual, expected):
        return True
    return isinstance(expected, list) and len(expected) == 1 and values_match(actual, expected[0])


class _BoundedRepr(reprlib.Repr):
    """``reprlib`` with limits that keep the work small whatever the program returned: a few
    elements per container and levels, the head of long strings and bytes, no digits of huge ints,
    and sets and dicts in their own order (``repr``'s), not sorted first as ``reprlib`` does."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdict = 12
        self.maxset = self.maxfrozenset = self.maxdeque = 12
        self.maxstring = self.maxother = self.maxlong = 200

    def repr_bytes(self, value: bytes, level: int) -> str:
        return self.repr_str(value, level)  # slices then reprs, as for str

    def repr_int(self, value: int, level: int) -> str:
        if value.bit_length() > 4 * self.maxlong:  # more digits than shown: do not compute them
            return f"<int of {value.bit_length()} bits>"
        return super().repr_int(value, level)

    def repr_set(self, value: set, level: int) -> str:
        return self._repr_iterable(value, level, "{", "}", self.maxset) if value else "set()"

    def repr_frozenset(self, value: frozenset, level: int) -> str:
        return self._repr_iterable(value, level, "frozenset({", "})", self.maxfrozenset) if value else "frozenset()"

    def repr_dict(self, value: dict, level: int) -> str:
        if not value or level <= 0:
            return "{...}" if value else "{}"
        pieces = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                  for k, v in itertools.islice(value.items(), self.maxdict)]
        return "{" + ", ".join(pieces + ["..."] * (len(value) > self.maxdict)) + "}"


_bounded = _BoundedRepr()


def bounded_repr(value: Any) -> str:
    """A short ``repr`` for failure reports, its cost bounded by the limits of :class:`_BoundedRepr`
    (not by the value's size). Objects may still raise from their own ``__repr__``: callers catch."""
    return _bounded.repr(value)
