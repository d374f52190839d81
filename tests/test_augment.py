"""Test augmentation: mutation operators, reference outputs from the sandbox, test selection in the judge."""

from __future__ import annotations

import builtins
import dataclasses
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rltf.augment import INT_BOUND, MAX_LEN, augment, infer_contract, mutate, render_case, seed_inputs
from rltf.judge import Judge
from rltf.problems import Problem, load_problems, save_problems, select_tests

SORT = Problem(id="mbpp/9001", source="mbpp", prompt="Sort a list.", entry_point="sort_it",
               tests={"kind": "assert", "setup": "", "cases": ["assert sort_it([3, 1, 2]) == [1, 2, 3]",
                                                               "assert sort_it([5]) == [5]"]},
               solutions=["def sort_it(xs):\n    return sorted(xs)\n"])


def test_mutations_keep_each_type_and_stay_bounded() -> None:
    rng = random.Random(0)
    inputs = [7, -3, 2.5, "hello", "", [1, 2, 3], [], (1, "a"), {"k": 1, "j": 2}, {1, 2}, frozenset({3}),
              [[1, 2], [3]], {"a": [1, 2]}, True, None, ["ab", "cd"]]
    for value in inputs:
        mutated = [mutate(value, rng) for _ in range(200)]
        assert all(type(m) is type(value) for m in mutated), value
        if value not in ("", None, [], frozenset({3})):
            assert any(m != value for m in mutated), value
    assert all(abs(mutate(9_999, rng)) <= INT_BOUND for _ in range(500))
    assert all(len(mutate(list(range(MAX_LEN)), rng)) <= MAX_LEN for _ in range(200))
    nested = [mutate([[1, 2], [3]], rng) for _ in range(300)]
    assert all(all(type(inner) is list and all(type(x) is int for x in inner) for inner in m) for m in nested)
    words = [mutate(["ab", "cd"], rng) for _ in range(300)]
    assert all(all(type(w) is str for w in m) for m in words) and any(m[0] not in ("ab", "cd") for m in words)


def test_seed_inputs_and_rendered_cases() -> None:
    problem = Problem(id="p", source="t", prompt="", entry_point="f", tests={"kind": "assert", "setup": "", "cases": [
        "assert f((1, 2), {3}) == 4", "assert set(f([1], {2})) == {1}", "assert f(Obj()) == 1", "assert g(1) == 2"]})
    assert seed_inputs(problem) == [((1, 2), {3})]  # only literal calls of the entry point compared with ==
    assert render_case("f", ((1, 2), "a"), "[1, 2]") == "assert f((1, 2), 'a') == [1, 2]"
    assert render_case("f", (1,), "0.5").startswith("assert _rltf_math.isclose(f(1), 0.5")
    assert render_case("f", (1,), "[0.5]") is None  # floats inside a container are not compared exactly
    assert render_case("f", (1,), "frozenset({1})") is None  # no literal to compare with


def test_expected_outputs_come_from_the_sandbox_and_bad_references_are_dropped(tmp_path: Path,
                                                                              monkeypatch) -> None:
    marker = tmp_path / "ran-here"
    raising = Problem(id="mbpp/9002", source="mbpp", prompt="", entry_point="half", solutions=[
        "def half(x):\n    if x % 2:\n        raise ValueError(x)\n    return x // 2\n"],
        tests={"kind": "assert", "setup": "", "cases": ["assert half(4) == 2"]})
    noisy = Problem(id="mbpp/9003", source="mbpp", prompt="", entry_point="noisy", solutions=[
        "import random\ndef noisy(x):\n    return x + random.random()\n"],
        tests={"kind": "assert", "setup": "", "cases": ["assert noisy(1) > 0"]})
    writes = Problem(id="mbpp/9004", source="mbpp", prompt="", entry_point="touch", solutions=[
        f"def touch(x):\n    open({str(marker)!r}, 'w').write('x')\n    return x\n"],
        tests={"kind": "assert", "setup": "", "cases": ["assert touch(1) == 1"]})
    real_exec = builtins.exec

    def no_reference_here(source, *args, **kwargs):  # the references must not run in this process
        assert "def half" not in str(source) and "def touch" not in str(source)
        return real_exec(source, *args, **kwargs)

    monkeypatch.setattr(builtins, "exec", no_reference_here)
    with Judge(workers=2) as judge:
        (sorted_, halved, noisy_out, touched), stats = augment([SORT, raising, noisy, writes], judge, max_new=5)
    assert not marker.exists()  # the sandbox's file system is read-only
    assert touched.extra_tests is None
    assert noisy_out.extra_tests is None  # `assert noisy(1) > 0` is no equality: no seed inputs
    cases = halved.extra_tests["cases"]
    assert cases and all(int(c.split("half(")[1].split(")")[0]) % 2 == 0 for c in cases)  # odd inputs raised
    assert stats.dropped["raised, timed out or not plain data"] > 0
    assert 1 <= len(sorted_.extra_tests["cases"]) <= 5 and sorted_.tests == SORT.tests
    outputs = [c.split(" == ")[1] for c in sorted_.extra_tests["cases"]]
    assert len(set(outputs)) == len(outputs) == 5 and "[1, 2, 3]" not in outputs  # distinct, new behaviour
    predicate = Problem(id="mbpp/9006", source="mbpp", prompt="", entry_point="even", solutions=[
        "def even(x):\n    return x % 2 == 0\n"], tests={"kind": "assert", "setup": "", "cases": [
            "assert even(2) == True", "assert even(3) == False"]})
    with Judge(workers=1) as judge:
        (out,), stats = augment([predicate], judge, max_new=4)
    assert len(out.extra_tests["cases"]) == 4 and stats.new_outputs == 0  # True/False shown: inputs still new


def test_the_contract_keeps_what_every_original_input_keeps() -> None:
    bounds = infer_contract([(2, 5), (3, 8), (4, 6)])  # mbpp/962, sum of the evens in [l, r]
    assert bounds.sign == {0: "positive", 1: "positive"} and bounds.order == {(0, 1, True)}
    assert bounds.admits([1, 9]) and not bounds.admits([-2, 5]) and not bounds.admits([6, 5])
    assert not bounds.admits([5, 5])  # every original l < r: equal is outside what they show
    sized = infer_contract([([1, 5, 3], 3), ([2, 2], 2)])  # (arr, n) with n == len(arr), items >= 0
    assert sized.length == {1: 0} and sized.nonnegative_items == {0}
    assert sized.repair([[4, 1, 2, 7], 3]) == [[4, 1, 2, 7], 4] and not sized.admits([[1, -1], 2])
    index = infer_contract([("abcd", 2), ("xyz", 0)])  # an index below a string's length
    assert index.within_length == {(1, 0, True)} and index.sign == {1: "nonnegative"}
    assert index.admits(["ab", 1]) and not index.admits(["ab", 2])
    rows = infer_contract([([[1, 2, 3, 4], [5, 6, 7, 8]],), ([(1, 2), (2, 3)],)])  # mbpp/889: sorted rows
    assert rows.sorted_rows == {0: "asc"} and rows.repair([[[3, 1, 2], (9, 4)]]) == [[[1, 2, 3], (4, 9)]]
    assert infer_contract([([3, 2, 1],), ([9, 5, 5],)]).sorted_rows == {0: "desc"}
    mixed = infer_contract([([1, 2, 3, 4],), ([4, 3, 2, 1],), (["a"],)])  # mbpp/680: sortedness is the task
    assert mixed.sorted_rows == {} and mixed.nonnegative_items == frozenset() and mixed.admits([[-1, "b"]])
    unrelated = infer_contract([(3, "x"), (-1, "yy")])  # no sign, and 3 > len("x")
    assert (unrelated.sign, unrelated.order, unrelated.length, unrelated.within_length) == ({}, set(), {}, set())


def test_augmented_inputs_stay_inside_the_contract() -> None:
    sum_even = Problem(id="mbpp/962", source="mbpp", prompt="", entry_point="sum_Even", solutions=[
        "def sum_Natural(n):\n    return int(n * (n + 1))\n"
        "def sum_Even(l, r):\n    return sum_Natural(int(r / 2)) - sum_Natural(int((l - 1) / 2))\n"],
        tests={"kind": "assert", "setup": "", "cases": [
            "assert sum_Even(2,5) == 6", "assert sum_Even(3,8) == 18", "assert sum_Even(4,6) == 10"]})
    with Judge(workers=1) as judge:
        (out,), stats = augment([sum_even], judge, max_new=10)
    inputs = seed_inputs(dataclasses.replace(out, tests=out.extra_tests))
    assert len(inputs) == 10 and all(0 < left < right for left, right in inputs)
    assert stats.dropped["outside the inputs' contract"] > 0


def test_unrepresentable_or_huge_outputs_are_errors_not_crashes() -> None:
    program = ("class Box:\n    pass\n"
               "def f(kind):\n"
               "    if kind == 'box':\n        return Box()\n"
               "    if kind == 'digits':\n        return 10 ** 5000\n"  # past str()'s 4300-digit limit
               "    if kind == 'long':\n        return 'x' * 30000\n"
               "    return kind\n")
    with Judge(workers=1) as judge:
        assert judge.call_outputs(program, "f", [["box"], ["digits"], ["long"], [[1, (2,)]]]) == [
            None, None, None, "[1, (2,)]"]


def test_nondeterministic_references_are_dropped() -> None:
    flaky = Problem(id="mbpp/9005", source="mbpp", prompt="", entry_point="flaky", solutions=[
        "import random\ndef flaky(xs):\n    return xs + [random.randrange(10 ** 9)]\n"],
        tests={"kind": "assert", "setup": "", "cases": ["assert flaky([1]) == [1, 5]"]})
    with Judge(workers=1) as judge:
        (out,), stats = augment([flaky], judge, max_new=5, draws=10)
    assert out.extra_tests is None and stats.dropped["nondeterministic"] > 0


def test_the_judge_picks_original_extra_or_all_tests() -> None:
    extra = {"kind": "assert", "setup": "", "cases": ["assert sort_it([2, 1]) == [1, 2]", "assert sort_it([]) == []"]}
    problem = Problem(**{**SORT.__dict__, "extra_tests": extra})
    assert select_tests(problem, "all")["cases"] == SORT.tests["cases"] + extra["cases"]
    assert select_tests(SORT, "extra") == SORT.tests  # no extra tests: the original ones
    fitted = "def sort_it(xs):\n    return [1, 2, 3] if len(xs) == 3 else xs\n"  # passes the shown asserts only
    results = {}
    for which in ("original", "extra", "all"):
        with Judge(workers=1, tests=which) as judge:
            results[which] = judge.run(problem, fitted)
    assert (results["original"].status, results["original"].total) == ("pass", 2)
    assert (results["extra"].passed, results["extra"].total) == (1, 2)  # [] passes, [2, 1] does not
    assert (results["all"].passed, results["all"].total, results["all"].status) == (3, 4, "fail")
    with pytest.raises(ValueError, match="unknown tests"):
        Judge(workers=1, tests="some")


def test_augment_command_writes_problems_and_stats(tmp_path: Path) -> None:
    from rltf.cli import app

    source, out, programs = tmp_path / "in.jsonl", tmp_path / "aug.jsonl", tmp_path / "programs.jsonl"
    save_problems([SORT], source)
    fitted = "def sort_it(xs):\n    return [1, 2, 3] if len(xs) == 3 else xs\n"  # passes the shown asserts only
    programs.write_text("\n".join(json.dumps({"problem_id": SORT.id, "program": p}) for p in (
        "def sort_it(xs):\n    return sorted(xs)\n", fitted)))
    result = CliRunner().invoke(app, ["augment", str(source), "--out", str(out), "--max-new", "4",
                                      "--programs", str(programs), "--workers", "1"])
    assert result.exit_code == 0, result.output
    (problem,) = load_problems(out)
    assert 1 <= len(problem.extra_tests["cases"]) <= 4
    stats = json.loads((tmp_path / "aug.stats.json").read_text())
    assert stats["augmented"] == 1 and stats["tests_added"] == len(problem.extra_tests["cases"])
    assert stats["programs"]["pass_original"] == 2 and stats["programs"]["fail_with_extra"] == 1
