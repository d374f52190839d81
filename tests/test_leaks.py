"""The leak finder: each reason on hand-made twins, no pair for different tasks, and the vendored MBPP file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rltf.cli import app
from rltf.datasets import LEAKS_FILE
from rltf.leaks import Leak, code_tokens, find_dataset_leaks, find_leaks, leaks_json, leaks_table, statement_words
from rltf.problems import Problem


def problem(pid: str, prompt: str, entry_point: str, code: str, cases: list[str]) -> Problem:
    return Problem.from_dict({"id": pid, "source": "t", "prompt": prompt, "entry_point": entry_point,
                              "solutions": [code], "tests": {"kind": "assert", "setup": "", "cases": cases}})


def reasons(train: Problem, held: Problem) -> tuple[str, ...] | None:
    leaks = find_leaks([train], {"test": [held]})
    assert len(leaks) <= 1
    return leaks[0].reasons if leaks else None


SUM_LIST = "def total(xs):\n    s = 0\n    for x in xs:\n        s += x\n    return s\n"
REVERSE = "def rev(s):\n    return s[::-1]\n"


def test_same_function_needs_a_like_statement():
    train = problem("t/1", "Write a function to find the item with maximum occurrences in a given list.",
                    "max_occurrences", "def max_occurrences(xs):\n    return max(xs, key=xs.count)\n",
                    ["assert max_occurrences([1, 2, 2]) == 2"])
    held = problem("h/1", "Write a function to find the item with maximum frequency in a given list.",
                   "Max_Occurrences", "from collections import Counter\ndef Max_Occurrences(nums):\n"
                   "    counts = Counter(nums)\n    return counts.most_common(1)[0][0]\n",
                   ["assert Max_Occurrences([3, 3, 1, 4]) == 3"])
    assert reasons(train, held) == ("same_function",)
    unrelated = problem("h/2", "Write a function to check whether a string is a palindrome.", "max_occurrences",
                        "def max_occurrences(s):\n    return s == s[::-1]\n", ["assert max_occurrences('aba')"])
    assert reasons(train, unrelated) is None  # a shared name alone is no evidence


def test_same_asserts():
    cases = ["assert int(lobb(5, 3)) == 35", "assert int(lobb(4, 2)) == 20"]
    lobb = "from math import comb\ndef lobb(n, m):\n    return (2 * m + 1) * comb(2 * n, m + n) // (m + n + 1)\n"
    train = problem("t/1", "Write a function to find the ln, m lobb number.", "lobb", lobb, cases)
    held = problem("h/1", "Compute a ballot-like count for the two arguments.", "count_ways",
                   "def count_ways(a, b):\n    table = {(5, 3): 35, (4, 2): 20}\n    return table[(a, b)]\n",
                   [case.replace("lobb", "count_ways") for case in cases])
    assert reasons(train, held) == ("same_asserts",)


def test_same_io_whatever_the_spelling():
    train = problem("t/1", "Write a function to reverse a string.", "rev", REVERSE,
                    ["assert rev('hello') == 'olleh'", "assert rev('abcd') == 'dcba'"])
    held = problem("h/1", "Mirror the characters of the text.", "mirror",
                   "def mirror(text):\n    out = ''\n    for ch in text:\n        out = ch + out\n    return out\n",
                   ['assert "olleh" == mirror("hello")', 'assert mirror("abcd")=="dcba"'])
    assert reasons(train, held) == ("same_io",)


def test_same_code_after_renaming():
    train = problem("t/1", "Write a function to add up a list of numbers.", "total", SUM_LIST,
                    ["assert total([1, 2, 3]) == 6"])
    held = problem("h/1", "Accumulate the values of an iterable.", "accumulate_values",
                   'def accumulate_values(values):\n    """Docstrings do not count."""\n    acc = 0\n'
                   "    for v in values: acc += v\n    return acc\n", ["assert accumulate_values([4, 5]) == 9"])
    assert code_tokens(train.solutions[0]) == code_tokens(held.solutions[0])
    assert reasons(train, held) == ("same_code",)


def test_same_statement_ignores_boilerplate_identifiers_and_numbers():
    train = problem("t/1", "Write a python function to check whether the given month number contains 30 days "
                    "or not.", "has_30", "def has_30(m):\n    return m in (4, 6, 9, 11)\n", ["assert has_30(6)"])
    held = problem("h/1", "Check whether check_monthnumb_number's month number contains 31 days or not using "
                   "regex.\nYour code should pass these tests:\nassert check_monthnumb_number(5)",
                   "check_monthnumb_number", "def check_monthnumb_number(n):\n    if n == 2:\n        return False\n"
                   "    return n not in [4, 6, 9, 11]\n", ["assert check_monthnumb_number(5) == True"])
    assert statement_words(train.prompt) == statement_words(held.prompt)
    assert reasons(train, held) == ("same_statement",)


def test_one_word_one_token_variants_are_same_statement():
    train = problem("t/1", "Write a function to find the sum of the positive numbers of a given list.", "pos_sum",
                    "def pos_sum(nums):\n    return sum(filter(lambda x: x > 0, nums))\n",
                    ["assert pos_sum([1, -2, 3]) == 4"])
    held = problem("h/1", "Write a function to find the sum of the negative numbers of a given list.", "neg_sum",
                   "def neg_sum(nums):\n    return sum(filter(lambda x: x < 0, nums))\n",
                   ["assert neg_sum([1, -2, 3]) == -2"])
    leak = find_leaks([train], {"validation": [held]})[0]
    assert (leak.reasons, leak.split) == (("same_statement",), "validation")
    assert leak.statement_similarity >= 0.8 and 0.85 <= leak.code_similarity < 0.99


def test_different_tasks_are_not_paired():
    """A generic name, trivial shared cases and one template with another regex: all unrelated tasks share them."""
    shared = ["assert check(2) == True", "assert check('zz') == 'zz'", "assert check(2) == 1", "assert check(12) == 3"]
    template = "import re\ndef check(text):\n    if re.search({!r}, text):\n        return 'Yes'\n    return 'No'\n"
    train = problem("t/1", "Write a function that matches a word containing 'z'.", "check",
                    template.format(r"\w*z.\w*"), shared)
    held = problem("h/1", "Write a function to check whether a string starts with a vowel.", "check",
                   template.format("^[aeiou]"), shared)
    assert reasons(train, held) is None
    bare = [Problem.from_dict({"id": f"b/{i}", "prompt": "", "tests": {"kind": "stdio", "cases": []}}) for i in (1, 2)]
    assert find_leaks(bare[:1], {"test": bare[1:]}) == []  # nothing to compare is not a match


def test_rendering():
    leak = Leak("mbpp/1", "mbpp/2", "test", ("same_code",), 0.25, 1.0, 0, 0)
    records = json.loads(leaks_json([leak, leak]))
    assert records[0] == {"train": "mbpp/1", "held_out": "mbpp/2", "split": "test", "reasons": ["same_code"],
                          "statement_similarity": 0.25, "code_similarity": 1.0, "shared_asserts": 0, "shared_io": 0}
    lines = leaks_table([leak]).splitlines()
    assert len(lines) == 3 and "mbpp/1" in lines[1] and lines[1].endswith("same_code")
    with pytest.raises(ValueError, match="no leak rule"):
        find_dataset_leaks("humaneval")


# Pairs the old near-verbatim rule found; 848/432 (area / median of a trapezium) is its false positive.
OLD_PAIRS = {(602, 217), (618, 282), (624, 477), (625, 591), (629, 554), (634, 271), (647, 15), (655, 212),
             (657, 479), (658, 130), (658, 362), (682, 282), (690, 503), (697, 258), (699, 595), (704, 248),
             (716, 17), (719, 434), (729, 282), (731, 497), (733, 316), (743, 328), (752, 529), (770, 549),
             (777, 42), (784, 594), (784, 38), (793, 195), (795, 585), (807, 221), (821, 87), (824, 412),
             (831, 564), (837, 420), (870, 133), (872, 216), (881, 594), (881, 38), (887, 600), (893, 460),
             (922, 415), (947, 90), (952, 402), (964, 79)}


def test_vendored_mbpp_file_is_what_the_rule_gives():
    leaks = find_dataset_leaks("mbpp")
    assert LEAKS_FILE.read_text() == leaks_json(leaks)  # scripts/find_mbpp_leaks.py rewrites it
    pairs = {(int(leak.train.split("/")[1]), int(leak.held_out.split("/")[1])) for leak in leaks}
    assert {(841, 296), (608, 67), (673, 439)} <= pairs  # reworded twins the old rule missed
    assert pairs >= OLD_PAIRS and (848, 432) not in pairs
    assert {leak.split for leak in leaks} == {"test", "validation"}
    assert all(601 <= train <= 974 and 11 <= held <= 600 for train, held in pairs)
    sanitized = find_dataset_leaks("mbpp-sanitized")
    assert sanitized and set(sanitized) < set(leaks)


def test_data_leaks_command_prints_the_vendored_pairs():
    runner = CliRunner()
    as_json = runner.invoke(app, ["data", "leaks", "--dataset", "mbpp", "--json"])
    assert as_json.exit_code == 0 and as_json.output == LEAKS_FILE.read_text()
    table = runner.invoke(app, ["data", "leaks"])
    assert table.exit_code == 0
    assert any(line.startswith("mbpp/841") and "mbpp/296" in line for line in table.output.splitlines())
    assert runner.invoke(app, ["data", "leaks", "--dataset", "humaneval"]).exit_code == 2
