"""Reward functions for TRL's ``GRPOTrainer``, from Python or from TRL's CLI.

    trl grpo --reward_funcs rltf.integrations.trl.rltf_adaptive --dataset_name DIR ...
    GRPOTrainer(reward_funcs=[rltf_adaptive], ...)            # or CodeReward("coarse", judge=JudgeConfig(...))

TRL calls each reward function with the batch's prompts and completions and every other dataset
column as a keyword argument. Here the ``problem`` column (name configurable) holds each row's
canonical problem record (a dict or its JSON), :func:`dataset_rows` builds such rows, and the
completions are judged together in rltf's sandbox (a pool shared by the process:
:mod:`rltf.integrations.judging`). Rewards are sequence rewards only: ``coarse``
(-1 / -0.6 / -0.3 / +1), ``adaptive`` (failed tests -0.3 + 1.3·ρ) or ``binary``; an ``infra_error``
(the judge failed, not the program) gives None, which TRL leaves out of the reward sum.

Through TRL's ``log_metric`` hook each call also logs the verdict mix of its batch, one share per
verdict key (``rltf_adaptive/verdicts/pass``, ``…/fail``, ``…/compile``, ``…/runtime``, …, summing to
1), and through ``log_extra`` each completion's verdict (a column of TRL's completions table).

What TRL cannot take: one number per completion is all a reward function returns, so the
fine-grained term (U_global / U_line penalties on the blamed tokens), the static-analysis term and
rltf's greedy-decode baseline have no place; GRPO's group mean stands in for the baseline.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, Literal

from rltf.feedback import FeedbackConfig, sequence_reward
from rltf.integrations.judging import Judging, shared_judge
from rltf.judge import JudgeConfig, Verdict
from rltf.judge.verdict import VERDICT_KEYS
from rltf.problems import Problem
from rltf.prompts import SYSTEM, Style, user_prompt

RewardKind = Literal["coarse", "adaptive", "binary"]


def completion_text(completion: Any) -> str:
    """A TRL completion: text, or a conversation whose last message is the model's."""
    if isinstance(completion, str):
        return completion
    return str(completion[-1]["content"]) if completion else ""


def dataset_rows(problems: Sequence[Problem], style: Style = "chat") -> list[dict[str, Any]]:
    """Rows for a ``datasets.Dataset``: ``prompt`` (rltf's system and user turns for ``chat``, plain text for
    ``base``) and ``problem`` (the record as JSON, so every column has one type)."""
    rows = []
    for problem in problems:
        text = user_prompt(problem, style).text
        prompt: Any = text if style == "base" else [{"role": "system", "content": SYSTEM},
                                                     {"role": "user", "content": text}]
        rows.append({"prompt": prompt, "problem": json.dumps(problem.to_dict())})
    return rows


def verdict_shares(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """The share of each verdict key (every key, zeros included, so TRL's per-step means stay shares)."""
    counts = Counter(verdict.error_category for verdict in verdicts)
    return {key: counts[key] / max(1, len(verdicts)) for key in VERDICT_KEYS}


class CodeReward:
    """A TRL reward function: judge each completion against its row's problem, return its reward.

    ``judge``: None for the process's shared default pool, a :class:`JudgeConfig` for a shared pool
    with those settings, or a ready judge (anything with ``run_many``), which the caller closes.
    ``style``: how to read the program out of a completion; None reads each row's prompt as
    :func:`dataset_rows` writes it (messages: ``chat``, text: ``base``).
    """

    def __init__(self, kind: RewardKind = "adaptive", *, problem_column: str = "problem", style: Style | None = None,
                 judge: JudgeConfig | Judging | None = None, name: str | None = None) -> None:
        self.kind, self.problem_column, self.style, self.judge = kind, problem_column, style, judge
        self.feedback = FeedbackConfig(adaptive=kind == "adaptive", binary=kind == "binary", baseline="none")
        self.__name__ = name or f"rltf_{kind}"  # TRL logs each reward function under its __name__

    def _judging(self) -> Judging:
        if self.judge is None or isinstance(self.judge, JudgeConfig):
            return shared_judge(self.judge)
        return self.judge

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        if self.problem_column not in columns:
            raise KeyError(f"{self.__name__} reads each row's problem from the dataset column "
                           f"{self.problem_column!r} (rltf.integrations.trl.dataset_rows writes it)")
        problems = [Problem.from_dict(json.loads(r) if isinstance(r, str) else r) for r in columns[self.problem_column]]
        programs = []
        for problem, prompt, completion in zip(problems, prompts, completions, strict=True):
            text = completion_text(completion)
            style = self.style or ("base" if isinstance(prompt, str) else "chat")
            programs.append(user_prompt(problem, style).span(text).program(text))
        verdicts = self._judging().run_many(list(zip(problems, programs, strict=True)))
        self._log(verdicts, columns.get("log_metric"), columns.get("log_extra"))
        return [sequence_reward(v, self.feedback) for v in verdicts]

    def _log(self, verdicts: list[Verdict], log_metric: Callable[[str, float], None] | None,
             log_extra: Callable[[str, list], None] | None) -> None:
        """TRL 1.16 passes ``log_metric`` (a scalar, averaged per logging step and across ranks)
        and ``log_extra`` (a column of its completions table); other callers may pass neither."""
        if log_metric is not None:
            for key, share in verdict_shares(verdicts).items():
                log_metric(f"{self.__name__}/verdicts/{key}", share)
        if log_extra is not None:
            log_extra(f"{self.__name__}/verdict", [v.error_category for v in verdicts])


_DEFAULT_REWARDS = {kind: CodeReward(kind) for kind in ("adaptive", "coarse", "binary")}


def rltf_adaptive(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """rltf's adaptive reward (pass 1, failed tests -0.3 + 1.3·ρ, runtime error -0.6, compile error -1)
    by dotted path: ``trl grpo --reward_funcs rltf.integrations.trl.rltf_adaptive``."""
    return _DEFAULT_REWARDS["adaptive"](prompts, completions, **columns)


def rltf_coarse(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """rltf's coarse reward (1 / -0.3 / -0.6 / -1) by dotted path."""
    return _DEFAULT_REWARDS["coarse"](prompts, completions, **columns)


def rltf_binary(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
    """1 for a program that passes every test, else 0, by dotted path."""
    return _DEFAULT_REWARDS["binary"](prompts, completions, **columns)
