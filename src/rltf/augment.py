"""Test augmentation: more input/output tests for ``assert`` problems, EvalPlus-style (``rltf augment``).

A benchmark's few asserts let wrong programs pass, which corrupts the reward and the adaptive pass
ratio. For every problem whose asserts have the form ``assert ENTRY(ARGS) == EXPECTED`` with
literal arguments, the argument tuples are mutated by type (:func:`mutate`): ints and floats nudged
within bounds, strings, lists, tuples and sets grown, shrunk and permuted, dicts' values mutated and
keys dropped, nested structures mutated element by element so they stay well-formed. A mutated
input must keep the relations all original inputs keep (:func:`infer_contract`: signs, orders
between arguments, lengths, non-negative items, sorted sequences), or it is not a candidate. The expected
output of each new input comes from the problem's reference solution run in the judge's sandbox
(:meth:`rltf.judge.Judge.call_outputs`), twice: inputs where the reference raises, times out,
returns anything but plain builtin data, or answers differently the second time are dropped. Of
the rest, up to ``max_new`` are kept per problem: first one input for each output that neither the
original tests nor an earlier pick shows (distinct behaviour, first cut), then, to fill the rest,
inputs whose output is already known (a predicate's True and False are soon all shown), in the
order they were drawn.

The new asserts go to ``extra_tests`` (same kind, same setup), so the original tests and their pass
ratio stay as the benchmark defines them; the judge's ``tests: original | extra | all`` chooses.
A float output is compared with ``math.isclose`` (rel 1e-6, abs 1e-9); a container holding floats
is not kept (exact equality of computed floats would fail correct programs).
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rltf.judge import Judge
from rltf.problems import Problem

INT_BOUND = 10_000
MAX_LEN = 64
ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789"
ISCLOSE_SETUP = "import math as _rltf_math\n"
DRAW_ATTEMPTS = 5
"""Mutations tried per wanted candidate: those outside the inputs' contract are not candidates."""


@dataclass
class AugmentStats:
    problems: int = 0
    augmented: int = 0
    added: list[int] = field(default_factory=list)
    candidates: int = 0
    new_outputs: int = 0
    """Added tests whose expected output no original test and no other added test shows."""
    dropped: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        added = sorted(self.added)
        return {"problems": self.problems, "augmented": self.augmented, "candidates": self.candidates,
                "tests_added": sum(added), "tests_added_per_problem": sum(added) / len(added) if added else 0.0,
                "tests_added_median": added[len(added) // 2] if added else 0, "new_outputs": self.new_outputs,
                "dropped": dict(self.dropped)}


# --------------------------------------------------------------------------- mutation


def mutate(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """One type-aware mutation of a test input; containers may instead mutate one element."""
    kind = type(value)
    if kind is bool:
        return not value
    if kind is int:
        step = rng.choice([1, -1, 2, -2, 10, -10, value, -2 * value, rng.randint(-100, 100)])
        return max(-INT_BOUND, min(INT_BOUND, value + step if step != value else 2 * value))
    if kind is float:
        return rng.choice([value * (1 + rng.uniform(-0.5, 0.5)), value + 1.0, -value, round(value, 1), value / 2])
    if kind is str:
        return "".join(_mutate_sequence(list(value), rng, lambda: rng.choice(value or ALPHABET),
                                        lambda _: rng.choice(ALPHABET)))
    if kind in (list, tuple):
        return kind(_mutate_sequence(list(value), rng, lambda: mutate(rng.choice(value), rng, depth + 1) if value
                                     else 0, lambda item: mutate(item, rng, depth + 1) if depth < 4 else item))
    if kind in (set, frozenset):
        items = list(value)
        if items and rng.random() < 0.5:
            items.pop(rng.randrange(len(items)))
        elif items:
            items.append(mutate(rng.choice(items), rng, depth + 1))
        try:
            return kind(items)
        except TypeError:  # an unhashable mutation
            return value
    if kind is dict:
        items = list(value.items())
        if not items:
            return value
        index = rng.randrange(len(items))
        if rng.random() < 0.3 and len(items) > 1:
            items.pop(index)
        else:
            items[index] = (items[index][0], mutate(items[index][1], rng, depth + 1))
        return dict(items)
    return value


def _mutate_sequence(items: list[Any], rng: random.Random, new_item: Any, changed: Any) -> list[Any]:
    """Grow (insert ``new_item()``), shrink, permute, or change one element (``changed(item)``)."""
    operation = rng.choice(["grow", "shrink", "permute", "element"] if items else ["grow"])
    if operation == "grow" and len(items) < MAX_LEN:
        items.insert(rng.randint(0, len(items)), new_item())
    elif operation == "shrink":
        items.pop(rng.randrange(len(items)))
    elif operation == "permute":
        rng.shuffle(items)
    elif operation == "element":
        index = rng.randrange(len(items))
        items[index] = changed(items[index])
    return items


# --------------------------------------------------------------------------- input contracts


def _is_number(value: Any) -> bool:
    return type(value) in (int, float)


def _rows(value: Any) -> list[list[Any]] | None:
    """The numeric rows of a list or tuple of numbers (one row) or of such lists (one row each)."""
    if type(value) not in (list, tuple):
        return None
    if all(_is_number(v) for v in value):
        return [list(value)]
    if value and all(type(v) in (list, tuple) and all(_is_number(x) for x in v) for v in value):
        return [list(v) for v in value]
    return None


def _direction(rows: list[list[Any]]) -> str | None:
    """"asc" or "desc" when every row is sorted that way and one row of 3+ is not constant."""
    if not any(len(r) >= 3 and len(set(r)) > 1 for r in rows):
        return None
    if all(a <= b for r in rows for a, b in itertools.pairwise(r)):
        return "asc"
    if all(a >= b for r in rows for a, b in itertools.pairwise(r)):
        return "desc"
    return None


@dataclass(frozen=True)
class Contract:
    """What every original test input of one arity keeps, so that mutated inputs stay in the task's
    domain, where the reference's answer is the task's (EvalPlus writes such contracts by hand).

    Outside it a reference answers arbitrarily (``sum_Even(l, r)`` with ``l > r``), and a test built
    from that answer fails correct programs. A relation that the original inputs keep by chance only
    narrows the mutations; it never admits an input outside the domain."""

    sign: dict[int, str]
    """Number argument -> "positive" or "nonnegative"."""
    order: frozenset[tuple[int, int, bool]]
    """(i, j, strict): number argument i <= j (< when strict)."""
    length: dict[int, int]
    """Int argument k -> sequence argument s with k == len(s): restored after each mutation."""
    within_length: frozenset[tuple[int, int, bool]]
    """(k, s, strict): int argument k <= len(s) (< when strict)."""
    nonnegative_items: frozenset[int]
    """Number sequences (or lists of them) whose items are never negative."""
    sorted_rows: dict[int, str]
    """Number sequences (or lists of them) sorted "asc" or "desc": re-sorted after each mutation."""

    def repair(self, args: list[Any]) -> list[Any]:
        for position, direction in self.sorted_rows.items():
            value = args[position]
            if (rows := _rows(value)) is not None:
                order = [sorted(r, reverse=direction == "desc") for r in rows]
                kind = type(value)
                args[position] = (kind(order[0]) if all(_is_number(v) for v in value)
                                  else kind(type(v)(r) for v, r in zip(value, order)))
        for k, s in self.length.items():
            args[k] = len(args[s])
        return args

    def admits(self, args: list[Any]) -> bool:
        if any(not _is_number(args[i]) or args[i] < 0 or (kind == "positive" and args[i] == 0)
               for i, kind in self.sign.items()):
            return False
        if any(not (_is_number(args[i]) and _is_number(args[j])) or args[i] > args[j]
               or (strict and args[i] == args[j]) for i, j, strict in self.order):
            return False
        if any(type(args[k]) is not int or not hasattr(args[s], "__len__") or args[k] > len(args[s])
               or (strict and args[k] == len(args[s])) for k, s, strict in self.within_length):
            return False
        if any(_rows(args[p]) is None for p in self.sorted_rows):
            return False
        return all((rows := _rows(args[p])) is not None and all(x >= 0 for r in rows for x in r)
                   for p in self.nonnegative_items)


def infer_contract(seeds: list[tuple[Any, ...]]) -> Contract:
    """The relations every seed (argument tuples of one arity) keeps: a number's sign, an order
    between two numbers, an int equal to (or at most) a sequence's length, non-negative items, and
    sorted number sequences."""
    arity = len(seeds[0])
    assert all(len(s) == arity for s in seeds), "one contract per arity"
    numbers = [i for i in range(arity) if all(_is_number(s[i]) for s in seeds)]
    ints = [i for i in numbers if all(type(s[i]) is int for s in seeds)]
    sequences = [i for i in range(arity) if all(type(s[i]) in (list, tuple, str) for s in seeds)]
    sign = {i: "positive" if all(s[i] > 0 for s in seeds) else "nonnegative"
            for i in numbers if all(s[i] >= 0 for s in seeds)}
    order = set()
    for i in numbers:
        for j in numbers:
            if i != j and all(s[i] <= s[j] for s in seeds) and not all(s[i] == s[j] for s in seeds):
                order.add((i, j, all(s[i] < s[j] for s in seeds)))
            elif i < j and all(s[i] == s[j] for s in seeds):
                order |= {(i, j, False), (j, i, False)}
    length, within = {}, set()
    for k in ints:
        linked = next((p for p in sequences if all(s[k] == len(s[p]) for s in seeds)), None)
        if linked is not None:
            length[k] = linked
        else:
            within |= {(k, p, all(s[k] < len(s[p]) for s in seeds))
                       for p in sequences if all(s[k] <= len(s[p]) for s in seeds)}
    rows = {i: [_rows(s[i]) for s in seeds] for i in range(arity)}
    rows = {i: [r for rs in seeds_rows for r in rs] for i, seeds_rows in rows.items() if None not in seeds_rows}
    nonnegative = frozenset(i for i, rs in rows.items() if any(rs) and all(x >= 0 for r in rs for x in r))
    sorted_rows = {i: d for i, rs in rows.items() if (d := _direction(rs))}
    return Contract(sign, frozenset(order), length, frozenset(within), nonnegative, sorted_rows)


# --------------------------------------------------------------------------- tests


def seed_inputs(problem: Problem) -> list[tuple[Any, ...]]:
    """The literal argument tuples of the ``assert ENTRY(ARGS) == EXPECTED`` cases."""
    seeds = []
    for case in problem.tests["cases"]:
        try:
            (stmt,) = ast.parse(case).body
        except (SyntaxError, ValueError):
            continue
        test = stmt.test if isinstance(stmt, ast.Assert) else None
        call = test.left if isinstance(test, ast.Compare) and isinstance(test.ops[0], ast.Eq) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == problem.entry_point
                and not call.keywords):
            continue
        try:
            seeds.append(tuple(ast.literal_eval(arg) for arg in call.args))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return seeds


def _round_trips(value: Any) -> bool:
    """``repr(value)`` reads back as the same value (not so for nan, inf or objects)."""
    try:
        return ast.literal_eval(repr(value)) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False


def _parses(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return True


def _floats_inside(value: Any) -> bool:
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(isinstance(v, float) or _floats_inside(v) for v in value)
    if isinstance(value, dict):
        return any(isinstance(v, float) or _floats_inside(v) for v in value.values())
    return False


def render_case(entry: str, args: tuple[Any, ...], output: str) -> str | None:
    """One new assert, or None when the output cannot be compared safely (or has no literal, as a
    frozenset has not)."""
    if not _parses(output):
        return None
    value = ast.literal_eval(output)
    call = f"{entry}({', '.join(repr(a) for a in args)})"
    if _floats_inside(value):
        return None
    if isinstance(value, float):
        return f"assert _rltf_math.isclose({call}, {output}, rel_tol=1e-6, abs_tol=1e-9)"
    return f"assert {call} == {output}"


def augment_problem(problem: Problem, judge: Judge, rng: random.Random, max_new: int, draws: int,
                    stats: AugmentStats) -> Problem:
    """``problem`` with ``extra_tests`` (unchanged when nothing could be added)."""
    stats.problems += 1
    seeds = seed_inputs(problem)
    if not seeds or not problem.solutions or not problem.entry_point:
        stats.dropped["no literal asserts or reference"] += 1
        return problem
    reference, entry = problem.solutions[0], problem.entry_point
    known = {repr(s) for s in seeds}
    contracts = {n: infer_contract([s for s in seeds if len(s) == n]) for n in {len(s) for s in seeds}}
    candidates: list[tuple[Any, ...]] = []
    for _ in range(draws * DRAW_ATTEMPTS):
        if len(candidates) == draws:
            break
        seed = rng.choice(seeds)
        args = list(seed)
        if args:
            position = rng.randrange(len(args))
            args[position] = mutate(args[position], rng)
        contract = contracts[len(seed)]
        args = contract.repair(args)
        if (key := repr(tuple(args))) in known:
            continue
        known.add(key)
        if contract.admits(args):
            candidates.append(tuple(args))
        else:
            stats.dropped["outside the inputs' contract"] += 1
    stats.candidates += len(candidates)
    inputs = [list(args) for args in seeds + candidates]
    first = judge.call_outputs(reference, entry, inputs)
    second = judge.call_outputs(reference, entry, inputs)
    shown = {out for out in first[: len(seeds)] if out is not None}
    fresh: dict[str, str] = {}  # output -> the first case that gives it: new behaviour first
    repeats: list[str] = []  # cases whose output is shown or already covered: they fill what is left
    for args, out, again in zip(candidates, first[len(seeds):], second[len(seeds):], strict=True):
        reason = ("raised, timed out or not plain data" if out is None or again is None
                  else "nondeterministic" if out != again
                  else "not a literal" if not all(_round_trips(a) for a in args) else None)
        case = render_case(entry, args, out) if reason is None else None
        if reason is None and case is None:
            reason = "floats inside a container" if _parses(out) else "no literal output"
        if reason is not None:
            stats.dropped[reason] += 1
        elif out in shown or out in fresh:
            repeats.append(case)
        else:
            fresh[out] = case
    cases = [*fresh.values(), *repeats][:max_new]
    stats.new_outputs += min(len(fresh), max_new)
    stats.dropped["over max_new"] += len(fresh) + len(repeats) - len(cases)
    if not cases:
        return problem
    stats.augmented += 1
    stats.added.append(len(cases))
    setup = problem.tests.get("setup", "")
    if any("_rltf_math" in case for case in cases):
        setup += ("\n" if setup else "") + ISCLOSE_SETUP
    return dataclasses.replace(problem, extra_tests={"kind": "assert", "setup": setup, "cases": cases})


def augment(problems: list[Problem], judge: Judge, *, max_new: int = 10, draws: int = 60, seed: int = 0,
            on_problem: Callable[[], None] | None = None) -> tuple[list[Problem], AugmentStats]:
    """Every problem with up to ``max_new`` extra tests from ``draws`` mutated inputs within its
    contract (at most ``DRAW_ATTEMPTS`` times as many mutations tried)."""
    stats, out = AugmentStats(), []
    for problem in problems:
        out.append(augment_problem(problem, judge, random.Random(f"{seed}:{problem.id}"), max_new, draws, stats))
        if on_problem is not None:
            on_problem()
    return out, stats


def flip_stats(pairs: list[tuple[Problem, str]], workers: int | None = None) -> dict[str, Any]:
    """How many programs that pass a problem's original tests fail once its extra tests run too, and,
    for MBPP problems, how many fail MBPP+'s tests of the same task (on the tasks both cover)."""
    from rltf.datasets import load_dataset

    plus = {p.id.split("/")[1]: p for p in load_dataset("mbpp-plus", split="all")}
    with Judge(workers=workers) as original, Judge(workers=workers, tests="all") as every:
        before = original.run_many(pairs)
        after = every.run_many(pairs)
        covered = [i for i, (p, _) in enumerate(pairs) if p.source == "mbpp" and p.extra_tests
                   and p.id.split("/")[1] in plus]
        by_plus = dict(zip(covered, original.run_many([(plus[pairs[i][0].id.split("/")[1]], pairs[i][1])
                                                       for i in covered]), strict=True))
    passing = [i for i, v in enumerate(before) if v.status == "pass"]
    flipped = [i for i in passing if after[i].status != "pass"]
    both = [i for i in passing if i in by_plus]
    return {
        "programs": len(pairs), "pass_original": len(passing), "fail_with_extra": len(flipped),
        "flip_share": len(flipped) / len(passing) if passing else None,
        "mbpp_plus": {"programs": len(both), "fail_with_extra": sum(after[i].status != "pass" for i in both),
                      "fail_mbpp_plus": sum(by_plus[i].status != "pass" for i in both),
                      "fail_both": sum(after[i].status != "pass" and by_plus[i].status != "pass" for i in both)},
    }
