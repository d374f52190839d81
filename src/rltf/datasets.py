"""Benchmark loaders: every dataset becomes a list of canonical :class:`rltf.problems.Problem`.

MBPP, MBPP+, HumanEval and two small APPS subsets are vendored in ``rltf/data`` (provenance and
licenses in ``data/README.md``), so training and evaluation work offline; full APPS is read from a
local copy. Use :func:`load_dataset` with a name from :data:`DATASETS`.
"""

from __future__ import annotations

import ast
import functools
import gzip
import importlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from rltf.families import FAMILIES, load_family
from rltf.problems import Problem, ProblemFormatError, iter_jsonl, load_problems
from rltf.synthetic import load_synthetic

log = logging.getLogger(__name__)
T = TypeVar("T")

DATA_DIR = Path(__file__).parent / "data"
LEAKS_FILE = DATA_DIR / "mbpp_train_leaks.json"

# Upstream MBPP README: task ids 1-10 are few-shot prompts, 11-510 test, 511-600 validation, 601-974 train.
MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
APPS_SPLITS = ("train", "test")


def mbpp_split(task_id: int) -> str:
    """The official MBPP split of a task id (sanitized MBPP keeps the ids, so the rule holds there too)."""
    for name, (low, high) in MBPP_SPLITS.items():
        if low <= task_id <= high:
            return name
    raise ValueError(f"MBPP task id {task_id} is outside 1..974")


def _number(problem: Problem) -> int:
    return int(problem.id.rsplit("/", 1)[1])


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def _build(where: str, make: Callable[[Any], T], record: Any) -> T:
    """Convert one raw record; any shape error becomes a ProblemFormatError that names ``where``."""
    try:
        return make(record)
    except KeyError as exc:
        raise ProblemFormatError(f"{where}: missing key {exc}") from None
    except (ProblemFormatError, TypeError, ValueError, AttributeError, SyntaxError) as exc:
        raise ProblemFormatError(f"{where}: {exc}") from None


def _jsonl(path: Path, make: Callable[[Any], Problem]) -> list[Problem]:
    return [_build(f"{path}:{lineno}", make, record) for lineno, record in iter_jsonl(path)]


def _read_json(path: Path) -> Any:
    """A whole (optionally gzipped) JSON file; bad JSON names the file and line."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise ProblemFormatError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None


def _optional_json(path: Path) -> Any:
    return _read_json(path) if path.exists() else None


def _entry_point(test: str, code: str) -> str:
    """The function a test asserts on: the first name it calls that the solution defines."""
    with warnings.catch_warnings():  # old reference code has invalid escapes in non-raw strings:
        warnings.simplefilter("ignore")  # DeprecationWarning up to 3.11, SyntaxWarning (printed) from 3.12
        module = ast.parse(code)
    defined = {node.name for node in module.body
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    calls = sorted((node.lineno, node.col_offset, node.func.id) for node in ast.walk(ast.parse(test))
                   if isinstance(node, ast.Call) and isinstance(node.func, ast.Name))
    for *_, name in calls:
        if name in defined:
            return name
    raise ValueError(f"no function defined by the solution is called in {test!r}")


def _mbpp_problem(record: dict[str, Any], dataset: str, prompt: str, setup: str) -> Problem:
    code = _lf(record["code"])
    cases = [_lf(case) for case in record["test_list"]]
    if not cases:
        raise ValueError("empty test_list")
    return Problem.from_dict({
        "id": f"{dataset}/{int(record['task_id'])}", "source": dataset, "prompt": _lf(prompt),
        "entry_point": _entry_point(cases[0], code), "solutions": [code],
        "tests": {"kind": "assert", "setup": _lf(setup), "cases": cases},
    })


def _in_split(problems: list[Problem], split: str | None) -> list[Problem]:
    return problems if split is None else [p for p in problems if mbpp_split(_number(p)) == split]


def load_mbpp(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """Full MBPP (974); the cases are ``test_list`` only (``challenge_test_list`` is not part of MBPP scores)."""
    source = Path(path) if path else DATA_DIR / "mbpp.jsonl.gz"
    problems = _jsonl(source, lambda r: _mbpp_problem(r, "mbpp", r["text"], r["test_setup_code"]))
    return _in_split(problems, split)


def drop_mbpp_leaks(problems: list[Problem]) -> list[Problem]:
    """``problems`` without the 76 MBPP train tasks that twin a validation or test task
    (``data/mbpp_train_leaks.json``, written by ``scripts/find_mbpp_leaks.py``; the rule is in
    :mod:`rltf.leaks`' docstring). Sanitized MBPP keeps the task ids, so the list holds there too;
    problems of other benchmarks pass through."""
    leaked = {int(leak["train"].rsplit("/", 1)[1]) for leak in json.loads(LEAKS_FILE.read_text())}
    return [p for p in problems if not (p.source in ("mbpp", "mbpp-sanitized") and _number(p) in leaked)]


def held_out_twins(dataset: str) -> dict[str, list[str]]:
    """The MBPP test and validation problems of ``dataset`` (ids as that dataset names them:
    ``mbpp/296``, ``mbpp-plus/296``) that have a twin in MBPP train (``data/mbpp_train_leaks.json``),
    with the train ids: what a model trained on the whole train split may have learnt the answer
    of. Empty for other benchmarks."""
    if dataset not in ("mbpp", "mbpp-sanitized", "mbpp-plus"):
        return {}
    twins: dict[str, list[str]] = {}
    for leak in json.loads(LEAKS_FILE.read_text()):
        twins.setdefault(f"{dataset}/{leak['held_out'].rsplit('/', 1)[1]}", []).append(leak["train"])
    return twins


def load_mbpp_augmented(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """MBPP train and test with the extra tests ``rltf augment`` generated (``judge.tests=all`` checks them):
    the augmented-tests arm's training input, kept with the package so a run never reads a results folder."""
    return _in_split(load_problems(Path(path) if path else DATA_DIR / "mbpp_augmented.jsonl.gz"), split)


def load_mbpp_sanitized(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """Hand-verified MBPP (427); one JSON array, so errors name the record index rather than a line."""
    source = Path(path) if path else DATA_DIR / "sanitized-mbpp.json.gz"
    records = _read_json(source)
    if not isinstance(records, list):
        raise ProblemFormatError(f"{source}: expected a JSON array of problems")
    problems = [_build(f"{source}: record {i}", lambda r: _mbpp_problem(
        r, "mbpp-sanitized", r["prompt"], "\n".join(r["test_imports"])), record) for i, record in enumerate(records)]
    return _in_split(problems, split)


def load_mbpp_plus(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """MBPP+ v0.1.0 (399), pre-converted by ``scripts/build_mbpp_plus.py`` (expected outputs computed once).

    Its tasks keep their MBPP ids and come from every MBPP split (111 from train), so the splits are
    MBPP's: ``test`` (239) is what a model trained on MBPP train has not seen; EvalPlus scores all 399."""
    return _in_split(load_problems(Path(path) if path else DATA_DIR / "mbpp_plus.jsonl.gz"), split)


def humaneval_tests(test: str, entry_point: str) -> dict[str, Any]:
    """Split HumanEval's ``check(candidate)`` into one case per top-level statement that asserts.

    Statements without an assert join the next case (trailing ones the last), so running the cases
    in order in one namespace does what the body did; ``setup`` is the rest of the test module plus
    ``candidate = <entry_point>``, so it must run after the program.
    """
    module = ast.parse(test)
    lines = test.splitlines()
    check = next((node for node in module.body if isinstance(node, ast.FunctionDef) and node.name == "check"), None)
    if check is None:
        raise ValueError("no check(candidate) function in the test")
    start = min([check.lineno, *(d.lineno for d in check.decorator_list)])
    rest = "\n".join(lines[:start - 1] + lines[check.end_lineno:]).strip()
    setup = (rest + "\n\n\n" if rest else "") + f"candidate = {entry_point}\n"
    cases: list[str] = []
    pending: list[str] = []
    for stmt in check.body:
        indent = stmt.col_offset
        block = [line[indent:] if line[:indent].isspace() else line
                 for line in lines[stmt.lineno - 1:stmt.end_lineno]]
        source = "\n".join(block)
        if ast.dump(ast.parse(source).body[0]) != ast.dump(stmt):
            raise ValueError(f"cannot dedent line {stmt.lineno} of the test exactly")
        pending.append(source)
        if any(isinstance(node, ast.Assert) for node in ast.walk(stmt)):
            cases.append("\n".join(pending))
            pending = []
    if not cases:
        raise ValueError("check() has no assert")
    if pending:
        cases[-1] = "\n".join([cases[-1], *pending])
    return {"kind": "assert", "setup": setup, "cases": cases}


def load_humaneval(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """OpenAI HumanEval (164); the reference solution is ``prompt + canonical_solution``."""
    return _jsonl(Path(path) if path else DATA_DIR / "HumanEval.jsonl.gz", lambda r: Problem.from_dict({
        "id": r["task_id"], "source": "humaneval", "prompt": r["prompt"], "entry_point": r["entry_point"],
        "solutions": [r["prompt"] + r["canonical_solution"]], "tests": humaneval_tests(r["test"], r["entry_point"]),
    }))


def _lines(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else value


def apps_tests(input_output: dict[str, Any]) -> dict[str, Any]:
    """APPS ``input_output``: call tests when it names ``fn_name``, else stdin/stdout tests."""
    inputs, outputs = input_output["inputs"], input_output["outputs"]
    if not (isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) == len(outputs)):
        raise ValueError("'inputs' and 'outputs' must be lists of the same length")
    if input_output.get("fn_name"):
        return {"kind": "call", "fn_name": input_output["fn_name"],
                "cases": [{"args": args, "expected": out} for args, out in zip(inputs, outputs, strict=True)]}
    return {"kind": "stdio", "cases": [{"input": _lines(i), "output": _lines(o)}
                                       for i, o in zip(inputs, outputs, strict=True)]}


def _apps_problem(split: str, number: int | str, question: str, input_output: dict[str, Any], solutions: Any,
                  difficulty: str | None, starter_code: str | None) -> Problem:
    return Problem.from_dict({
        "id": f"apps/{split}/{int(number):04d}", "source": "apps", "prompt": question,
        "starter_code": starter_code or "", "difficulty": difficulty or None, "solutions": solutions or [],
        "tests": apps_tests(input_output),
    })


def _has_tests(input_output: Any) -> bool:
    """False for a missing or empty input_output (skipped); a malformed one fails later, with its location."""
    return not (input_output is None or (isinstance(input_output, dict) and not input_output.get("inputs")))


def _apps_raw_problem(split: str, folder: Path, input_output: dict[str, Any]) -> Problem:
    metadata = _optional_json(folder / "metadata.json") or {}
    starter = folder / "starter_code.py"
    return _apps_problem(split, folder.name, (folder / "question.txt").read_text(encoding="utf-8"), input_output,
                         _optional_json(folder / "solutions.json"), metadata.get("difficulty"),
                         starter.read_text(encoding="utf-8") if starter.exists() else "")


def _apps_raw_split(root: Path, split: str) -> list[Problem]:
    """The official layout ``root/<split>/NNNN/{question.txt, input_output.json, ...}``."""
    problems, skipped = [], 0
    for folder in sorted(p for p in (root / split).iterdir() if p.is_dir()):
        input_output = _optional_json(folder / "input_output.json")
        if _has_tests(input_output):
            problems.append(_build(str(folder), lambda rec: _apps_raw_problem(split, *rec), (folder, input_output)))
        else:
            skipped += 1
    _report_skipped(root / split, skipped)
    return problems


def _report_skipped(where: Path, skipped: int) -> None:
    if skipped:
        log.warning("%s: skipped %d APPS problems without input_output tests", where, skipped)


def _apps_rows(rows: Iterable[tuple[str, dict[str, Any]]], split: str, where: Path) -> list[Problem]:
    """Rows with the Hugging Face ``codeparrot/apps`` columns (solutions and input_output are JSON text)."""
    def make(r: dict[str, Any]) -> Problem | None:
        input_output = json.loads(r["input_output"]) if r["input_output"] else None
        if not _has_tests(input_output):
            return None
        return _apps_problem(split, r["problem_id"], r["question"], input_output,
                             json.loads(r["solutions"]) if r["solutions"] else [], r["difficulty"], r["starter_code"])

    problems, skipped = [], 0
    for loc, row in rows:
        problem = _build(loc, make, row)
        if problem is None:
            skipped += 1
        else:
            problems.append(problem)
    _report_skipped(where, skipped)
    return problems


def _apps_split(root: Path, split: str) -> list[Problem] | None:
    """One split of a local APPS copy, whichever of the three layouts it has; None if absent."""
    if (root / split).is_dir():
        return _apps_raw_split(root, split)
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        if (root / name).is_file():
            return _apps_rows(((f"{root / name}:{n}", r) for n, r in iter_jsonl(root / name)), split, root / name)
    if (root / "dataset_dict.json").is_file():  # datasets.DatasetDict.save_to_disk
        try:
            datasets = importlib.import_module("datasets")
        except ImportError:
            raise ModuleNotFoundError(f"{root} is a Hugging Face save_to_disk folder: pip install datasets") from None
        data = datasets.load_from_disk(str(root))
        if split in data:
            return _apps_rows(((f"{root}: {split} row {i}", r) for i, r in enumerate(data[split])), split, root)
    return None


def load_apps(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """A local APPS copy: ``root/{train,test}/NNNN/`` folders, ``{train,test}.jsonl[.gz]`` files with the
    Hugging Face columns (or one such file, split from its name), or a ``datasets.save_to_disk`` folder
    (needs the ``datasets`` package). Problems without tests are skipped, with a logged count."""
    if path is None:
        raise ValueError("APPS is not vendored: pass path= to a local copy (see rltf.datasets.load_apps)")
    root = Path(path)
    if root.is_file():
        name = split or root.name.split(".")[0]
        if name not in APPS_SPLITS:
            raise ValueError(f"cannot tell the APPS split of {root}: pass split='train' or 'test'")
        return _apps_rows(((f"{root}:{n}", r) for n, r in iter_jsonl(root)), name, root)
    if not root.is_dir():
        raise FileNotFoundError(root)
    found = {name: _apps_split(root, name) for name in ([split] if split else APPS_SPLITS)}
    if all(problems is None for problems in found.values()):
        raise FileNotFoundError(f"no APPS {split or 'train/test'} data under {root}")
    return [problem for problems in found.values() for problem in problems or []]


def load_apps_sample5(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """Five complete raw APPS train problems (from the RLTF repository), for smoke tests."""
    source = Path(path) if path else DATA_DIR / "APPS_train_sample5.jsonl.gz"
    return _jsonl(source, lambda r: _apps_problem(
        r["split"], r["problem_id"], r["question"], r["input_output"], r["solutions"],
        (r.get("metadata") or {}).get("difficulty"), r.get("starter_code")))


# MapCoder's selected150 stores a call's arguments as "\n".join(str(arg)), so strings lose their quotes.
# A parameter is a string when any of its values is not a Python literal; this table adds those whose
# test values all look like numbers although the problem statement passes strings.
_SELECTED150_STRING_PARAMS = {1627: {0}}  # is_polydivisible("1232", 10)


def _literal(text: str) -> tuple[bool, Any]:
    try:
        return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, text


def _signature(starter_code: str) -> tuple[str, int, int]:
    """(name, number of parameters, number without defaults) of the starter's function."""
    match = re.search(r"def\s+(\w+)\s*\((.*?)\)\s*(?:->[^:]*)?:", starter_code, re.DOTALL)
    if not match:
        raise ValueError("starter_code defines no function")
    args = ast.parse(f"def f({match.group(2)}): pass").body[0].args
    params = [a.arg for a in args.args if a.arg != "self"]
    return match.group(1), len(params), len(params) - len(args.defaults)


def _selected150_args(texts: list[str], n_params: int, n_required: int, forced: Iterable[int]) -> list[list[Any]]:
    """Rebuild argument lists from MapCoder's one-argument-per-line text."""
    rows = [[text] if n_params == 1 else text.split("\n") for text in texts]
    strings = set(forced)
    for row in rows:
        if n_required <= len(row) <= n_params:
            strings |= {j for j, item in enumerate(row) if not _literal(item)[0]}
    result = []
    for row in rows:
        extra = len(row) - n_params
        if extra > 0:  # a string argument holds newlines: it takes the surplus lines
            if len(strings) != 1:
                raise ValueError(f"cannot split {chr(10).join(row)!r} into {n_params} arguments")
            (j,) = strings
            row = [*row[:j], "\n".join(row[j:j + extra + 1]), *row[j + extra + 1:]]
        elif len(row) < n_required:
            raise ValueError(f"{len(row)} arguments for {n_required} required parameters")
        result.append([item if j in strings else _literal(item)[1] for j, item in enumerate(row)])
    return result


def _selected150_problem(record: dict[str, Any]) -> Problem:
    cases = record["test_list"]
    outputs = [case["output"] for case in cases]
    if not all(isinstance(out, list) and len(out) == 1 for out in outputs):
        raise ValueError("every test 'output' must be a one-element list")
    starter = record["starter_code"] or ""
    if starter.strip():
        fn_name, n_params, n_required = _signature(starter)
        args = _selected150_args([case["input"] for case in cases], n_params, n_required,
                                 _SELECTED150_STRING_PARAMS.get(int(record["id"]), ()))
        tests = {"kind": "call", "fn_name": fn_name,
                 "cases": [{"args": a, "expected": out} for a, out in zip(args, outputs, strict=True)]}
    else:
        tests = {"kind": "stdio", "cases": [{"input": case["input"], "output": out[0]}
                                            for case, out in zip(cases, outputs, strict=True)]}
    return Problem.from_dict({
        "id": f"apps/train/{int(record['id']):04d}", "source": "apps-selected150", "prompt": record["description"],
        "starter_code": starter, "difficulty": record["difficulty"], "tests": tests,
    })


def load_apps_selected150(split: str | None = None, path: str | Path | None = None) -> list[Problem]:
    """MapCoder's 150-line APPS subset (train-split ids), with its 22 duplicate lines dropped: 128 problems."""
    source = Path(path) if path else DATA_DIR / "MapCoder_APPS_selected150.jsonl.gz"
    seen: dict[str, Any] = {}
    problems = []
    for lineno, record in iter_jsonl(source):
        key = str(record.get("id")) if isinstance(record, dict) else None
        if key in seen:
            if seen[key] != record:
                raise ProblemFormatError(f"{source}:{lineno}: id {key} repeated with different content")
            continue
        seen[key] = record
        problems.append(_build(f"{source}:{lineno}", _selected150_problem, record))
    return problems


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    splits: dict[str, int]  # split -> number of problems (APPS: of the full dataset)
    loader: Callable[[str | None, str | Path | None], list[Problem]]
    needs_path: bool = False
    file: str | None = None
    """The vendored file under ``rltf/data`` (None: built in code, or read from a local copy)."""

    @property
    def size(self) -> int:
        return sum(self.splits.values())


def _family(name: str, split: str | None, path: str | Path | None) -> list[Problem]:
    del path  # built in code
    return load_family(name, split)


DATASETS: dict[str, DatasetInfo] = {info.name: info for info in [
    DatasetInfo("mbpp", "MBPP full, CC-BY-4.0; split by task id", {"prompt": 10, "test": 500, "validation": 90,
                                                                  "train": 374}, load_mbpp, file="mbpp.jsonl.gz"),
    DatasetInfo("mbpp-sanitized", "MBPP hand-verified subset, CC-BY-4.0; split by task id",
                {"prompt": 7, "test": 257, "validation": 43, "train": 120}, load_mbpp_sanitized,
                file="sanitized-mbpp.json.gz"),
    DatasetInfo("mbpp-plus", "MBPP+ v0.1.0 (EvalPlus), Apache-2.0 / CC-BY-4.0; MBPP's split by task id",
                {"prompt": 7, "test": 239, "validation": 42, "train": 111}, load_mbpp_plus, file="mbpp_plus.jsonl.gz"),
    DatasetInfo("mbpp-augmented", "MBPP train and test with generated extra tests (rltf augment), CC-BY-4.0",
                {"test": 500, "train": 374}, load_mbpp_augmented, file="mbpp_augmented.jsonl.gz"),
    DatasetInfo("humaneval", "OpenAI HumanEval, MIT", {"test": 164}, load_humaneval, file="HumanEval.jsonl.gz"),
    DatasetInfo("apps", "APPS from a local copy (path=), MIT", {"train": 5000, "test": 5000}, load_apps,
                needs_path=True),
    DatasetInfo("apps-sample5", "5 raw APPS train problems, MIT", {"train": 5}, load_apps_sample5,
                file="APPS_train_sample5.jsonl.gz"),
    DatasetInfo("apps-selected150", "MapCoder's APPS subset (128 distinct train problems), MIT", {"train": 128},
                load_apps_selected150, file="MapCoder_APPS_selected150.jsonl.gz"),
    DatasetInfo("synthetic", "one-line tasks built in code for the RL learning test (rltf.synthetic)",
                {"train": 44, "heldout": 22}, load_synthetic),
    *(DatasetInfo(f"family-{name}", f"the learning suite's {name} family, built in code (rltf.families)",
                  {"train": 4 * len(tasks), "heldout": 2 * len(tasks)}, functools.partial(_family, name))
      for name, tasks in FAMILIES.items()),
]}


def dataset_file(name: str) -> Path | None:
    """The vendored file a registered dataset is read from (None for one built in code or read from
    a local copy): what an evaluation's summary hashes."""
    info = DATASETS.get(name)
    return DATA_DIR / info.file if info and info.file else None


def list_datasets() -> list[DatasetInfo]:
    return list(DATASETS.values())


def load_dataset(name: str, split: str | None = None, path: str | Path | None = None,
                 limit: int | None = None) -> list[Problem]:
    """Problems of a registered dataset; ``split`` None or "all" means every split, ``path`` overrides
    the vendored file (and is required for ``apps``), ``limit`` keeps the first N."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    info = DATASETS[name]
    if split == "all":
        split = None
    if split is not None and split not in info.splits:
        raise ValueError(f"{name} has no split {split!r} (splits: {', '.join(info.splits)})")
    problems = info.loader(split, path)
    return problems if limit is None else problems[:limit]



def load_problem_set(dataset: str, split: str | None, path: str | None, limit: int | None) -> list[Problem]:
    """A registered benchmark, or a canonical problems ``.jsonl(.gz)`` file named as ``dataset``."""
    if Path(dataset).is_file():
        return load_problems(dataset)[:limit]
    return load_dataset(dataset, split, path, limit)
