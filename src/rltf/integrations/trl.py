"""Reward functions for TRL's ``GRPOTrainer`` (``reward_funcs=[CodeReward("adaptive")]``).

TRL calls each reward function with the batch's prompts and completions and every other dataset
column as a keyword argument. Here the ``problem`` column (name configurable) holds each row's
canonical problem record (a dict or its JSON), :func:`dataset_rows` builds such rows, and the
completions are judged together in rltf's sandbox. Rewards are sequence rewards only: ``coarse``
(-1 / -0.6 / -0.3 / +1), ``adaptive`` (failed tests -0.3 + 1.3·ρ) or ``binary``; an ``infra_error``
(the judge failed, not the program) gives None, which TRL leaves out of the reward sum.

What TRL cannot take: one number per completion is all a reward function returns, so the
fine-grained term (U_global / U_line penalties on the blamed tokens), the static-analysis term and
rltf's greedy-decode baseline have no place; GRPO's group mean stands in for the baseline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from rltf.feedback import FeedbackConfig, sequence_reward
from rltf.judge import Judge, JudgeConfig
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


class CodeReward:
    """A TRL reward function: judge each completion against its row's problem, return its reward.

    One judge pool serves every call (started on the first), so sandbox servers stay warm across
    steps; ``close()`` ends it.
    """

    def __init__(self, kind: RewardKind = "adaptive", *, problem_column: str = "problem", style: Style = "chat",
                 judge: JudgeConfig | None = None) -> None:
        self.kind, self.problem_column, self.style = kind, problem_column, style
        self.feedback = FeedbackConfig(adaptive=kind == "adaptive", binary=kind == "binary", baseline="none")
        self.judge_config = judge or JudgeConfig()
        self.__name__ = f"rltf_{kind}"  # TRL logs each reward function under its __name__
        self._judge: Judge | None = None

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        records = columns[self.problem_column]
        problems = [Problem.from_dict(json.loads(r) if isinstance(r, str) else r) for r in records]
        programs = []
        for problem, completion in zip(problems, completions, strict=True):
            text = completion_text(completion)
            programs.append(user_prompt(problem, self.style).span(text).program(text))
        if self._judge is None:
            self._judge = Judge(self.judge_config)
        verdicts = self._judge.run_many(list(zip(problems, programs, strict=True)))
        return [sequence_reward(v, self.feedback) for v in verdicts]

    def close(self) -> None:
        if self._judge is not None:
            self._judge.close()
            self._judge = None
