"""Output comparison rules and the value encoding that keeps fake equality out of the judge."""

import math

import pytest

from rltf.judge import wire
from rltf.judge.compare import bounded_repr, call_result_matches, outputs_match, values_match


@pytest.mark.parametrize(
    ("actual", "expected", "match"),
    [
        ("3\n", "3\n", True),
        ("3", "3\n", True),  # trailing newline
        ("3   \n\n\n", "3\n", True),  # trailing whitespace and empty lines
        ("1 2\r\n3\r\n", "1 2\n3\n", True),  # CRLF
        ("1  2\n", "1 2\n", True),  # tokens, not spacing
        ("1 2\n", "1 2 3\n", False),  # token count
        ("YES\n", "YES\nNO\nYES\n", False),  # a prefix is not enough
        ("YES\nNO\nYES\nNO\n", "YES\nNO\nYES\n", False),  # nor extra lines
        ("NO\nYES\nYES\n", "YES\nNO\nYES\n", False),  # no set comparison (APPS check5)
        ("1 2 3\n", "3 2 1\n", False),
        ("yes\n", "YES\n", False),  # case matters
        ("\n3\n", "3\n", False),  # leading empty line is a line
        ("0.3333333\n", "0.333333333\n", True),  # float within 1e-6
        ("0.334\n", "0.333333333\n", False),
        ("1000000.5\n", "1000000.4999999\n", True),  # relative beyond 1
        ("5\n", "5.0\n", True),  # expected float literal: numeric comparison
        ("5.0\n", "5\n", False),  # expected integer: exact token
        ("050\n", "50\n", False),
        ("1e-7\n", "0.0\n", True),
        ("nan\n", "1.5\n", False),
        ("abc\n", "1.5\n", False),
    ],
)
def test_outputs_match(actual, expected, match):
    assert outputs_match(actual, expected) is match


@pytest.mark.parametrize(
    ("actual", "expected", "match"),
    [
        ([1, 2], (1, 2), True),  # list/tuple equivalence
        ((1, [2, (3,)]), [1, (2, [3])], True),
        ([1, 2], [1, 2, 3], False),
        (1.0000001, 1.0, True),
        (1.1, 1.0, False),
        (2, 2.0, True),
        (True, 1, True),  # Python's own numeric equality
        ("1", 1, False),
        ({"a": [1.0]}, {"a": (1.0000000001,)}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({1, 2}, {2, 1}, True),
        ([1, 2], {1, 2}, False),  # no set conversion of lists
        (None, None, True),
        (float("nan"), float("nan"), True),
        (math.inf, math.inf, True),
        (object(), 1, False),
    ],
)
def test_values_match(actual, expected, match):
    assert values_match(actual, expected) is match


def test_call_result_unwraps_apps_single_element_list():
    assert call_result_matches(False, [False])
    assert call_result_matches([1, 2], [[1, 2]])
    assert call_result_matches([1, 2], [1, 2])
    assert not call_result_matches(True, [False])
    assert not call_result_matches(1, [1, 1])


class LiesEqual(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class FakeList(list):
    def __iter__(self):
        return iter([1, 2, 3])


class LiesAboutClass:
    @property
    def __class__(self):
        return int


def test_encoding_reads_builtin_subclasses_through_their_base():
    assert wire.decode(wire.encode(LiesEqual(3))) == 3
    assert type(wire.decode(wire.encode(LiesEqual(3)))) is int
    assert wire.decode(wire.encode(FakeList([7]))) == [7]
    refs: dict = {}
    encoded = wire.encode(LiesAboutClass(), refs)
    assert encoded[0] == "R" and refs


def test_encoding_round_trips_builtins():
    value = {"a": (1, 2.5, [None, True]), 3: {4, 5}, "b": b"\x00\xff", "c": frozenset({"x"}), "n": -2**80,
             "f": float("inf"), "z": 1 + 2j}
    assert wire.decode(wire.encode(value)) == value


def test_decoding_rejects_unknown_tags():
    with pytest.raises(wire.WireError):
        wire.decode(["Q", 1])


def test_builtin_functions_and_classes_travel_by_name():
    assert wire.decode(wire.encode([int, len, ValueError])) == [int, len, ValueError]
    with pytest.raises(wire.WireError):
        wire.decode(["N", "__import__"])


def test_bounded_repr_costs_little_whatever_the_value():
    assert bounded_repr((1, "a", None)) == "(1, 'a', None)"
    assert bounded_repr(10 ** 5000) == "<int of 16610 bits>"
    assert len(bounded_repr(b"\x00" * 10**7)) <= 210 and len(bounded_repr("z" * 10**7)) <= 210
    assert bounded_repr(list(range(10**6))).endswith(", 11, ...]")
    assert bounded_repr({3: {1}, 1: frozenset()}) == "{3: {1}, 1: frozenset()}"  # repr's order, not sorted
    cycle: list = []
    cycle.append(cycle)
    assert bounded_repr(cycle) == "[[[[...]]]]"
