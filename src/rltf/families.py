"""Problem families for the RL learning suite (``experiments/learning_suite.py``): does RL learn on
families the recipe was not built on?

Five families of different kinds, each of parameterised one-task templates in the manner of
:mod:`rltf.synthetic` (which the recipe was tuned on, and which this suite leaves out): ``strings``,
``lists``, ``arith`` (integer arithmetic whose tests include the edge cases: zero, negatives,
rounding), ``stdio`` (whole programs reading standard input) and ``twofn`` (two functions, the
second using the first, both tested). Instances 0-3 of each template are the ``train`` split and
4-5 ``heldout``: new parameters of tasks seen in training. Built in code, so nothing is vendored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rltf.problems import Problem

SPLITS = {"train": range(0, 4), "heldout": range(4, 6)}


@dataclass(frozen=True)
class Task:
    """``text`` and ``code`` are format strings over ``k`` (the instance's parameter); ``cases(k)``
    gives the tests: ``(call, expected)`` pairs for an assert task (``call`` a format string over
    ``k`` too), ``(stdin, stdout)`` pairs for a stdio one."""

    name: str
    params: tuple[Any, ...]
    text: str
    code: str
    cases: Callable[[Any], list[tuple[str, Any]]]
    entry_point: str | None = None

    def problem(self, family: str, index: int) -> Problem:
        k = self.params[index]
        record: dict[str, Any] = {
            "id": f"{family}/{self.name}-{index}", "source": f"family-{family}", "difficulty": "introductory",
            "prompt": self.text.format(k=k), "solutions": [self.code.format(k=k)]}
        if self.entry_point is None:  # a whole program: standard input to standard output
            record["tests"] = {"kind": "stdio", "cases": [{"input": i, "output": o} for i, o in self.cases(k)]}
        else:
            record["entry_point"] = self.entry_point.format(k=k)
            record["tests"] = {"kind": "assert", "setup": "", "cases": [
                f"assert {call.format(k=k)} == {expected!r}" for call, expected in self.cases(k)]}
        return Problem.from_dict(record)


def _calls(fn: str, inputs: tuple[Any, ...], expect: Callable[[Any, Any], Any]) -> Callable[[Any], list]:
    """Assert cases calling ``fn`` (a format string over ``k``) on each input."""
    return lambda k: [(f"{fn}({x!r})", expect(k, x)) for x in inputs]


WORDS = ("hello world", "a bb ccc dddd", "", "sea")
NUMBERS = ([3, 8, 1, 9], [], [5, 5, -2], [10, 0, 7, 2, 6])
INTEGERS = (0, 7, -7, 12, -13, 100)

STRINGS = (
    Task("surround", ("*", "#", "[", "-", "=", "~"), "Write a function surround(s) that returns s with the "
         "character '{k}' added at its start and at its end.", "def surround(s):\n    return '{k}' + s + '{k}'",
         _calls("surround", ("ab", "", "x y"), lambda k, x: k + x + k), "surround"),
    Task("every_kth", (2, 3, 4, 5, 6, 7), "Write a function every_kth(s) that returns every {k}th character of s, "
         "starting with the first.", "def every_kth(s):\n    return s[::{k}]",
         _calls("every_kth", ("abcdefghijklmnop", "", "xy"), lambda k, x: x[::k]), "every_kth"),
    Task("upper_if_long", (3, 5, 1, 8, 4, 6), "Write a function upper_if_long(s) that returns s in upper case if "
         "it has more than {k} characters, and s unchanged otherwise.",
         "def upper_if_long(s):\n    return s.upper() if len(s) > {k} else s",
         _calls("upper_if_long", ("abc", "abcdef", "", "hello world"), lambda k, x: x.upper() if len(x) > k else x),
         "upper_if_long"),
    Task("long_words", (2, 3, 1, 4, 0, 5), "Write a function long_words(text) that returns how many words of text "
         "(separated by spaces) have more than {k} characters.",
         "def long_words(text):\n    return sum(len(w) > {k} for w in text.split())",
         _calls("long_words", WORDS, lambda k, x: sum(len(w) > k for w in x.split())), "long_words"),
    Task("head_reversed", (2, 3, 4, 1, 5, 6), "Write a function head_reversed(s) that returns the first {k} "
         "characters of s in reverse order (all of s reversed if it is shorter).",
         "def head_reversed(s):\n    return s[:{k}][::-1]",
         _calls("head_reversed", ("abcdefg", "", "xy"), lambda k, x: x[:k][::-1]), "head_reversed"),
    Task("replace_spaces", ("_", "-", "+", ".", "*", "0"), "Write a function replace_spaces(s) that returns s "
         "with every space replaced by '{k}'.", "def replace_spaces(s):\n    return s.replace(' ', '{k}')",
         _calls("replace_spaces", WORDS, lambda k, x: x.replace(" ", k)), "replace_spaces"),
    Task("ends_with", ("a", "e", "s", "d", "o", "y"), "Write a function ends_with(s) that returns True if s ends "
         "with the letter '{k}', and False otherwise (also for an empty s).",
         "def ends_with(s):\n    return s.endswith('{k}')",
         _calls("ends_with", ("banana", "tree", "", "kids", "hello", "day"), lambda k, x: x.endswith(k)), "ends_with"),
    Task("stretch", (2, 3, 1, 4, 5, 6), "Write a function stretch(s) that returns s with each character "
         "repeated {k} times.", "def stretch(s):\n    return ''.join(c * {k} for c in s)",
         _calls("stretch", ("abc", "", "z"), lambda k, x: "".join(c * k for c in x)), "stretch"),
)

LISTS = (
    Task("count_greater", (4, 0, 6, -1, 8, 2), "Write a function count_greater(items) that returns how many "
         "numbers in the list items are greater than {k}.",
         "def count_greater(items):\n    return sum(x > {k} for x in items)",
         _calls("count_greater", NUMBERS, lambda k, x: sum(v > k for v in x)), "count_greater"),
    Task("drop_first", (1, 2, 3, 0, 4, 5), "Write a function drop_first(items) that returns the list items "
         "without its first {k} elements (an empty list if it has fewer).", "def drop_first(items):\n    return "
         "items[{k}:]", _calls("drop_first", NUMBERS, lambda k, x: x[k:]), "drop_first"),
    Task("scale", (2, 3, -1, 10, 0, 5), "Write a function scale(items) that returns a new list with every "
         "number of items multiplied by {k}.", "def scale(items):\n    return [x * {k} for x in items]",
         _calls("scale", NUMBERS, lambda k, x: [v * k for v in x]), "scale"),
    Task("multiples", (2, 3, 5, 4, 7, 9), "Write a function multiples(items) that returns the numbers of items "
         "that are divisible by {k}, in their order.", "def multiples(items):\n    return [x for x in items "
         "if x % {k} == 0]", _calls("multiples", NUMBERS, lambda k, x: [v for v in x if v % k == 0]), "multiples"),
    Task("sum_first", (2, 3, 1, 4, 5, 0), "Write a function sum_first(items) that returns the sum of the first "
         "{k} numbers of items (of all of them if there are fewer).",
         "def sum_first(items):\n    return sum(items[:{k}])",
         _calls("sum_first", NUMBERS, lambda k, x: sum(x[:k])), "sum_first"),
    Task("cap", (5, 3, 0, 8, 1, 6), "Write a function cap(items) that returns a new list in which every number "
         "of items greater than {k} is replaced by {k}.", "def cap(items):\n    return [min(x, {k}) for x in items]",
         _calls("cap", NUMBERS, lambda k, x: [min(v, k) for v in x]), "cap"),
    Task("find", (5, 9, 0, 7, -2, 4), "Write a function find(items) that returns the position (counting from 0) "
         "of the first occurrence of {k} in the list items, or -1 if it does not occur.",
         "def find(items):\n    return items.index({k}) if {k} in items else -1",
         _calls("find", NUMBERS, lambda k, x: x.index(k) if k in x else -1), "find"),
    Task("rotate", (1, 2, 3, 4, 5, 6), "Write a function rotate(items) that returns the list items rotated left "
         "by {k} positions (the first element moves to the end, {k} times; an empty list stays empty).",
         "def rotate(items):\n    if not items:\n        return []\n    n = {k} % len(items)\n"
         "    return items[n:] + items[:n]",
         _calls("rotate", NUMBERS, lambda k, x: x[k % len(x):] + x[:k % len(x)] if x else []), "rotate"),
)

ARITH = (
    Task("truncated_div", (2, 3, 4, 5, 10, 7), "Write a function truncated_div(n) that returns n divided by {k}, "
         "rounded toward zero (so -7 divided by 2 gives -3).", "def truncated_div(n):\n    return int(n / {k})",
         _calls("truncated_div", INTEGERS, lambda k, x: int(x / k)), "truncated_div"),
    Task("clamp", (5, 10, 1, 3, 8, 20), "Write a function clamp(n) that returns n limited to the range from "
         "-{k} to {k} (inclusive).", "def clamp(n):\n    return max(-{k}, min({k}, n))",
         _calls("clamp", INTEGERS, lambda k, x: max(-k, min(k, x))), "clamp"),
    Task("round_down", (5, 3, 10, 4, 6, 25), "Write a function round_down(n) that returns the largest multiple "
         "of {k} that is not greater than n (for negative n too).", "def round_down(n):\n    return n // {k} * {k}",
         _calls("round_down", INTEGERS, lambda k, x: x // k * k), "round_down"),
    Task("digits", (10, 2, 8, 16, 3, 5), "Write a function digits(n) that returns how many digits the absolute "
         "value of n has when written in base {k} (0 has one digit).",
         "def digits(n):\n    n = abs(n)\n    count = 1\n    while n >= {k}:\n        n //= {k}\n"
         "        count += 1\n    return count",
         _calls("digits", INTEGERS, lambda k, x: _digits(abs(x), k)), "digits"),
    Task("power_mod", (2, 3, 4, 5, 6, 7), "Write a function power_mod(n) that returns n to the power {k}, "
         "modulo 1000 (a result between 0 and 999, for negative n too).",
         "def power_mod(n):\n    return pow(n, {k}, 1000)",
         _calls("power_mod", INTEGERS, lambda k, x: pow(x, k, 1000)), "power_mod"),
    Task("nonzero_multiple", (7, 2, 3, 4, 5, 6), "Write a function nonzero_multiple(n) that returns True if n "
         "is a multiple of {k} other than 0, and False otherwise.",
         "def nonzero_multiple(n):\n    return n != 0 and n % {k} == 0",
         _calls("nonzero_multiple", INTEGERS, lambda k, x: x != 0 and x % k == 0), "nonzero_multiple"),
    Task("distance", (4, 0, -3, 10, 7, -8), "Write a function distance(n) that returns how far n is from {k} "
         "(the absolute difference).", "def distance(n):\n    return abs(n - {k})",
         _calls("distance", INTEGERS, lambda k, x: abs(x - k)), "distance"),
    Task("signed", (1, 5, 2, 10, 3, 7), "Write a function signed(n) that returns {k} if n is positive, -{k} if "
         "n is negative and 0 if n is 0.", "def signed(n):\n    return {k} if n > 0 else -{k} if n < 0 else 0",
         _calls("signed", INTEGERS, lambda k, x: k if x > 0 else -k if x < 0 else 0), "signed"),
)


def _digits(n: int, base: int) -> int:
    count = 1
    while n >= base:
        n //= base
        count += 1
    return count


def _io(inputs: tuple[str, ...], answer: Callable[[Any, str], str]) -> Callable[[Any], list[tuple[str, str]]]:
    """Stdio cases: each input line(s) and the expected output, a newline at the end of each."""
    return lambda k: [(x, answer(k, x)) for x in inputs]


STDIO = (
    Task("add", (1, 5, 10, 3, 7, 100), "Write a program that reads an integer n from standard input and prints "
         "n + {k}.", "n = int(input())\nprint(n + {k})", _io(("4\n", "-10\n", "0\n"), lambda k, x: f"{int(x) + k}\n")),
    Task("repeat_line", (2, 3, 1, 4, 5, 6), "Write a program that reads one line from standard input and prints "
         "it {k} times, each time on its own line.", "line = input()\nfor _ in range({k}):\n    print(line)",
         _io(("hello\n", "a b\n"), lambda k, x: x * k)),
    Task("max_plus", (0, 1, 10, -5, 3, 7), "Write a program that reads a line of integers separated by spaces "
         "from standard input and prints the largest of them plus {k}.",
         "print(max(map(int, input().split())) + {k})",
         _io(("3 9 2\n", "-4 -1\n", "5\n"), lambda k, x: f"{max(map(int, x.split())) + k}\n")),
    Task("count_char", ("a", "e", "o", "s", "t", "l"), "Write a program that reads one line from standard input "
         "and prints how many times the letter '{k}' appears in it.", "print(input().count('{k}'))",
         _io(("banana\n", "sea otters\n", "little\n"), lambda k, x: f"{x.count(k)}\n")),
    Task("product", (1, 2, 3, -1, 10, 4), "Write a program that reads two integers separated by a space from "
         "standard input and prints their product multiplied by {k}.",
         "a, b = map(int, input().split())\nprint(a * b * {k})",
         _io(("3 4\n", "-2 5\n", "0 9\n"), lambda k, x: f"{int(x.split()[0]) * int(x.split()[1]) * k}\n")),
    Task("long_lines", (2, 3, 4, 1, 5, 6), "Write a program that reads an integer n and then n lines from standard "
         "input, and prints, in order, the lines that are longer than {k} characters.",
         "n = int(input())\nfor _ in range(n):\n    line = input()\n    if len(line) > {k}:\n        print(line)",
         _io(("3\nab\nabcd\nabcdefg\n", "1\nxyz\n"),
             lambda k, x: "".join(line + "\n" for line in x.splitlines()[1:] if len(line) > k))),
)

TWOFN = (
    Task("add_all", (1, 2, 5, 10, -1, 3), "Write a function add_k(n) that returns n + {k}, and a function "
         "add_all(items) that returns a new list with add_k applied to every number of items.",
         "def add_k(n):\n    return n + {k}\n\n\ndef add_all(items):\n    return [add_k(x) for x in items]",
         lambda k: [("add_k(3)", 3 + k), ("add_all([1, 2])", [1 + k, 2 + k]), ("add_all([])", [])], "add_all"),
    Task("count_small", (3, 5, 0, 10, 2, 7), "Write a function is_small(n) that returns True if n is less than "
         "{k}, and a function count_small(items) that returns how many numbers of items are small by is_small.",
         "def is_small(n):\n    return n < {k}\n\n\n"
         "def count_small(items):\n    return sum(is_small(x) for x in items)",
         lambda k: [("is_small(4)", k > 4), ("count_small([1, 4, 8, 12])", sum(x < k for x in [1, 4, 8, 12])),
                    ("count_small([])", 0)], "count_small"),
    Task("shout_all", (1, 2, 3, 4, 5, 6), "Write a function shout(s) that returns s in upper case followed by "
         "{k} exclamation marks, and a function shout_all(words) that returns the list of every word shouted.",
         "def shout(s):\n    return s.upper() + '!' * {k}\n\n\n"
         "def shout_all(words):\n    return [shout(w) for w in words]",
         lambda k: [("shout('hi')", "HI" + "!" * k), ("shout_all(['a', 'bc'])", ["A" + "!" * k, "BC" + "!" * k])],
         "shout_all"),
    Task("sum_squares_plus", (1, 2, 0, 5, 3, 10), "Write a function square_plus(n) that returns n squared plus "
         "{k}, and a function total(items) that returns the sum of square_plus over the numbers of items.",
         "def square_plus(n):\n    return n * n + {k}\n\n\n"
         "def total(items):\n    return sum(square_plus(x) for x in items)",
         lambda k: [("square_plus(3)", 9 + k), ("total([1, 2])", 5 + 2 * k), ("total([])", 0)], "total"),
    Task("clean_words", ("a", "e", "o", "s", "t", "i"), "Write a function clean(s) that returns s without any "
         "letter '{k}', and a function clean_words(words) that returns the list of every word cleaned.",
         "def clean(s):\n    return s.replace('{k}', '')\n\n\n"
         "def clean_words(words):\n    return [clean(w) for w in words]",
         lambda k: [("clean('banana')", "banana".replace(k, "")),
                    ("clean_words(['tree', 'sit'])", ["tree".replace(k, ""), "sit".replace(k, "")])], "clean_words"),
    Task("last_digit", (0, 1, 2, 3, 5, 7), "Write a function ends_in(n) that returns True if the last decimal "
         "digit of the non-negative integer n is {k}, and a function keep(items) that returns the numbers of items "
         "for which ends_in is True, in their order.",
         "def ends_in(n):\n    return n % 10 == {k}\n\n\ndef keep(items):\n    return [x for x in items if ends_in(x)]",
         lambda k: [("ends_in(13)", k == 13 % 10), ("keep([10, 21, 32, 43, 55, 67])",
                                                    [x for x in [10, 21, 32, 43, 55, 67] if x % 10 == k])], "keep"),
)

FAMILIES: dict[str, tuple[Task, ...]] = {"strings": STRINGS, "lists": LISTS, "arith": ARITH, "stdio": STDIO,
                                         "twofn": TWOFN}


def load_family(name: str, split: str | None = None) -> list[Problem]:
    """Every task's instances of ``split`` (``train``: instances 0-3, ``heldout``: 4-5; None: all)."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r} (one of {', '.join(FAMILIES)})")
    indices = range(6) if split is None else SPLITS[split]
    return [task.problem(name, i) for i in indices for task in FAMILIES[name]]
