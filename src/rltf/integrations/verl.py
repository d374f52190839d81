"""rltf's judge as verl's reward: ``compute_score_batched`` for verl's batch reward manager (the whole
batch judged at once, in parallel), ``compute_score`` for its per-response (naive) managers.

    reward_model.reward_manager=batch
    custom_reward_function.path=<this file>  custom_reward_function.name=compute_score_batched
    +reward_model.reward_kwargs.reward=coarse  +reward_model.reward_kwargs.judge.workers=16

verl's ``BatchRewardManager`` decodes every response and calls ``compute_score(data_sources=...,
solution_strs=..., ground_truths=..., extra_infos=..., **reward_kwargs)`` once per batch, with
``reward_kwargs`` from ``reward_model.reward_kwargs`` (and ``custom_reward_function.reward_kwargs``,
merged in by verl's loader). Here each ``ground_truth`` is the canonical problem record (a dict or
its JSON: the parquet's ``reward_model.ground_truth``); the program is read out of the response as
rltf reads chat completions and judged in rltf's sandbox, on a pool shared by the process
(:mod:`rltf.integrations.judging`).

``reward_kwargs``: ``reward`` (``adaptive`` by default, ``coarse`` or ``binary``; a row's
``extra_info["reward"]`` overrides it), the reward values ``compile_error``, ``runtime_error``,
``failed_tests`` and ``passed`` (:class:`rltf.feedback.FeedbackConfig`'s defaults otherwise), and
``judge``, a mapping of :class:`rltf.judge.JudgeConfig` fields (``workers``, ``timeout_s``,
``tests``, ``backend``…). Other keyword arguments are verl's own (``step``, ``tokenizer``…) and unused.

Each result is a dict of numbers, which verl logs key by key: ``score``, ``pass_ratio``, ``passed``
and ``compile_error``. verl has no way to skip a sample, so an ``infra_error`` scores 0.0 with
``infra_error`` 1.0, to be filtered in the logs; token-level terms (fine-grained, static) do not fit
a per-response score.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from rltf.feedback import FeedbackConfig, sequence_reward
from rltf.integrations.judging import default_workers, shared_judge
from rltf.judge import JudgeConfig
from rltf.problems import Problem
from rltf.prompts import user_prompt

REWARD_KINDS = ("adaptive", "coarse", "binary")


def compute_score_batched(data_sources: Sequence[str], solution_strs: Sequence[str], ground_truths: Sequence[Any],
                          extra_infos: Sequence[dict | None], *, reward: str = "adaptive",
                          compile_error: float | None = None, runtime_error: float | None = None,
                          failed_tests: float | None = None, passed: float | None = None,
                          judge: Mapping[str, Any] | None = None, **verl_extras: Any) -> list[dict[str, float]]:
    """verl's batch call: one dict of numbers per response, in order."""
    values = {key: value for key, value in (("compile_error", compile_error), ("runtime_error", runtime_error),
                                            ("failed_tests", failed_tests), ("passed", passed)) if value is not None}
    problems, programs, feedback = [], [], []
    for solution, truth, extra_info in zip(solution_strs, ground_truths, extra_infos, strict=True):
        problem = Problem.from_dict(json.loads(truth) if isinstance(truth, str) else truth)
        kind = (extra_info or {}).get("reward", reward)
        if kind not in REWARD_KINDS:
            raise ValueError(f"unknown reward {kind!r} (adaptive, coarse or binary)")
        problems.append(problem)
        programs.append(user_prompt(problem, "chat").span(solution).program(solution))
        feedback.append(FeedbackConfig(adaptive=kind == "adaptive", binary=kind == "binary", baseline="none",
                                       **values))
    config = JudgeConfig(**{"workers": default_workers(), **judge}) if judge else None
    verdicts = shared_judge(config).run_many(list(zip(problems, programs, strict=True)))
    scores = []
    for verdict, row_feedback in zip(verdicts, feedback, strict=True):
        score = sequence_reward(verdict, row_feedback)
        scores.append({"score": 0.0 if score is None else score, "infra_error": float(score is None),
                       "pass_ratio": verdict.pass_ratio, "passed": float(verdict.status == "pass"),
                       "compile_error": float(verdict.error_category == "compile")})
    return scores


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **reward_kwargs: Any) -> dict[str, float]:
    """verl's per-response call (``NaiveRewardManager``, the reward loop's managers), which runs it from
    several threads at once: the shared pool gives each call its own sandbox server."""
    return compute_score_batched([data_source], [solution_str], [ground_truth], [extra_info], **reward_kwargs)[0]
