"""Rewards from unit-test feedback: coarse, adaptive and fine-grained per-token returns (RLTF).

One pure function, :func:`token_returns`, turns a judge :class:`~rltf.judge.verdict.Verdict` into
per-token returns ``r_t = A(W) - λ·κ·m_t`` over the generated tokens of one completion, where

* ``A(W) = (R(W) - b)·s`` is the sequence advantage: ``R`` the coarse reward (compile -1, runtime
  -0.6, failed tests -0.3, pass +1), the adaptive one (failed tests earn ``-0.3 + 1.3·pass_ratio``)
  or a binary one; ``b`` the baseline (:class:`FeedbackConfig.baseline`); ``s`` 1, or GRPO's
  ``1 / std`` of the group's rewards;
* ``m_t`` marks the tokens that the fine-grained category blames: every program token for
  ``global`` errors, the tokens of the failing line for ``line`` errors, none for ``ignore``;
* ``κ`` is the length normaliser (see :class:`FeedbackConfig.normaliser`);
* the token weight ``c_t`` of the original code (a frozen CodeRL critic) is 1: no critic is shipped;
* beyond the paper, an optional ``static`` term (:func:`static_marks`) takes ``μ·w_rule`` from the
  tokens of each line a static-analysis finding names.

The classification follows the original RLTF code (``program_feedback.py``) with its bugs fixed:
lines are found by the judge's line number rather than by text search, timeouts are ``global``
rather than silently ignored, and Python 3.10+ error messages are mapped by meaning. See
``docs/rewards.md`` for the tables and the full list of deviations.
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from rltf.judge.static import RULES as STATIC_RULES
from rltf.judge.verdict import StaticFinding, Verdict

if TYPE_CHECKING:
    import torch

Category = Literal["global", "line", "ignore"]
Normaliser = Literal["original", "intended"]
BaselineKind = Literal["greedy", "rloo", "grpo", "none"]
Overlong = Literal["none", "soft", "mask"]
BASELINES = get_args(BaselineKind)
STD_EPS = 1e-4
"""Added to the group's reward std before dividing (as TRL's GRPO does): a group whose rewards are all
equal gets advantage 0, not a division by zero."""
Offsets = Sequence[tuple[int, int]]

SYNTAX_TYPES = ("SyntaxError", "IndentationError", "TabError")

# Compile errors the original ignores: their reported line is unreliable (indentation mix-ups) or the
# fault spans many lines (an unterminated docstring). Old and 3.10+ spellings.
IGNORED_SYNTAX = (
    "inconsistent use of tabs and spaces in indentation",
    "unindent does not match any outer indentation level",
    "EOF while scanning triple-quoted string literal",
    "unterminated triple-quoted string literal",
    "duplicate argument",
    "import * only allowed at module level",
)
# The original's "invalid syntax / unexpected EOF while parsing / EOL while scanning string literal"
# family, global on the last line (a cut-off program) and line elsewhere. 3.10+ split plain
# "invalid syntax" into specific messages; these are the ones a truncated program produces.
LAST_LINE_SYNTAX = (
    "invalid syntax",  # also "invalid syntax. Perhaps you forgot a comma?"
    "unexpected EOF while parsing",
    "EOL while scanning string literal",
    "unterminated string literal",  # 3.10+ for EOL
    "expected ':'",  # 3.10+; was "invalid syntax"
    "expected 'except' or 'finally' block",  # 3.10+; was "invalid syntax" / "unexpected EOF"
)
# 3.10+ reports an unclosed bracket at the bracket's line once the parser reaches the end of the
# program, whether the program was cut off inside the brackets (global, as the original's "unexpected
# EOF while parsing") or a bracket was left open mid-program (line: see _cut_off).
EOF_SYNTAX = "was never closed"
CLOSERS = {"(": ")", "[": "]", "{": "}"}
MISSING_BLOCK = re.compile(r"expected an indented block after .* on line (\d+)")
GLOBAL_TYPES = ("RecursionError", "MemoryError")
GLOBAL_PHASES = ("timeout", "memory", "output_limit")
LINE_BREAK = re.compile(r"\r\n|\r|\n")  # where Python's tokenizer ends a source line
STATIC_RULE_WEIGHTS = {
    "undefined-name": 1.0, "return-outside-function": 1.0,  # the program cannot work as written
    "unreachable": 0.5, "is-literal": 0.5, "redefinition": 0.5, "unused-variable": 0.5,  # likely a slip
    "shadowed-builtin": 0.25, "unused-import": 0.25,  # style, harmless on its own
}
"""The default per-rule multiplier of ``static_weight``: errors count fully, slips half, style a quarter."""


@dataclass(frozen=True)
class ProgramSpan:
    """Where a program comes from: ``program = prefix + completion[start:end]``.

    Program character ``p >= len(prefix)`` is completion character ``start + p - len(prefix)``;
    characters of ``prefix`` (e.g. a HumanEval prompt) were not generated and map to no token.
    """

    prefix: str
    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad program span [{self.start}, {self.end})")

    def program(self, completion: str) -> str:
        return self.prefix + completion[self.start : self.end]

    def completion_index(self, p: int) -> int | None:
        """Completion index of program character ``p``; None inside the prefix."""
        return None if p < len(self.prefix) else self.start + p - len(self.prefix)


@dataclass(frozen=True)
class FeedbackConfig:
    """Every constant of the reward. Defaults are the released RLTF run (adaptive + fine-grained,
    λ = 0.3, greedy baseline, the original's effective κ = 1).

    ``binary`` replaces the four coarse values with pass = 1, anything else = 0 (for comparison with
    pass/fail rewards); ``adaptive`` then gives failed tests their pass ratio.

    ``normaliser``: ``"original"`` is κ = 1, what the released code computes (its
    ``len(mask) / len(mask == 1)`` divides two equal lengths), so each marked token loses exactly λ
    and returns stay in [-2.3, 2]. ``"intended"`` is κ = T / |{t: m_t = 1}| with T the number of
    completion tokens: the penalties on the marked tokens sum to λ·T whatever the span's length, so
    a line error weighs as much in the token-mean loss as a global one. A 1-token span in a
    500-token completion then gets a return of about -150 on that token, hence not the default.

    ``baseline`` is the advantage estimator, each composed with the fine-grained term per token:

    * ``greedy``: R(W) - R(greedy decode of the same problem). **The paper's** (with adaptive +
      fine-grained feedback: the defaults);
    * ``rloo``: R(W) - the mean R of the problem's other K - 1 samples (leave-one-out);
    * ``grpo``: R(W) - the mean R of all K samples, divided by their standard deviation when
      ``scale_std`` (GRPO; without it, Dr. GRPO's unscaled form);
    * ``none``: R(W) itself (plain REINFORCE).

    Infra errors (the judge failed, not the program) have no reward: :func:`token_returns` returns
    None for them and for baselines that contain no usable verdict; callers drop the sample.
    """

    compile_error: float = -1.0
    runtime_error: float = -0.6  # runtime errors, timeouts, memory/output limits, killed programs
    failed_tests: float = -0.3
    passed: float = 1.0
    adaptive: bool = True
    binary: bool = False
    fine_grained: bool = True
    fine_weight: float = 0.3  # λ
    normaliser: Normaliser = "original"
    baseline: BaselineKind = "greedy"
    scale_std: bool = False
    """``grpo`` only: divide the advantage by the group's reward std (sample std, + ``STD_EPS``)."""
    static_weight: float = 0.0
    """μ of the ``static`` term (0: off; the verdicts need ``judge.static``): each static finding
    takes ``μ · static_rules[rule]`` from every token of its line, as U_line does for an error."""
    static_rules: dict[str, float] = field(default_factory=lambda: dict(STATIC_RULE_WEIGHTS))
    static_on_pass: bool = True
    """Apply the static term to passing programs too (an unused import in a correct program)."""
    overlong: Overlong = "none"
    """What a completion near or at the token limit gets (DAPO, arXiv 2503.14476): ``soft`` adds the
    soft overlong punishment to every token, ``overlong_weight · ((L - B) - n) / B`` for a completion
    of n tokens within the last B = ``overlong_buffer`` of the limit L (``rollout.max_new_tokens``),
    ``-overlong_weight`` at the limit, outside the baseline like the static term; ``mask`` trains on
    no completion the limit cut (overlong filtering); ``none``: the original's."""
    overlong_buffer: int = 64
    overlong_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.normaliser not in ("original", "intended"):
            raise ValueError(f"unknown normaliser {self.normaliser!r}")
        if self.baseline not in BASELINES:
            raise ValueError(f"unknown baseline {self.baseline!r} (one of {', '.join(BASELINES)})")
        if self.scale_std and self.baseline != "grpo":
            raise ValueError("scale_std applies to baseline 'grpo' only")
        if self.fine_weight < 0 or self.static_weight < 0 or self.overlong_weight < 0:
            raise ValueError("fine_weight, static_weight and overlong_weight must be >= 0")
        if self.overlong not in get_args(Overlong) or self.overlong_buffer < 1:
            raise ValueError(f"overlong must be one of {', '.join(get_args(Overlong))} with overlong_buffer >= 1")
        if unknown := set(self.static_rules) - set(STATIC_RULES):
            raise ValueError(f"unknown static rules {', '.join(sorted(unknown))} (known: {', '.join(STATIC_RULES)})")

    @property
    def reward_term(self) -> str:
        """The name of the sequence-level term in logs: ``adaptive``, ``binary`` or ``coarse``."""
        return "adaptive" if self.adaptive else "binary" if self.binary else "coarse"


@dataclass(frozen=True)
class Fault:
    """Where the fine-grained term puts the blame: the category and, for ``line``, the program line."""

    category: Category | None
    line: int | None = None
    keep_indent: bool = False


@dataclass(frozen=True)
class FeedbackRecord:
    """What :func:`token_returns` applied, for logs: ``r_t = (reward - baseline)·scale + fine·m_t``.

    ``span`` is the blamed ``[start, end)`` of the completion (None when nothing is blamed) and
    ``tokens`` the indices of the marked tokens; ``fine`` is the signed per-token term (-λ·κ, or 0
    when fine-grained feedback is off or no token is marked); ``scale`` is 1 except for GRPO's
    std-scaled advantage.
    """

    category: Category | None
    span: tuple[int, int] | None
    tokens: tuple[int, ...]
    reward_term: str
    reward: float
    fine: float
    baseline: float
    scale: float = 1.0
    static: tuple[StaticMark, ...] = ()
    overlong: float = 0.0
    """The soft overlong punishment on every token (0 unless ``overlong: soft``)."""

    @property
    def advantage(self) -> float:
        """The sequence part of every token's return."""
        return (self.reward - self.baseline) * self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "span": list(self.span) if self.span else None,
                "tokens": list(self.tokens), "terms": self.terms(), "static": [m.to_dict() for m in self.static]}

    def terms(self) -> dict[str, float]:
        """The sequence reward, the per-token fine term, the baseline, and ``static``: the static
        term summed over all tokens (0 when off or nothing was found)."""
        return {self.reward_term: self.reward, "fine": self.fine, "baseline": self.baseline,
                "static": sum(m.penalty * len(m.tokens) for m in self.static), "overlong": self.overlong}


@dataclass(frozen=True)
class StaticMark:
    """One static finding as the ``static`` term applied it: ``penalty`` on each of ``tokens``."""

    finding: StaticFinding
    penalty: float
    tokens: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.finding.rule, "line": self.finding.line, "message": self.finding.message,
                "penalty": self.penalty, "tokens": list(self.tokens)}


def sequence_reward(verdict: Verdict, config: FeedbackConfig) -> float | None:
    """R(W): the coarse, adaptive or binary reward of one verdict; None for an infra error."""
    if verdict.status == "infra_error":
        return None
    failed, passed = (0.0, 1.0) if config.binary else (config.failed_tests, config.passed)
    if verdict.status == "pass":
        return passed
    if verdict.status == "fail":
        # The judge runs every test for fail verdicts, so passed/total is the ratio over all tests.
        return failed + (passed - failed) * verdict.pass_ratio if config.adaptive else failed
    if config.binary:
        return 0.0
    compile_error = verdict.error is not None and verdict.error.phase == "compile"
    return config.compile_error if compile_error else config.runtime_error


def baseline_reward(baseline: float | Verdict | Sequence[Verdict] | None,
                    config: FeedbackConfig) -> tuple[float, float] | None:
    """``(b, s)`` of the advantage ``(R(W) - b)·s`` for ``config.baseline``; None when no usable
    baseline verdict exists.

    ``greedy`` takes the greedy decode's verdict (or its reward); ``rloo`` the verdicts of the
    problem's other samples, ``grpo`` those of all its samples, the sample itself included (or,
    for either, their mean reward, with s = 1); infra errors are left out of means and stds.
    ``none`` takes None and gives (0, 1). Mismatches raise, because a silently missing baseline
    shifts every return of the sample.
    """
    kind = config.baseline
    if kind == "none":
        if baseline is not None:
            raise ValueError("baseline 'none' takes no baseline")
        return 0.0, 1.0
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return float(baseline), 1.0
    if kind == "greedy":
        if not isinstance(baseline, Verdict):
            raise TypeError("baseline 'greedy' needs the greedy decode's Verdict or its reward")
        reward = sequence_reward(baseline, config)
        return None if reward is None else (reward, 1.0)
    if isinstance(baseline, Verdict) or not isinstance(baseline, Sequence):
        raise TypeError(f"baseline {kind!r} needs a sequence of Verdicts or their mean reward")
    rewards = [r for r in (sequence_reward(v, config) for v in baseline) if r is not None]
    if not rewards:
        return None
    mean = sum(rewards) / len(rewards)
    if not config.scale_std:
        return mean, 1.0
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (len(rewards) - 1)) if len(rewards) > 1 else 0.0
    return mean, 1.0 / (std + STD_EPS)


def line_bounds(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every line of ``text`` without its line break, split as Python splits source."""
    bounds, start = [], 0
    for brk in LINE_BREAK.finditer(text):
        bounds.append((start, brk.start()))
        start = brk.end()
    bounds.append((start, len(text)))
    return bounds


def _cut_off(program: str) -> bool:
    """True when the program parses once its open brackets are closed at the end (with a ``0`` for a
    dangling operator): it was cut off inside them. A bracket left open mid-program is followed by
    statements that no closing bracket makes parse."""
    opened: list[str] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(program).readline):
            if token.type == tokenize.OP and token.string in CLOSERS:
                opened.append(CLOSERS[token.string])
            elif token.type == tokenize.OP and token.string in CLOSERS.values() and opened:
                opened.pop()
    except (tokenize.TokenError, SyntaxError):
        pass  # the end of the program inside the brackets
    closers = "".join(reversed(opened))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for tail in (closers, "0" + closers):
            try:
                ast.parse(program.rstrip() + tail)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
            return True
    return False


def _is_code(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def classify(verdict: Verdict, program: str) -> Fault:
    """The fine-grained category of a verdict (U_global / U_line / U_ignore).

    Wrong answers, passes and infra errors get category None (no fine term). An error without a
    program line (a crash in test code, a signal, an early exit) cannot be localised: ``ignore``.
    """
    error = verdict.error
    if verdict.status != "error":
        return Fault(None)
    if error is None:
        return Fault("ignore")
    if error.phase in GLOBAL_PHASES or error.type in GLOBAL_TYPES:
        # Resource exhaustion is a property of the algorithm, not of the line that hit the limit.
        return Fault("global")
    if error.phase == "killed" or error.line is None:
        return Fault("ignore")
    if error.phase != "compile":
        return Fault("line", error.line)
    if error.type not in SYNTAX_TYPES:
        return Fault("ignore")
    message = error.message
    if any(text in message for text in IGNORED_SYNTAX):
        return Fault("ignore")
    if EOF_SYNTAX in message:
        return Fault("global") if _cut_off(program) else Fault("line", error.line)
    lines = LINE_BREAK.split(program)
    if missing := MISSING_BLOCK.search(message):
        if not any(_is_code(text) for text in lines[int(missing.group(1)):]):  # the program ends at a header
            return Fault("global")
    elif any(text in message for text in LAST_LINE_SYNTAX):
        last = max((i for i, text in enumerate(lines, 1) if text.strip()), default=0)
        if error.line >= last:
            return Fault("global")
    return Fault("line", error.line, keep_indent="unexpected indent" in message)


def line_span(program: str, fault: Fault, span: ProgramSpan) -> tuple[int, int] | None:
    """The completion characters that a ``line`` fault blames.

    The line is taken without its line break and without surrounding whitespace, except that
    "unexpected indent" keeps the leading whitespace, which is the error. Only its generated part
    counts; None when the line is missing, blank or lies wholly in the prefix.
    """
    bounds = line_bounds(program)
    if fault.line is None or not 1 <= fault.line <= len(bounds):
        return None
    start, end = bounds[fault.line - 1]
    text = program[start:end]
    end -= len(text) - len(text.rstrip())
    if not fault.keep_indent:
        start += len(text) - len(text.lstrip())
    start = max(start, len(span.prefix))
    if start >= end:
        return None
    first = span.start + start - len(span.prefix)
    return first, first + end - start


def tokens_in(offsets: Offsets, chars: tuple[int, int]) -> list[int]:
    """Indices of the tokens whose characters overlap ``[start, end)``.

    A zero-width token (one that only starts a multi-byte character, or a special token) belongs to
    the character at its position, so both halves of a split character are blamed together.
    """
    start, end = chars
    return [i for i, (a, b) in enumerate(offsets) if a < end and max(b, a + 1) > start]


def token_returns(
    verdict: Verdict,
    completion: str,
    offsets: Offsets,
    span: ProgramSpan,
    baseline: float | Verdict | Sequence[Verdict] | None,
    config: FeedbackConfig,
    max_new_tokens: int | None = None,
) -> tuple[torch.Tensor, FeedbackRecord] | None:
    """Per-token returns ``r_t = (R(W) - b)·s - λ·κ·m_t`` for one completion (see :func:`baseline_reward`),
    plus the static and overlong terms (the latter needs the completion's token limit, ``max_new_tokens``).

    ``offsets[t]`` is the ``[start, end)`` of ``completion`` that generated token ``t`` produced;
    ``span`` says which part of ``completion`` is the judged program. Returns a float32 tensor with
    one return per token and what was applied, or None when the verdict or the baseline is an infra
    error (the sample must be dropped, not penalised).
    """
    import torch  # here, not at the top: the config (FeedbackConfig) loads without torch

    reward = sequence_reward(verdict, config)
    found = baseline_reward(baseline, config)
    if reward is None or found is None:
        return None
    base, scale = found
    program = span.program(completion)
    fault = classify(verdict, program)
    chars: tuple[int, int] | None = None
    if fault.category == "global":
        chars = (span.start, span.end) if span.end > span.start else None
    elif fault.category == "line":
        chars = line_span(program, fault, span)
    category = "ignore" if fault.category == "line" and chars is None else fault.category
    marked = tokens_in(offsets, chars) if chars else []
    fine = 0.0
    if config.fine_grained and marked:
        kappa = len(offsets) / len(marked) if config.normaliser == "intended" else 1.0
        fine = -config.fine_weight * kappa
    returns = torch.full((len(offsets),), (reward - base) * scale, dtype=torch.float32)
    if fine:
        returns[marked] += fine
    static = static_marks(verdict, program, offsets, span, config)
    for mark in static:
        returns[list(mark.tokens)] += mark.penalty
    overlong = overlong_penalty(len(offsets), max_new_tokens, config) if config.overlong == "soft" else 0.0
    returns += overlong
    return returns, FeedbackRecord(category, chars, tuple(marked), config.reward_term, reward, fine, base, scale,
                                   static, overlong)


def overlong_penalty(length: int, limit: int | None, config: FeedbackConfig) -> float:
    """DAPO's soft overlong punishment of a completion of ``length`` tokens under a limit of ``limit``:
    0 up to ``limit - overlong_buffer`` tokens, then falling linearly to ``-overlong_weight`` at the limit."""
    if not limit:
        return 0.0
    start = limit - config.overlong_buffer
    if length <= start:
        return 0.0
    return -config.overlong_weight * min(1.0, (length - start) / config.overlong_buffer)


def static_marks(verdict: Verdict, program: str, offsets: Offsets, span: ProgramSpan,
                 config: FeedbackConfig) -> tuple[StaticMark, ...]:
    """The ``static`` term: each finding's penalty on the generated tokens of its line (the same
    span rule as U_line). Nothing for a program that does not compile (its error already blames
    it), for a pass unless ``static_on_pass``, or for rules weighted 0 (including the analyzer's own
    ``analysis-skipped`` / ``analysis-failed`` notes)."""
    if not config.static_weight or verdict.error_category == "compile" or (
            verdict.status == "pass" and not config.static_on_pass):
        return ()
    marks = []
    for finding in verdict.static:
        weight = config.static_rules.get(finding.rule, 0.0)
        chars = line_span(program, Fault("line", finding.line), span) if weight else None
        if chars and (tokens := tokens_in(offsets, chars)):
            marks.append(StaticMark(finding, -config.static_weight * weight, tuple(tokens)))
    return tuple(marks)
