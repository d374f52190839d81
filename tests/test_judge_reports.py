"""What the judge tells its user: the isolation it fell back to, and why a failing test failed."""

from __future__ import annotations

import json
import logging
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from rltf.cli import app
from rltf.judge import FailureInfo, Judge, JudgeConfig, JudgeError, Verdict, core
from rltf.judge.verdict import MAX_DETAIL
from rltf.problems import Problem, save_problems

SIMULATED = "rlimits only (namespaces unavailable: simulated)"
FELL_BACK = "fell back to"


def assert_problem(cases, setup="") -> Problem:
    return Problem(id="p", source="test", prompt="", entry_point="f",
                   tests={"kind": "assert", "setup": setup, "cases": cases})


ADD = assert_problem(["assert f(1, 2) == 3", "assert f(2, 2) == 4", "assert f(0, 0) == 0"])
SUM = Problem(id="s", source="test", prompt="", tests={"kind": "stdio", "cases": [
    {"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10\n"}]})
ADD_PROGRAM = "def f(a, b):\n    return a + b\n"


# -- isolation: the fallback is announced once, the strict mode refuses ------------------------

@pytest.fixture
def no_namespaces(tmp_path, monkeypatch):
    """Sandbox servers whose namespace probe fails, as in a container that blocks user namespaces:
    the judge starts its servers with an interpreter that patches ``sandbox.unshare_namespaces``."""
    wrapper = tmp_path / "python"
    wrapper.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import runpy, sys
        from rltf.judge import sandbox
        sandbox.unshare_namespaces = lambda: sandbox.SandboxInfo(False, {SIMULATED!r})
        sys.argv = [sys.argv[0], *sys.argv[4:]]  # drop "-s -m rltf.judge.server"
        runpy.run_module("rltf.judge.server", run_name="__main__")
    """))
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    monkeypatch.setattr(core, "_fallback_warned", False)


def test_auto_fallback_is_logged_once_per_process(no_namespaces, caplog):
    with caplog.at_level(logging.WARNING, logger="rltf.judge.core"):
        with Judge(workers=2, timeout_s=2.0) as judge:
            verdict = judge.run(ADD, ADD_PROGRAM)
            judge._workers[0].process.kill()  # a replaced server falls back again: still no second line
            assert judge.run(ADD, ADD_PROGRAM).status == "pass"
        with Judge(workers=1) as again:
            assert again.isolation == SIMULATED
    assert verdict.status == "pass" and verdict.isolation == SIMULATED
    warnings = [r.getMessage() for r in caplog.records if FELL_BACK in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert SIMULATED in warnings[0] and "judge.isolation=namespaces" in warnings[0]


def test_auto_fallback_reaches_stderr_without_logging_configured(no_namespaces, monkeypatch, capsys):
    monkeypatch.setattr(logging.getLogger("rltf.judge.core"), "propagate", False)  # as if no handler anywhere
    for _ in range(2):
        with Judge(workers=2):
            pass
    lines = [line for line in capsys.readouterr().err.splitlines() if FELL_BACK in line]
    assert len(lines) == 1 and lines[0].startswith("rltf judge: isolation 'auto' fell back to " + SIMULATED)


def test_namespaces_mode_refuses_to_run_without_them(no_namespaces, caplog, tmp_path):
    with pytest.raises(JudgeError, match=r"isolation 'namespaces' is required.*simulated.*isolation=auto"):
        Judge(workers=2, isolation="namespaces")
    with Judge(workers=1, isolation="rlimits") as judge:  # asked for: no warning
        assert judge.isolation == "rlimits only (requested)"
    assert not [r for r in caplog.records if FELL_BACK in r.getMessage()]
    problems, program = tmp_path / "p.jsonl", tmp_path / "f.py"
    save_problems([ADD], problems)
    program.write_text(ADD_PROGRAM)
    args = ["judge", "--problems", str(problems), "--problem-id", "p", "--program-file", str(program)]
    refused = CliRunner().invoke(app, [*args, "--isolation", "namespaces"])
    assert refused.exit_code == 2 and "Error: judge isolation 'namespaces' is required" in refused.output
    judged = CliRunner().invoke(app, [*args, "--isolation", "auto"])
    assert judged.exit_code == 0 and json.loads(judged.stdout.splitlines()[-1])["isolation"] == SIMULATED


def test_isolation_is_a_checked_config_key():
    from rltf.config import ConfigError, load_config

    assert load_config(overrides=["judge.isolation=namespaces"]).judge.isolation == "namespaces"
    with pytest.raises(ConfigError, match=r"judge\.isolation"):
        load_config(overrides=["judge.isolation=strict"])


# -- failure reports --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def judge():
    with Judge(JudgeConfig(workers=1, timeout_s=2.0, program_timeout_s=10, memory_mb=1024)) as j:
        yield j


def failure_of(judge, problem, program) -> FailureInfo:
    verdict = judge.run(problem, program)
    assert verdict.status == "fail", verdict
    return verdict.failure


def test_a_pass_carries_no_failure(judge):
    verdict = judge.run(ADD, ADD_PROGRAM)
    assert verdict.status == "pass" and verdict.failure is None and verdict.to_dict()["failure"] is None


def test_assert_failure_reports_the_statement_and_both_values(judge):
    verdict = judge.run(ADD, "def f(a, b):\n    return a * b\n")  # right for (2, 2) and (0, 0)
    assert [t.status for t in verdict.tests] == ["fail", "pass", "pass"]
    assert verdict.failure == FailureInfo("assert f(1, 2) == 3", expected="3", actual="2")
    assert Verdict.from_dict(json.loads(json.dumps(verdict.to_dict()))) == verdict
    swapped = assert_problem(["assert [1, 2] == f(2)"])  # the side with the call is the actual value
    assert failure_of(judge, swapped, "def f(n):\n    return (n,)\n") == FailureInfo(
        "assert [1, 2] == f(2)", expected="[1, 2]", actual="(2,)")


@pytest.mark.parametrize(("cases", "setup", "expected"), [
    (["for i in range(5):\n    assert math.isclose(candidate(i), i * i)"], "import math\ncandidate = f\n",
     FailureInfo("assert math.isclose(candidate(i), i * i)", "0", "7")),  # the iteration that failed
    (["assert _close(f(1), 3, 0)"], "def _close(out, exp, atol):\n    return out == exp\n",
     FailureInfo("assert _close(f(1), 3, 0)", "3", "7")),  # MBPP+'s check
    (["assert not f(1)"], "", FailureInfo("assert not f(1)", None, "7")),
    (["assert f(1) in (1, 2), 'message'"], "", FailureInfo("assert f(1) in (1, 2), 'message'", "(1, 2)", "7")),
    (["assert 0 < f(1) < 3"], "", FailureInfo("assert 0 < f(1) < 3")),  # a chain: its text alone
    (["raise AssertionError('by hand')"], "", FailureInfo("raise AssertionError('by hand')")),
    (["try:\n    assert f(1) == 0\nexcept AssertionError:\n    pass\nassert f(1) is None"], "",
     FailureInfo("assert f(1) is None", "None", "7")),  # the assert that ended the test
])
def test_assert_failures_of_each_form(judge, cases, setup, expected):
    assert failure_of(judge, assert_problem(cases, setup), "def f(x):\n    return 7\n") == expected


def test_rewritten_asserts_keep_their_semantics(judge):
    problem = assert_problem(["assert f(1) == [1]", "assert f(2) != [1]", "assert 2 in f(2)", "assert f(0) is not None",
                              "try:\n    assert f(1) == [2], 'caught'\nexcept AssertionError as e:\n"
                              "    assert e.args == ('caught',)",
                              "assert all(x == y for x, y in zip(f(3), [3]))", "assert not f(-1)"])
    verdict = judge.run(problem, "def f(n):\n    return [n] if n >= 0 else []\n")
    assert verdict.status == "pass", verdict


def test_huge_and_hostile_values_are_cut_on_the_trusted_side(judge):
    problem = assert_problem(["assert f(1) == 3"])
    text = failure_of(judge, problem, "def f(x):\n    return 'x' * 10**7\n")
    assert text.actual.startswith("'xxx") and len(text.actual) <= MAX_DETAIL
    nested = failure_of(judge, problem, "def f(x):\n    return [[[list(range(100))]]] * 1000\n")
    assert nested.actual.startswith("[[[[...]]], [[[...]]]") and len(nested.actual) <= MAX_DETAIL
    opaque = failure_of(judge, problem, "class X:\n    def __repr__(self):\n        raise ValueError\n"
                                        "def f(x):\n    return X()\n")
    assert opaque.actual == "<program object X>"  # the program's own __repr__ never runs here
    loud = assert_problem(["assert f(1) == Loud()"], setup="class Loud:\n    def __repr__(self):\n"
                                                           "        raise RuntimeError('no')\n")
    assert failure_of(judge, loud, "def f(x):\n    return 7\n").expected.startswith("<Loud instance at ")
    long_case = assert_problem(["assert f(1) == 3" + " and True" * 100])
    assert len(failure_of(judge, long_case, "def f(x):\n    return 7\n").test) == MAX_DETAIL


def test_stdio_failure_reports_input_and_both_outputs(judge):
    verdict = judge.run(SUM, "a, b = map(int, input().split())\nprint(a * b)\n")
    assert [t.status for t in verdict.tests] == ["fail", "fail"]
    assert verdict.failure == FailureInfo("1 2\n", expected="3\n", actual="2\n")
    flood = judge.run(SUM, "print('y' * 10**6)\n")
    assert flood.failure.actual == "y" * (MAX_DETAIL - 1) + "\u2026"
    assert len(json.dumps(flood.to_dict())) < 2000


def test_call_failure_reports_the_call():
    problem = Problem(id="c", source="test", prompt="", tests={"kind": "call", "fn_name": "f",
                                                               "cases": [{"args": [1, [2, 3]], "expected": 5}]})
    with Judge(workers=1) as judge:
        failure = failure_of(judge, problem, "def f(a, b):\n    return {'k': b}\n")
    assert failure == FailureInfo("f(1, [2, 3])", expected="5", actual="{'k': [2, 3]}")


def test_verdicts_written_before_failure_reports_still_load():
    old = {"status": "fail", "passed": 0, "total": 1, "error": None, "tests": [{"status": "fail", "time_s": 0.1}],
           "duration_s": 0.1, "isolation": "x", "static": []}
    assert Verdict.from_dict(old).failure is None

