"""A synthetic problem family where learning is easy: RLTF's learning test (``experiments/learning_test.py``).

Each of :data:`TEMPLATES` is a one-line task with a parameter ("return n squared plus 3",
"repeat s 3 times"); instance ``i`` of a template takes the ``i``-th of its parameter values. Instances 0-3 of
every template are the ``train`` split and 4-5 the ``heldout`` split, so held-out problems are new
instances of tasks seen in training: an RL loop that works must raise their pass rate, a broken
one cannot. The records are the canonical ones (assert tests, a reference solution each), built in
code, so nothing is vendored and nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rltf.problems import Problem

SPLITS = {"train": range(0, 4), "heldout": range(4, 6)}
INSTANCES = 6


@dataclass(frozen=True)
class Template:
    """``text``, ``code`` and each of ``cases`` are format strings over ``k`` (the parameter) and
    ``f`` (the function name); ``expect(k, x)`` is the right answer for test input ``x``."""

    name: str
    params: tuple[Any, ...]
    text: str
    code: str
    inputs: tuple[Any, ...]
    expect: Callable[[Any, Any], Any]
    fn: str

    def problem(self, index: int) -> Problem:
        k = self.params[index]
        fn = self.fn.format(k=k)
        if self.inputs:
            cases = [f"assert {fn}({x!r}) == {self.expect(k, x)!r}" for x in self.inputs]
        else:
            cases = [f"assert {fn}() == {self.expect(k, None)!r}"]
        return Problem.from_dict({
            "id": f"synthetic/{self.name}-{index}", "source": "synthetic", "entry_point": fn,
            "prompt": self.text.format(k=k, f=fn), "solutions": [self.code.format(k=k, f=fn)],
            "tests": {"kind": "assert", "setup": "", "cases": cases}, "difficulty": "introductory",
        })


TEMPLATES = (
    Template("constant", (7, 42, 13, 100, 5, 64), "Write a function {f}() that returns the number {k}.",
             "def {f}():\n    return {k}", (), lambda k, _: k, "get_number"),
    Template("greater", (0, 10, 5, 100, 3, 50),
             "Write a function {f}(n) that returns True if n is greater than {k}, and False otherwise.",
             "def {f}(n):\n    return n > {k}", (-1, 4, 8, 20, 200), lambda k, x: x > k, "greater_than_{k}"),
    Template("repeat", (2, 3, 4, 5, 6, 7), "Write a function {f}(s) that returns the string s repeated {k} times.",
             "def {f}(s):\n    return s * {k}", ("ab", "x"), lambda k, x: x * k, "repeat_{k}"),
    Template("count", ("a", "e", "o", "s", "t", "i"),
             "Write a function {f}(text) that returns how many times the letter '{k}' appears in text.",
             "def {f}(text):\n    return text.count('{k}')", ("banana", "tree", "sassafras", "potato"),
             lambda k, x: x.count(k), "count_{k}"),
    Template("remove", ("a", "e", "o", "s", "t", "i"),
             "Write a function {f}(text) that returns text with every letter '{k}' removed.",
             "def {f}(text):\n    return text.replace('{k}', '')", ("banana", "tree", "sassafras", "potato"),
             lambda k, x: x.replace(k, ""), "remove_{k}"),
    Template("starts", ("a", "b", "p", "s", "t", "m"),
             "Write a function {f}(text) that returns True if text starts with the letter '{k}', and False otherwise.",
             "def {f}(text):\n    return text.startswith('{k}')", ("apple", "banana", "pear", "sun", "tea", "moon"),
             lambda k, x: x.startswith(k), "starts_with_{k}"),
    Template("square_plus", (1, 2, 3, 5, 10, 4), "Write a function {f}(n) that returns n squared plus {k}.",
             "def {f}(n):\n    return n * n + {k}", (0, 3, -2), lambda k, x: x * x + k, "square_plus_{k}"),
    Template("sum_plus", (1, 5, 10, 2, 7, 3), "Write a function {f}(items) that returns the sum of the list items "
             "plus {k}.", "def {f}(items):\n    return sum(items) + {k}", ([1, 2, 3], [], [10, -4]),
             lambda k, x: sum(x) + k, "sum_plus_{k}"),
    Template("join", ("-", "+", ",", ";", "_", "/"),
             "Write a function {f}(words) that returns the strings of the list words joined by the character '{k}'.",
             "def {f}(words):\n    return '{k}'.join(words)", (["a", "b", "c"], ["hi"], ["x", "yz"]),
             lambda k, x: k.join(x), "join_words"),
    Template("index", (0, 1, 2, 3, 4, 5), "Write a function {f}(items) that returns the element at position {k} "
             "of the list items (positions count from 0).", "def {f}(items):\n    return items[{k}]",
             ([10, 11, 12, 13, 14, 15], [5, 4, 3, 2, 1, 0]), lambda k, x: x[k], "element_{k}"),
    Template("floor_div", (2, 3, 4, 5, 10, 7), "Write a function {f}(n) that returns n divided by {k}, rounded down "
             "to a whole number.", "def {f}(n):\n    return n // {k}", (0, 9, 21, 100), lambda k, x: x // k,
             "divide_by_{k}"),
)


def load_synthetic(split: str | None = None, path: Any = None) -> list[Problem]:
    """Every template's instances of ``split`` (``train``: 44, ``heldout``: 22; None: all 66)."""
    del path  # built in code; the loader signature is :mod:`rltf.datasets`'
    indices = range(INSTANCES) if split is None else SPLITS[split]
    return [template.problem(i) for i in indices for template in TEMPLATES]
