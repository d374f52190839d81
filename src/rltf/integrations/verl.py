"""A ``compute_score`` for verl's reward managers (``custom_reward_function.path`` = this file,
``name`` = ``compute_score``).

verl's naive reward manager calls ``compute_score(data_source=..., solution_str=..., ground_truth=...,
extra_info=...)`` once per response, with the response decoded to text. Here ``ground_truth`` is
the canonical problem record (a dict or its JSON: put it in the parquet's ``reward_model.
ground_truth``); the program is read out of the response as rltf reads chat completions, judged in
rltf's sandbox, and scored with the ``extra_info["reward"]`` kind (``adaptive`` by default,
``coarse`` or ``binary``). The result is a dict of numbers, which verl logs key by key: ``score``,
``pass_ratio``, ``passed`` and ``compile_error``. verl has no way to skip a sample, so an
``infra_error`` scores 0.0 with ``infra_error`` 1.0, to be filtered in the logs; token-level terms
(fine-grained, static) do not fit a per-response score.
"""

from __future__ import annotations

import atexit
import json
from typing import Any

from rltf.feedback import FeedbackConfig, sequence_reward
from rltf.judge import Judge
from rltf.problems import Problem
from rltf.prompts import user_prompt

_judge: Judge | None = None


def _shared_judge() -> Judge:
    """One warm sandbox pool per process (verl calls once per response, sometimes from threads:
    the pool is not shared across threads, so each call holds it alone)."""
    global _judge
    if _judge is None:
        _judge = Judge(workers=1)
        atexit.register(_judge.close)
    return _judge


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **_: Any) -> dict[str, float]:
    """verl's call; newer managers also pass ``step=`` and ``tokenizer=``, which are not needed."""
    record = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    problem = Problem.from_dict(record)
    kind = (extra_info or {}).get("reward", "adaptive")
    if kind not in ("adaptive", "coarse", "binary"):
        raise ValueError(f"unknown reward {kind!r} (adaptive, coarse or binary)")
    program = user_prompt(problem, "chat").span(solution_str).program(solution_str)
    verdict = _shared_judge().run(problem, program)
    feedback = FeedbackConfig(adaptive=kind == "adaptive", binary=kind == "binary", baseline="none")
    reward = sequence_reward(verdict, feedback)
    return {"score": 0.0 if reward is None else reward, "infra_error": float(reward is None),
            "pass_ratio": verdict.pass_ratio, "passed": float(verdict.status == "pass"),
            "compile_error": float(verdict.error_category == "compile")}
