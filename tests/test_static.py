"""Static-analysis feedback: the analyzer's findings, their limits, and the ``static`` reward term."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from rltf.feedback import STATIC_RULE_WEIGHTS, FeedbackConfig, ProgramSpan, token_returns
from rltf.judge import ErrorInfo, Judge, StaticFinding, Verdict
from rltf.judge.static import MAX_CHARS, MAX_DEPTH, StaticAnalyzer, analyze_one
from rltf.problems import Problem, save_problems

PROGRAM = textwrap.dedent("""\
    import os
    def solve(xs, list=None):
        unused = 3
        if xs is "a":
            return missing
            print("never")
        return sum(xs)
    def solve(xs):
        return sum(xs)
""")
EXPECTED = [  # (line, rule): one of each rule the analyzer reports
    (1, "unused-import"), (2, "shadowed-builtin"), (3, "unused-variable"), (4, "is-literal"),
    (5, "undefined-name"), (6, "unreachable"), (8, "redefinition"),
]
PROBLEM = Problem(id="sum", source="test", prompt="", entry_point="solve",
                  tests={"kind": "assert", "setup": "", "cases": ["assert solve([1, 2]) == 3"]})


def test_each_rule_is_found_on_its_line() -> None:
    found = analyze_one(PROGRAM)
    assert [(f.line, f.rule) for f in found] == EXPECTED
    assert {f.rule: f.severity for f in found}["undefined-name"] == "error"
    assert [(f.line, f.rule) for f in analyze_one("return 1\n")] == [(1, "return-outside-function")]
    assert analyze_one("def f(:\n") == []  # does not parse: the compile error blames it
    # a task that asks for a function named like a builtin (mbpp/126's `sum`) is not a shadowing
    own_sum = "def sum(a, b):\n    return a + b\n"
    assert [f.rule for f in analyze_one(own_sum)] == ["shadowed-builtin"]
    assert analyze_one(own_sum, entry_point="sum") == []


def test_pathological_programs_are_skipped_or_fail_cleanly() -> None:
    analyzer = StaticAnalyzer()
    try:
        huge = "x = [" + "1, " * MAX_CHARS + "]\n"
        (finding,) = analyzer.analyze(huge)
        assert finding.rule == "analysis-skipped" and "characters" in finding.message
        deep = "x = " + "(" * (MAX_DEPTH + 5) + "1" + ")" * (MAX_DEPTH + 5) + "\n"
        (finding,) = analyzer.analyze(deep)
        assert finding.rule == "analysis-skipped" and "nesting depth" in finding.message
        blocks = "".join("    " * i + f"if x{i}:\n" for i in range(MAX_DEPTH + 2)) + "    " * (MAX_DEPTH + 2) + "pass\n"
        assert analyzer.analyze(blocks)[0].rule == "analysis-skipped"
        impatient = StaticAnalyzer(timeout_s=1e-6)  # a worker that does not answer in time is replaced
        assert impatient.analyze(PROGRAM)[0].rule == "analysis-failed"
        impatient.timeout_s = 10.0
        assert [(f.line, f.rule) for f in impatient.analyze(PROGRAM)] == EXPECTED
        impatient.close()
        assert [(f.line, f.rule) for f in analyzer.analyze(PROGRAM)] == EXPECTED  # still serving
    finally:
        analyzer.close()


def test_the_judge_attaches_findings_to_programs_that_compile() -> None:
    with Judge(workers=1, static=True) as judge:
        verdict = judge.run(PROBLEM, PROGRAM)
        broken = judge.run(PROBLEM, "def solve(xs):\n    return sum(xs\n")
    with Judge(workers=1) as judge:
        plain = judge.run(PROBLEM, PROGRAM)
    assert verdict.status == "pass" and [(f.line, f.rule) for f in verdict.static] == EXPECTED
    assert Verdict.from_dict(verdict.to_dict()) == verdict  # findings survive the JSON round trip
    assert broken.error_category == "compile" and broken.static == ()
    assert plain.static == ()


def _char_offsets(text: str) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(len(text))]


def _line_chars(program: str, line: int) -> set[int]:
    start = sum(len(x) + 1 for x in program.split("\n")[: line - 1])
    text = program.split("\n")[line - 1]
    indent = len(text) - len(text.lstrip())
    return set(range(start + indent, start + len(text.rstrip())))


def test_each_finding_penalises_the_tokens_of_its_line() -> None:
    findings = tuple(StaticFinding(rule, "m", line) for line, rule in EXPECTED)
    verdict = Verdict("fail", 0, 1, static=findings)
    config = FeedbackConfig(baseline="none", adaptive=False, static_weight=0.2)
    returns, record = token_returns(verdict, PROGRAM, _char_offsets(PROGRAM), ProgramSpan("", 0, len(PROGRAM)),
                                    None, config)
    expected = torch.full((len(PROGRAM),), -0.3)
    for line, rule in EXPECTED:
        chars = _line_chars(PROGRAM, line)
        mark = next(m for m in record.static if m.finding.line == line)
        assert set(mark.tokens) == chars and mark.penalty == pytest.approx(-0.2 * STATIC_RULE_WEIGHTS[rule])
        expected[sorted(chars)] += mark.penalty
    assert torch.allclose(returns, expected)
    assert record.terms()["static"] == pytest.approx(sum(m.penalty * len(m.tokens) for m in record.static))
    assert record.to_dict()["static"][0]["rule"] == "unused-import"


def test_static_term_switches() -> None:
    findings = (StaticFinding("unused-import", "m", 1), StaticFinding("analysis-skipped", "m", 1, "info"))
    span, offsets = ProgramSpan("", 0, len(PROGRAM)), _char_offsets(PROGRAM)

    def marks(verdict: Verdict, **config: object) -> int:
        _, record = token_returns(verdict, PROGRAM, offsets, span, None, FeedbackConfig(baseline="none", **config))
        return len(record.static)

    passed = Verdict("pass", 1, 1, static=findings)
    assert marks(passed, static_weight=0.1) == 1  # the analyzer's own notes weigh nothing
    assert marks(passed, static_weight=0.1, static_on_pass=False) == 0
    assert marks(passed) == 0  # off by default
    assert marks(passed, static_weight=0.1, static_rules={"unused-import": 0.0}) == 0
    compile_error = Verdict("error", 0, 1, ErrorInfo("compile", "SyntaxError", "x", 3), static=findings)
    assert marks(compile_error, static_weight=0.1) == 0
    # only the generated part of a line is blamed: a prompt prefix maps to no token
    prefix = "import os\n"
    completion = PROGRAM[len(prefix):]
    _, record = token_returns(passed, completion, _char_offsets(completion), ProgramSpan(prefix, 0, len(completion)),
                              None, FeedbackConfig(baseline="none", static_weight=0.1))
    assert record.static == ()
    with pytest.raises(ValueError, match="unknown static rules"):
        FeedbackConfig(static_rules={"no-such-rule": 1.0})


def test_explain_json_shows_findings_and_the_static_term(tmp_path) -> None:
    from rltf.cli import app

    problems, program = tmp_path / "problems.jsonl", tmp_path / "prog.py"
    save_problems([PROBLEM], problems)
    program.write_text("import os\ndef solve(xs):\n    return sum(xs)\n")
    result = CliRunner().invoke(app, ["explain", "--problems", str(problems), "--problem-id", "sum",
                                      "--program-file", str(program), "--static-weight", "0.2", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["static"] == [{"rule": "unused-import", "line": 1, "message": "'os' imported but unused"}]
    blamed = [t for t, r in zip(out["tokens"], out["token_returns"], strict=True) if r < 1]
    assert "".join(blamed) == "import os"  # the pass's +1, less 0.2 x 0.25 on the finding's line
    assert out["terms"]["static"] == pytest.approx(-0.05 * len(blamed))
    assert min(out["token_returns"]) == pytest.approx(0.95)
