"""Sandboxed, typed, fast execution of generated programs against unit tests."""

from rltf.judge.core import Judge, JudgeConfig, JudgeError, open_judge
from rltf.judge.service import JudgeService
from rltf.judge.verdict import ErrorInfo, FailureInfo, StaticFinding, TestResult, Verdict

__all__ = ["ErrorInfo", "FailureInfo", "Judge", "JudgeConfig", "JudgeError", "JudgeService", "StaticFinding",
           "TestResult", "Verdict", "open_judge"]
