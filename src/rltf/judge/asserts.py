"""Assert-style test code rewritten so that a failing ``assert`` says what it compared.

Every ``assert TEST, MSG`` of the (trusted) test code becomes ``if not TEST': raise failed(k, MSG)``,
where ``TEST'`` computes exactly what ``TEST`` did (same operands, same order, the same operator or
call) but first hands the compared values to an :class:`AssertRecorder` on the trusted side:

* ``assert A == B`` (any single comparison operator): the side with a call is the actual value,
  the other the expected one (``actual`` left when both or neither have a call);
* ``assert isclose(A, B, ...)``: a test-side function whose name says ``close`` or ``equal``
  (``math.isclose``, MBPP+'s ``_close``) with two positional arguments: ``A`` actual, ``B`` expected;
* ``assert f(x)`` or ``assert not f(x)``: the call's value is the actual one, nothing expected.

Other asserts (chained comparisons, ``and``...) are kept as they were and report their text alone.
The raised exception is an ``AssertionError`` like the statement's, so test code that catches it
behaves the same; the recorder knows which assert raised it by identity.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rltf.judge.verdict import FailureInfo

COMPARE, PAIR, VALUE, FAILED = "__rltf_compare__", "__rltf_pair__", "__rltf_value__", "__rltf_failed__"
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtE": operator.le, "Gt": operator.gt,
    "GtE": operator.ge, "Is": operator.is_, "IsNot": operator.is_not,
    "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
}
_COMPARATOR_NAME = re.compile("close|equal", re.IGNORECASE)
_NOTHING = object()


@dataclass(frozen=True)
class AssertSite:
    text: str
    """The assert statement's source."""
    swapped: bool = False
    """The compared values are (expected, actual), not (actual, expected)."""


def _has_call(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def _callee_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _helper(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(ast.Name(name, ast.Load()), list(args), [])


class _Rewriter(ast.NodeTransformer):
    def __init__(self, source: str, sites: list[AssertSite], program_names: set[str]) -> None:
        self.source = source
        self.sites = sites
        self.program_names = program_names

    def visit_Assert(self, node: ast.Assert) -> ast.If:
        site = ast.Constant(len(self.sites))
        test, swapped = self._recording(node.test, site)
        self.sites.append(AssertSite(ast.get_source_segment(self.source, node) or ast.unparse(node), swapped))
        raise_ = ast.Raise(_helper(FAILED, site, *([node.msg] if node.msg is not None else [])), None)
        return ast.copy_location(ast.If(ast.UnaryOp(ast.Not(), test), [raise_], []), node)

    def _recording(self, test: ast.expr, site: ast.Constant) -> tuple[ast.expr, bool]:
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, right = test.left, test.comparators[0]
            call = _helper(COMPARE, site, ast.Constant(type(test.ops[0]).__name__), left, right)
            return call, _has_call(right) and not _has_call(left)
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and isinstance(test.operand, ast.Call):
            return ast.UnaryOp(ast.Not(), _helper(VALUE, site, test.operand)), False
        if isinstance(test, ast.Call):
            name = _callee_name(test)
            first_two = test.args[:2]
            if (len(first_two) == 2 and not any(isinstance(a, ast.Starred) for a in first_two)
                    and name not in self.program_names and _COMPARATOR_NAME.search(name)):
                args = [ast.Starred(_helper(PAIR, site, *first_two), ast.Load()), *test.args[2:]]
                return ast.Call(test.func, args, test.keywords), False
            return _helper(VALUE, site, test), False
        return test, False


def rewrite(source: str, filename: str, sites: list[AssertSite], program_names: set[str]) -> Any:
    """``source`` compiled with its asserts recording into ``sites`` (appended, numbered across calls)."""
    tree = _Rewriter(source, sites, program_names).visit(ast.parse(source))
    return compile(ast.fix_missing_locations(tree), filename, "exec")


class AssertRecorder:
    """The rewritten asserts' helpers for one job; put in the test namespace by :meth:`install`."""

    def __init__(self, sites: tuple[AssertSite, ...]) -> None:
        self.sites = sites
        self.values: dict[int, tuple[Any, Any]] = {}
        self.raised: tuple[AssertionError, int] | None = None

    def install(self, namespace: dict[str, Any]) -> None:
        namespace.update({COMPARE: self._compare, PAIR: self._pair, VALUE: self._value, FAILED: self._failed})

    def _compare(self, site: int, op: str, left: Any, right: Any) -> Any:
        self.values[site] = (left, right)
        return _OPERATORS[op](left, right)

    def _pair(self, site: int, first: Any, second: Any) -> tuple[Any, Any]:
        self.values[site] = (first, second)
        return first, second

    def _value(self, site: int, value: Any) -> Any:
        self.values[site] = (value, _NOTHING)
        return value

    def _failed(self, site: int, *message: Any) -> AssertionError:
        exc = AssertionError(*message)
        self.raised = (exc, site)
        return exc

    def failure(self, exc: AssertionError, case_source: str, describe: Callable[[Any], str]) -> FailureInfo:
        """The failure behind ``exc``: its assert and values, or the case's source when ``exc`` was
        not raised by a rewritten assert (``raise AssertionError`` in the test code)."""
        if self.raised is None or self.raised[0] is not exc:
            return FailureInfo(case_source)
        site = self.sites[self.raised[1]]
        values = self.values.get(self.raised[1])
        if values is None:
            return FailureInfo(site.text)
        actual, expected = values[::-1] if site.swapped else values
        return FailureInfo(site.text, None if expected is _NOTHING else describe(expected), describe(actual))
