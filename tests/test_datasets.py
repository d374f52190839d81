"""Loaders on the real vendored files, the reference solutions against their own tests, and errors."""

from __future__ import annotations

import ast
import gzip
import json
import logging
import re
import sys
import types
import warnings
from pathlib import Path

import pytest

from rltf.datasets import (
    DATA_DIR,
    DATASETS,
    LEAKS_FILE,
    drop_mbpp_leaks,
    humaneval_tests,
    list_datasets,
    load_apps,
    load_dataset,
    mbpp_split,
)
from rltf.problems import Problem, ProblemFormatError
from rltf.prompts import build_prompt

COUNTS = {"mbpp": 974, "mbpp-sanitized": 427, "mbpp-plus": 399, "mbpp-augmented": 874, "humaneval": 164,
          "apps-sample5": 5, "apps-selected150": 128, "synthetic": 66}


def run_reference(problem: Problem, cases: list[str] | None = None) -> None:
    """Program, then setup, then each case in order, in one namespace (as the judge orders them)."""
    namespace: dict = {}
    with warnings.catch_warnings():  # old reference code has invalid escapes in non-raw strings
        warnings.simplefilter("ignore", DeprecationWarning)
        exec(problem.solutions[0], namespace)
        exec(problem.tests["setup"], namespace)
        for case in problem.tests["cases"] if cases is None else cases:
            exec(case, namespace)


@pytest.mark.parametrize("name", COUNTS)
def test_vendored_counts_and_ids(name):
    problems = load_dataset(name)
    assert len(problems) == COUNTS[name] == DATASETS[name].size
    assert len({p.id for p in problems}) == len(problems)
    assert all(p.num_tests > 0 for p in problems)


def test_registry():
    assert [info.name for info in list_datasets()] == ["mbpp", "mbpp-sanitized", "mbpp-plus", "mbpp-augmented",
                                                       "humaneval", "apps", "apps-sample5", "apps-selected150",
                                                       "synthetic", "family-strings", "family-lists", "family-arith",
                                                       "family-stdio", "family-twofn"]
    assert DATASETS["apps"].needs_path and DATASETS["apps"].splits == {"train": 5000, "test": 5000}
    assert len(load_dataset("humaneval", limit=3)) == 3
    plus_test = load_dataset("mbpp-plus", split="test")  # MBPP+ tasks keep MBPP's ids, and so its split
    assert len(plus_test) == 239 and len(load_dataset("mbpp-plus", split="all")) == 399
    assert {p.id.split("/")[1] for p in plus_test} <= {p.id.split("/")[1] for p in load_dataset("mbpp", split="test")}
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="no split 'dev'"):
        load_dataset("mbpp", split="dev")
    with pytest.raises(ValueError, match="path="):
        load_dataset("apps")


def test_augmented_mbpp_is_mbpp_with_extra_tests():
    """The augmented-tests arm trains on MBPP's own problems and original tests, plus generated ones."""
    for split, augmented in (("train", 366), ("test", None)):
        plain = {p.id: p for p in load_dataset("mbpp", split=split)}
        extra = load_dataset("mbpp-augmented", split=split)
        assert [p.id for p in extra] == list(plain)
        assert all(p.prompt == plain[p.id].prompt and p.tests == plain[p.id].tests for p in extra)
        with_extra = sum(bool(p.extra_tests) for p in extra)
        assert with_extra == augmented if augmented else with_extra > 0.9 * len(extra)


def test_mbpp_splits():
    assert [mbpp_split(i) for i in (1, 10, 11, 510, 511, 600, 601, 974)] == [
        "prompt", "prompt", "test", "test", "validation", "validation", "train", "train"]
    with pytest.raises(ValueError):
        mbpp_split(975)
    for name in ("mbpp", "mbpp-sanitized"):
        sizes = {split: len(load_dataset(name, split=split)) for split in DATASETS[name].splits}
        assert sizes == DATASETS[name].splits
        assert len(load_dataset(name, split="all")) == sum(sizes.values())
    assert sizes == {"prompt": 7, "test": 257, "validation": 43, "train": 120}
    test = load_dataset("mbpp", split="test")
    assert (test[0].id, test[-1].id) == ("mbpp/11", "mbpp/510")


def test_mbpp_train_leaks_are_dropped():
    pairs = {(leak["train"], leak["held_out"]) for leak in json.loads(LEAKS_FILE.read_text())}
    leaked = {train for train, _ in pairs}  # tests/test_leaks.py checks the file against the rule
    train = load_dataset("mbpp", split="train")
    kept = drop_mbpp_leaks(train)
    assert len(train) - len(kept) == len(leaked) == 76
    assert not {p.id for p in kept} & leaked
    sanitized = load_dataset("mbpp-sanitized", split="train")
    assert all(p.id.split("/")[1] not in {a.split("/")[1] for a in leaked} for p in drop_mbpp_leaks(sanitized))
    humaneval = load_dataset("humaneval")
    assert drop_mbpp_leaks(humaneval) == humaneval


def test_mbpp_records():
    mbpp = {p.id: p for p in load_dataset("mbpp")}
    first = mbpp["mbpp/1"]
    assert first.source == "mbpp" and first.entry_point == "min_cost"
    assert first.prompt.startswith("Write a function to find the minimum cost path")
    assert first.tests["cases"][0] == "assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8"
    assert mbpp["mbpp/11"].num_tests == 3  # its challenge_test_list is left out
    assert "root = Node(1)\n" in mbpp["mbpp/367"].tests["setup"].replace(" \n", "\n")
    assert not any("\r" in json.dumps(p.to_dict()) for p in mbpp.values())
    sanitized = {p.id: p for p in load_dataset("mbpp-sanitized")}
    assert sanitized["mbpp-sanitized/2"].entry_point == "similar_elements"  # first call in the assert is set()
    assert sanitized["mbpp-sanitized/82"].tests["setup"] == "import math"
    assert sanitized["mbpp-sanitized/164"].entry_point == "are_equivalent"  # renamed from areEquivalent


@pytest.mark.parametrize("name", ["mbpp", "mbpp-sanitized", "humaneval", "synthetic"])
def test_reference_solutions_pass(name):
    for problem in load_dataset(name):
        run_reference(problem)


def test_humaneval_cases():
    problems = {p.id: p for p in load_dataset("humaneval")}
    zero = problems["HumanEval/0"]
    assert zero.solutions == [zero.prompt + _raw_humaneval("HumanEval/0")["canonical_solution"]]
    assert zero.num_tests == 7 and all(case.startswith("assert candidate(") for case in zero.tests["cases"])
    assert zero.tests["setup"] == "METADATA = {\n    'author': 'jt',\n    'dataset': 'test'\n}\n\n\n" \
                                  "candidate = has_close_elements\n"
    assert problems["HumanEval/32"].num_tests == 1  # imports and the seeded rng join the loop's case
    assert problems["HumanEval/32"].tests["cases"][0].startswith("import math\nimport random\n")
    assert problems["HumanEval/53"].num_tests == 6
    last = problems["HumanEval/151"].tests["cases"][-1].splitlines()
    assert last[0] == "lst = list(range(-99, 100, 2))" and last[-1].startswith("assert candidate(lst)")
    for problem in problems.values():
        check = next(n for n in ast.parse(_raw_humaneval(problem.id)["test"]).body
                     if isinstance(n, ast.FunctionDef) and n.name == "check")
        asserts = sum(isinstance(n, ast.Assert) for s in check.body for n in ast.walk(s))
        if all(isinstance(s, ast.Assert) for s in check.body):
            assert problem.num_tests == asserts
        rebuilt = ast.parse("\n".join(problem.tests["cases"]))
        assert ast.dump(rebuilt) == ast.dump(ast.Module(body=check.body, type_ignores=[]))


_HUMANEVAL: dict[str, dict] = {}


def _raw_humaneval(task_id: str) -> dict:
    if not _HUMANEVAL:
        with gzip.open(DATA_DIR / "HumanEval.jsonl.gz", "rt") as handle:
            _HUMANEVAL.update((r["task_id"], r) for r in map(json.loads, handle))
    return _HUMANEVAL[task_id]


def test_humaneval_tests_grouping():
    test = ("import math\n\n\ndef helper(x):\n    return x\n\n\ndef check(candidate):\n    data = [1, 2]\n"
            "    def twice(v):\n        return 2 * v\n    assert candidate(data) == 3  # sum\n"
            "    for v in data:\n        assert twice(v) == candidate([v, v])\n    print('done')\n")
    tests = humaneval_tests(test, "f")
    assert tests["setup"] == "import math\n\n\ndef helper(x):\n    return x\n\n\ncandidate = f\n"
    assert tests["cases"] == [
        "data = [1, 2]\ndef twice(v):\n    return 2 * v\nassert candidate(data) == 3  # sum",
        "for v in data:\n    assert twice(v) == candidate([v, v])\nprint('done')",
    ]
    with pytest.raises(ValueError, match="no assert"):
        humaneval_tests("def check(candidate):\n    pass\n", "f")


def test_mbpp_plus():
    problems = {p.id: p for p in load_dataset("mbpp-plus")}
    assert sum(p.num_tests for p in problems.values()) == 43249
    for problem in problems.values():
        assert problem.source == "mbpp-plus" and problem.tests["kind"] == "assert"
        for case in problem.tests["cases"]:
            (stmt,) = ast.parse(case).body
            assert isinstance(stmt, ast.Assert)
        run_reference(problem, problem.tests["cases"][:3])  # the base inputs; the full run takes minutes
        # the prompt shows the task's base asserts, as MBPP does, and none of the ~100 cases it is judged on
        prompt = build_prompt(problem, "base").text
        assert 2 <= len(problem.shown_tests) <= 8 and all(line in prompt for line in problem.shown_tests)
        assert all(problem.entry_point in line for line in problem.shown_tests if line.startswith("assert"))
        assert not any(case in prompt for case in problem.tests["cases"] if case not in problem.shown_tests)
        assert len(prompt) < 3000
    assert problems["mbpp-plus/793"].num_tests == 3  # plus_input == {}
    assert problems["mbpp-plus/2"].tests["cases"][0] == \
        "assert set(similar_elements((3, 4, 5, 6), (5, 7, 4, 10))) == set((4, 5))"
    assert problems["mbpp-plus/124"].tests["cases"][0] == \
        "assert _close(angle_complex(0.0, complex(0.0, 1.0)), 1.5707963267948966, 0.0001)"
    assert "collections.Counter({" in problems["mbpp-plus/88"].tests["cases"][0]
    for task in ("2", "88", "115", "124", "164", "295", "737", "793"):
        run_reference(problems[f"mbpp-plus/{task}"])


def _failing_cases(problem: Problem, program: str, cases: list[str]) -> int:
    namespace: dict = {}
    exec(program, namespace)
    exec(problem.tests["setup"], namespace)
    failed = 0
    for case in cases:
        try:
            exec(case, namespace)
        except AssertionError:
            failed += 1
    return failed


def test_mbpp_plus_ambiguous_tasks_accept_either_reading():
    """EvalPlus 0.3.1's oracles for Mbpp/581 and 558 also accept the other reading of the task."""
    problems = {p.id: p for p in load_dataset("mbpp-plus")}
    perpendicular = ("import math\ndef surface_Area(b, h):\n"
                     "    return round(b * b + 2 * b * math.sqrt((b / 2) ** 2 + h * h))\n")
    padded = ("def digit_distance_nums(a, b):\n    x, y = str(a), str(b)\n    w = max(len(x), len(y))\n"
              "    return sum(abs(int(p) - int(q)) for p, q in zip(x.zfill(w), y.zfill(w)))\n")
    for task, program in (("581", perpendicular), ("558", padded)):
        problem = problems[f"mbpp-plus/{task}"]
        cases = problem.tests["cases"]
        run_reference(problem)
        assert _failing_cases(problem, program, cases) == 0
        reference_only = [re.sub(r" or _near\(.*\)$", "", c).replace("_out := ", "") for c in cases]
        assert _failing_cases(problem, program, reference_only) > 0  # the second reading does differ
        wrong = f"def {problem.entry_point}(*args):\n    return -1\n"  # neither reading gives a negative
        assert _failing_cases(problem, wrong, cases) == len(cases)


def test_mbpp_plus_close():
    namespace: dict = {}
    exec(load_dataset("mbpp-plus", limit=1)[0].tests["setup"], namespace)
    close = namespace["_close"]
    assert close(0.1 + 0.2, 0.3, 0)  # float output, atol 0 -> 1e-6
    assert not close(0.3001, 0.3, 0)
    assert close(1.00005, 1.0, 0.0001) and not close(1.0002, 1.0, 0.0001)
    assert close([1.0, 2.0000001], [1.0, 2.0], 0) and not close((1.0, 2.0), [1.0, 2.0], 0)
    assert not close([1.0], [1.0, 2.0], 1) and not close("a", "b", 1)
    assert close(2, 2.0, 0) and not close(3, 2, 0)


def test_apps_vendored():
    sample = {p.id: p for p in load_dataset("apps-sample5")}
    assert list(sample) == ["apps/train/0001", "apps/train/0111", "apps/train/2287", "apps/train/2404",
                            "apps/train/4184"]
    assert [p.test_kind for p in sample.values()] == ["stdio", "stdio", "stdio", "call", "call"]
    assert [p.difficulty for p in sample.values()] == ["interview", "interview", "competition", "introductory",
                                                       "introductory"]
    kth = sample["apps/train/2404"]
    assert kth.tests["fn_name"] == "findKthPositive" and kth.tests["cases"] == [
        {"args": [[2, 3, 4, 7, 11], 5], "expected": 9}]
    assert len(kth.solutions) == 58 and kth.starter_code.startswith("class Solution:")
    assert sample["apps/train/4184"].tests["cases"][0] == {"args": [1], "expected": [False]}

    selected = {p.id: p for p in load_dataset("apps-selected150")}
    kinds = [p.test_kind for p in selected.values()]
    assert (kinds.count("call"), kinds.count("stdio")) == (79, 49)
    assert sum(p.num_tests for p in selected.values()) == 1602
    assert all(p.source == "apps-selected150" and p.id.startswith("apps/train/") for p in selected.values())
    markers = selected["apps/train/1613"].tests
    assert markers["fn_name"] == "solution" and markers["cases"][0] == {
        "args": ["apples, pears # and bananas\ngrapes\nbananas !apples", ["#", "!"]],
        "expected": ["apples, pears\ngrapes\nbananas"]}
    assert selected["apps/train/1627"].tests["cases"][0]["args"] == ["123", 10]
    pins = [case["args"] for case in selected["apps/train/4440"].tests["cases"]]  # 'a234' makes all strings
    assert ["1234"] in pins and ["a234"] in pins and all(isinstance(a, str) for (a,) in pins)
    converter = [case["args"] for case in selected["apps/train/1617"].tests["cases"]]  # (n, decimals=0, base=pi)
    assert converter[:4] == [[13], [10], [13, 3], [13, 0, 8]]
    assert selected["apps/train/1665"].tests["cases"][0]["args"] == [[1, [1, 1]], [[2, 2], 2]]
    stdio = next(p for p in selected.values() if p.test_kind == "stdio")
    assert all(isinstance(c["output"], str) for c in stdio.tests["cases"])


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_apps_raw_layout(tmp_path, caplog):
    root = tmp_path / "APPS"
    stdin = root / "train" / "0000"
    _write(stdin / "question.txt", "Add two numbers.")
    _write(stdin / "input_output.json", json.dumps({"inputs": ["1 2\n", ["3 4", "5"]], "outputs": ["3\n", ["7", "5"]]}))
    _write(stdin / "solutions.json", json.dumps(["print(sum(map(int, input().split())))"]))
    _write(stdin / "metadata.json", json.dumps({"difficulty": "introductory", "url": "x"}))
    call = root / "train" / "0001"
    _write(call / "question.txt", "Double it.")
    _write(call / "input_output.json", json.dumps({"fn_name": "double", "inputs": [[2]], "outputs": [[4]]}))
    _write(call / "starter_code.py", "def double(x):\n")
    _write(root / "train" / "0002" / "question.txt", "No tests here.")
    _write(root / "test" / "0007" / "question.txt", "Echo.")
    _write(root / "test" / "0007" / "input_output.json", json.dumps({"inputs": ["a\n"], "outputs": ["a\n"]}))
    with caplog.at_level(logging.WARNING, logger="rltf.datasets"):
        problems = load_dataset("apps", path=root)
    assert "skipped 1 APPS problems" in caplog.text
    assert [p.id for p in problems] == ["apps/train/0000", "apps/train/0001", "apps/test/0007"]
    first, second, third = problems
    assert first.tests == {"kind": "stdio", "cases": [{"input": "1 2\n", "output": "3\n"},
                                                      {"input": "3 4\n5", "output": "7\n5"}]}
    assert (first.difficulty, first.prompt, len(first.solutions), first.starter_code) == (
        "introductory", "Add two numbers.", 1, "")
    assert second.tests == {"kind": "call", "fn_name": "double", "cases": [{"args": [2], "expected": [4]}]}
    assert (second.difficulty, second.solutions, second.starter_code) == (None, [], "def double(x):\n")
    assert third.source == "apps" and [p.id for p in load_apps("test", root)] == ["apps/test/0007"]
    _write(call / "input_output.json", '{"inputs": [[2]],\n "outputs": [4]')
    with pytest.raises(ProblemFormatError, match=r"0001/input_output\.json:2: malformed JSON"):
        load_apps("train", root)
    _write(call / "input_output.json", json.dumps({"fn_name": "double", "inputs": [2], "outputs": [4]}))
    with pytest.raises(ProblemFormatError, match=r"0001: call case 0 needs a list 'args'"):
        load_apps("train", root)
    with pytest.raises(FileNotFoundError):
        load_apps("train", tmp_path / "missing")


def _hf_row(problem_id: int, input_output: dict | None, **extra) -> dict:
    row = {"problem_id": problem_id, "question": f"Q{problem_id}", "solutions": json.dumps(["print(1)"]),
           "input_output": json.dumps(input_output) if input_output else "", "difficulty": "interview",
           "url": "https://example.org", "starter_code": ""}
    return row | extra


HF_ROWS = [_hf_row(0, {"inputs": ["1\n"], "outputs": ["1\n"]}),
           _hf_row(1, None),
           _hf_row(12, {"fn_name": "f", "inputs": [[1, 2]], "outputs": [[3]]}, starter_code="def f(a, b):\n",
                   solutions="")]


def test_apps_hf_jsonl(tmp_path, caplog):
    path = tmp_path / "test.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in HF_ROWS), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rltf.datasets"):
        problems = load_dataset("apps", path=tmp_path)
    assert "skipped 1 APPS problems" in caplog.text
    assert [p.id for p in problems] == ["apps/test/0000", "apps/test/0012"]
    assert problems[0].tests == {"kind": "stdio", "cases": [{"input": "1\n", "output": "1\n"}]}
    assert problems[0].solutions == ["print(1)"] and problems[0].difficulty == "interview"
    assert problems[1].tests["kind"] == "call" and problems[1].solutions == []
    assert problems[1].starter_code == "def f(a, b):\n"
    assert load_apps(path=path) == problems  # a single file: split from its name
    assert [p.id for p in load_apps("train", path)] == ["apps/train/0000", "apps/train/0012"]
    with pytest.raises(ValueError, match="split"):
        load_apps(path=_write(tmp_path / "apps.jsonl", path.read_text()))
    path.write_text(json.dumps(HF_ROWS[0]) + "\n" + json.dumps(_hf_row(3, {"inputs": [1], "outputs": [1, 2]})))
    with pytest.raises(ProblemFormatError, match=r"test\.jsonl:2: 'inputs' and 'outputs'"):
        load_apps("test", tmp_path)


def test_apps_hf_save_to_disk(tmp_path, monkeypatch):
    _write(tmp_path / "dataset_dict.json", json.dumps({"splits": ["test"]}))
    fake = types.ModuleType("datasets")
    fake.load_from_disk = lambda path: {"test": HF_ROWS}
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert [p.id for p in load_dataset("apps", split="test", path=tmp_path)] == ["apps/test/0000", "apps/test/0012"]
    with pytest.raises(FileNotFoundError):
        load_dataset("apps", split="train", path=tmp_path)


def test_malformed_records(tmp_path):
    good = json.dumps({"text": "t", "code": "def f():\n    return 1", "task_id": 11, "test_setup_code": "",
                       "test_list": ["assert f() == 1"], "challenge_test_list": []})
    bad_json = _write(tmp_path / "mbpp.jsonl", good + "\n{not json\n")
    with pytest.raises(ProblemFormatError, match=re.escape(f"{bad_json}:2: malformed JSON")):
        load_dataset("mbpp", path=bad_json)
    missing = _write(tmp_path / "missing.jsonl", "\n" + json.dumps({"text": "t", "task_id": 1}) + "\n")
    with pytest.raises(ProblemFormatError, match=re.escape(f"{missing}:2: missing key '")):
        load_dataset("mbpp", path=missing)
    record = {"id": "x/1", "prompt": "p", "tests": {"kind": "unit", "cases": []}}
    kind = _write(tmp_path / "plus.jsonl", json.dumps(record) + "\n")
    with pytest.raises(ProblemFormatError, match=re.escape(f"{kind}:1: unknown test kind 'unit'")):
        load_dataset("mbpp-plus", path=kind)
    no_entry = _write(tmp_path / "he.jsonl", json.dumps({"task_id": "HumanEval/0", "prompt": "", "entry_point": "f",
                                                         "canonical_solution": "", "test": "x = 1\n"}) + "\n")
    with pytest.raises(ProblemFormatError, match=re.escape(f"{no_entry}:1: no check(candidate)")):
        load_dataset("humaneval", path=no_entry)
    with gzip.open(DATA_DIR / "MapCoder_APPS_selected150.jsonl.gz", "rt") as handle:
        line = handle.readline()
    changed = json.loads(line) | {"difficulty": "competition"}
    dup = _write(tmp_path / "sel.jsonl", line + line + json.dumps(changed) + "\n")
    with pytest.raises(ProblemFormatError, match=re.escape(f"{dup}:3: id 3554 repeated with different content")):
        load_dataset("apps-selected150", path=dup)
    array = _write(tmp_path / "sanitized.json", json.dumps([{"task_id": 2, "prompt": "p"}]))
    with pytest.raises(ProblemFormatError, match=re.escape(f"{array}: record 0: missing key '")):
        load_dataset("mbpp-sanitized", path=array)


def test_reading_reference_code_prints_no_warnings() -> None:
    """Reference solutions with invalid escapes ("\\d" in a plain string) are parsed without a warning
    of any kind reaching the run log (SyntaxWarning from Python 3.12)."""
    from rltf.datasets import _entry_point

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _entry_point("assert f('1') == 1", "import re\ndef f(s):\n    return len(re.findall('\\d', s))\n") == "f"
    assert caught == []
