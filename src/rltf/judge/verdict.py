"""Typed, JSON-serialisable results of judging one program.

Rewards read these records, so their fields are a contract: ``status`` separates wrong answers
(``fail``) from crashes (``error``) and from the judge's own failures (``infra_error``), and
``error.line`` is a 1-based line of the submitted program, never of harness code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "error", "infra_error"]
TestStatus = Literal["pass", "fail", "error", "not_run"]
Phase = Literal["compile", "runtime", "timeout", "memory", "output_limit", "killed"]

STATUSES = ("pass", "fail", "error", "infra_error")
PHASES = ("compile", "runtime", "timeout", "memory", "output_limit", "killed")
VERDICT_KEYS = ("pass", "fail", *PHASES, "infra_error")
"""The verdict mix: passes, wrong answers, each error phase and judge failures (``Verdict.error_category``)."""
MAX_DETAIL = 200
"""Longest text of each :class:`FailureInfo` field: the values come from untrusted programs."""


def clip(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


@dataclass(frozen=True)
class ErrorInfo:
    phase: Phase
    type: str
    message: str = ""
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "type": self.type, "message": self.message, "line": self.line}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ErrorInfo | None:
        if data is None:
            return None
        return cls(data["phase"], data["type"], data.get("message", ""), data.get("line"))


@dataclass(frozen=True)
class FailureInfo:
    """What the first failing test checked, to read a wrong answer without re-running it.

    Computed on the trusted side (the program's values are rebuilt builtins there) and clipped to
    :data:`MAX_DETAIL` characters each. ``test`` is the failed ``assert`` statement (or the case's
    source when no assert statement raised), the call for ``call`` tests, the input for ``stdio``
    tests. ``expected`` and ``actual`` are reprs for assert and call tests, the output texts for
    stdio tests; None where the test's form names no such values (``assert ok(x)``).
    """

    test: str
    expected: str | None = None
    actual: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", clip(self.test))
        for name in ("expected", "actual"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, clip(value))

    def to_dict(self) -> dict[str, Any]:
        return {"test": self.test, "expected": self.expected, "actual": self.actual}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FailureInfo | None:
        if data is None:
            return None
        return cls(data["test"], data.get("expected"), data.get("actual"))


@dataclass(frozen=True)
class StaticFinding:
    """One static-analysis finding (:mod:`rltf.judge.static`): ``line`` is 1-based in the program."""

    rule: str
    message: str
    line: int
    severity: Literal["error", "warning", "info"] = "warning"

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "message": self.message, "line": self.line, "severity": self.severity}


@dataclass(frozen=True)
class TestResult:
    status: TestStatus
    time_s: float = 0.0
    error: ErrorInfo | None = None
    output: str | None = None
    """The return value's repr, for :meth:`rltf.judge.Judge.call_outputs` only."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "time_s": round(self.time_s, 6)}
        if self.error is not None:
            out["error"] = self.error.to_dict()
        if self.output is not None:
            out["output"] = self.output
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TestResult:
        return cls(data["status"], data.get("time_s", 0.0), ErrorInfo.from_dict(data.get("error")), data.get("output"))


@dataclass(frozen=True)
class Verdict:
    status: Status
    passed: int
    total: int
    error: ErrorInfo | None = None
    tests: tuple[TestResult, ...] = field(default_factory=tuple)
    duration_s: float = 0.0
    isolation: str = ""
    static: tuple[StaticFinding, ...] = ()
    """Static-analysis findings (``judge.static``), from the program's text alone; () when off."""
    failure: FailureInfo | None = None
    """The first failing test's text, expected and actual value; None when no test failed."""

    @property
    def pass_ratio(self) -> float:
        return self.passed / self.total if self.total else 0.0

    @property
    def error_category(self) -> str:
        """One label for logs and reward tables: the status, or the error phase for errors."""
        if self.status == "error" and self.error is not None:
            return self.error.phase
        return self.status

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "passed": self.passed,
            "total": self.total,
            "pass_ratio": self.pass_ratio,
            "error": self.error.to_dict() if self.error else None,
            "tests": [t.to_dict() for t in self.tests],
            "duration_s": round(self.duration_s, 6),
            "isolation": self.isolation,
            "static": [f.to_dict() for f in self.static],
            "failure": self.failure.to_dict() if self.failure else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            status=data["status"],
            passed=data["passed"],
            total=data["total"],
            error=ErrorInfo.from_dict(data.get("error")),
            tests=tuple(TestResult.from_dict(t) for t in data.get("tests", [])),
            duration_s=data.get("duration_s", 0.0),
            isolation=data.get("isolation", ""),
            static=tuple(StaticFinding(**f) for f in data.get("static", [])),
            failure=FailureInfo.from_dict(data.get("failure")),
        )

    @classmethod
    def infra(cls, message: str, total: int, isolation: str = "") -> Verdict:
        """The judge failed, not the program: callers must not score this as a program outcome."""
        return cls("infra_error", 0, total, ErrorInfo("killed", "InfraError", message), (), 0.0, isolation)
