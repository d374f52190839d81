"""The canonical problem record shared by every benchmark, and its JSONL form.

One problem per JSONL line::

    {"id", "source", "prompt", "starter_code", "entry_point", "difficulty",
     "tests": {...}, "solutions": [...], "time_limit_s"?, "memory_limit_mb"?}

``tests`` has exactly one of three kinds (the key names are a contract other tools read):

* ``{"kind": "assert", "setup": str, "cases": [str, ...]}`` -- each case is a piece of Python
  (normally one ``assert`` statement) run after ``setup``; one case is one test, so a pass ratio
  exists.
* ``{"kind": "stdio", "cases": [{"input": str, "output": str}, ...]}`` -- standard input/output.
* ``{"kind": "call", "fn_name": str, "cases": [{"args": [...], "expected": ...}, ...]}`` -- call a
  plain function, or a method of ``class Solution`` when the program defines one.
"""

from __future__ import annotations

import ast
import builtins
import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

TEST_KINDS = ("assert", "stdio", "call")


class ProblemFormatError(ValueError):
    """A malformed problem record; the message names the file and line when known."""


@dataclass(frozen=True)
class Problem:
    id: str
    source: str
    prompt: str
    tests: dict[str, Any]
    starter_code: str = ""
    entry_point: str | None = None
    difficulty: str | None = None
    solutions: list[str] = field(default_factory=list)
    time_limit_s: float | None = None
    memory_limit_mb: int | None = None
    extra_tests: dict[str, Any] | None = None
    """More tests of the same kind (``rltf augment``), kept apart so both pass ratios are known;
    the judge's ``tests: original | extra | all`` picks which run."""
    shown_tests: list[str] | None = None
    """The asserts an MBPP-style prompt shows, where they are not ``tests``' cases: MBPP+ judges with
    about a hundred cases per task but shows the task's base asserts, as MBPP does."""

    @property
    def test_kind(self) -> str:
        return self.tests["kind"]

    @property
    def num_tests(self) -> int:
        return len(self.tests["cases"])

    def to_dict(self) -> dict[str, Any]:
        """The JSONL record; ``extra_tests`` and ``shown_tests`` only when set (older records stay
        byte-identical)."""
        record = asdict(self)
        for optional in ("extra_tests", "shown_tests"):
            if record[optional] is None:
                del record[optional]
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Problem:
        """Validate and build a problem; raises ProblemFormatError with the reason."""
        if not isinstance(record, dict):
            raise ProblemFormatError("a problem must be a JSON object")
        for key in ("id", "prompt", "tests"):
            if key not in record:
                raise ProblemFormatError(f"missing key {key!r}")
        validate_tests(record["tests"])
        if record.get("extra_tests") is not None:
            validate_tests(record["extra_tests"])
            if record["extra_tests"]["kind"] != record["tests"]["kind"]:
                raise ProblemFormatError("'extra_tests' must be of the same kind as 'tests'")
        shown = record.get("shown_tests")
        if shown is not None and (not isinstance(shown, list) or not all(isinstance(t, str) for t in shown)):
            raise ProblemFormatError("'shown_tests' must be a list of strings")
        known = cls.__dataclass_fields__
        unknown = set(record) - set(known)
        if unknown:
            raise ProblemFormatError(f"unknown keys {sorted(unknown)}")
        values = dict(record)
        values["id"] = str(values["id"])
        values.setdefault("source", "")
        values["starter_code"] = values.get("starter_code") or ""
        values["solutions"] = list(values.get("solutions") or [])
        return cls(**values)


def validate_tests(tests: Any) -> None:
    """Check the shape of a ``tests`` object so that bad data fails before any program runs."""
    if not isinstance(tests, dict) or "kind" not in tests:
        raise ProblemFormatError("'tests' must be an object with a 'kind'")
    kind = tests["kind"]
    if kind not in TEST_KINDS:
        raise ProblemFormatError(f"unknown test kind {kind!r} (expected one of {', '.join(TEST_KINDS)})")
    cases = tests.get("cases")
    if not isinstance(cases, list):
        raise ProblemFormatError("'tests.cases' must be a list")
    if kind == "assert":
        if not all(isinstance(c, str) for c in cases):
            raise ProblemFormatError("assert cases must be strings of Python code")
        if not isinstance(tests.get("setup", ""), str):
            raise ProblemFormatError("'tests.setup' must be a string")
    elif kind == "stdio":
        for i, case in enumerate(cases):
            if not (isinstance(case, dict) and isinstance(case.get("input"), str)
                    and isinstance(case.get("output"), str)):
                raise ProblemFormatError(f"stdio case {i} needs string 'input' and 'output'")
    else:
        if not isinstance(tests.get("fn_name"), str) or not tests["fn_name"]:
            raise ProblemFormatError("call tests need a non-empty 'fn_name'")
        for i, case in enumerate(cases):
            if not (isinstance(case, dict) and isinstance(case.get("args"), list) and "expected" in case):
                raise ProblemFormatError(f"call case {i} needs a list 'args' and an 'expected' value")


TestSelection = Literal["original", "extra", "all"]


def select_tests(problem: Problem, which: TestSelection) -> dict[str, Any]:
    """The tests to judge with: the benchmark's own (``original``), the augmented ones (``extra``;
    the original where a problem has none) or both, original first (``all``; the extra setup, which
    extends the original's, runs once)."""
    extra = problem.extra_tests
    if which == "original" or not extra:
        return problem.tests
    if which == "extra":
        return extra
    return {**extra, "cases": [*problem.tests["cases"], *extra["cases"]]}


def infer_entry_point(tests: dict[str, Any]) -> str | None:
    """The function an ``assert`` problem tests, for records that leave ``entry_point`` unset (raw
    MBPP converted by a user): in the first case, the first name called that is not a builtin,
    else the first name called at all (``assert sum(10, 15) == 6`` tests a program's own ``sum``,
    which the judge must then take from the program, not from builtins). None for other kinds, or
    when the first case calls no plain name."""
    if tests.get("kind") != "assert" or not tests.get("cases"):
        return None
    try:
        tree = ast.parse(tests["cases"][0])
    except SyntaxError:
        return None
    called = [name for *_, name in sorted((node.lineno, node.col_offset, node.func.id) for node in ast.walk(tree)
                                          if isinstance(node, ast.Call) and isinstance(node.func, ast.Name))]
    return next((name for name in called if not hasattr(builtins, name)), called[0] if called else None)


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line; bad JSON names file and line."""
    path = Path(path)
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise ProblemFormatError(f"{path}:{lineno}: malformed JSON: {exc.msg}") from None


def load_problems(path: str | Path) -> list[Problem]:
    """Read canonical problems from a (optionally gzipped) JSONL file."""
    problems = []
    for lineno, record in iter_jsonl(path):
        try:
            problems.append(Problem.from_dict(record))
        except (ProblemFormatError, TypeError) as exc:
            raise ProblemFormatError(f"{path}:{lineno}: {exc}") from None
    return problems


def save_problems(problems: Iterable[Problem], path: str | Path) -> None:
    """Write canonical JSONL; a ``.gz`` path is gzipped without name or time, so output is reproducible."""
    path = Path(path)
    lines = "".join(json.dumps(problem.to_dict(), ensure_ascii=False) + "\n" for problem in problems).encode()
    if path.suffix == ".gz":
        with path.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as handle:
            handle.write(lines)
    else:
        path.write_bytes(lines)
