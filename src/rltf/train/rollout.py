"""Sampling and judging: K programs per problem from the engine, each judged the moment it is
generated, gathered into one :class:`Group` per problem (what :mod:`rltf.train.rewards` scores).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from rltf.config import RolloutConfig
from rltf.feedback import ProgramSpan
from rltf.generation import Completion, Engine, SamplingParams
from rltf.judge import JudgeService, Verdict
from rltf.models import PromptCache
from rltf.problems import Problem
from rltf.seeds import stable_seed


@dataclass(frozen=True)
class Judged:
    """One completion, the program read out of it and the judge's verdict on that program."""

    completion: Completion
    span: ProgramSpan
    verdict: Verdict

    @property
    def program(self) -> str:
        return self.span.program(self.completion.text)


@dataclass(frozen=True)
class Group:
    """A problem's rollout: its greedy baseline (when the config decodes one) and its K samples."""

    problem: Problem
    greedy: Judged | None
    samples: list[Judged]


@dataclass
class Sampled:
    """What one sampling call produced: the groups, and how long generating and judging took."""

    groups: list[Group] = field(default_factory=list)
    new_tokens: int = 0
    gen_s: float = 0.0
    judge_wait_s: float = 0.0
    """Judging that generation did not hide: the wait after the last completion."""
    judge_busy_s: float = 0.0
    """All judging, hidden or not."""


class Actor:
    """Samples programs with the engine and judges each as soon as it is generated."""

    def __init__(self, engine: Engine, judge: JudgeService, config: RolloutConfig, *, greedy: bool, seed: int,
                 prompts: PromptCache, autocast: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
        self.engine, self.judge, self.config, self.prompts, self.autocast = engine, judge, config, prompts, autocast
        self.greedy, self.seed = greedy, seed

    def sample(self, problems: Sequence[Problem], step: int, rank: int = 0, ranks: int = 1) -> Sampled:
        """K samples per problem (+ a greedy baseline as sample 0 of the same request).

        With ``ranks`` data-parallel processes this one takes the ``rank``-th contiguous share of
        ``problems``, seeded as the whole call (:attr:`SamplingParams.first_prompt`): the ranks'
        groups, concatenated in rank order, are the one-process call's.
        """
        cfg, greedy = self.config, self.greedy
        seed = stable_seed(self.seed, step, *(p.id for p in problems))
        first = rank * len(problems) // ranks
        problems = problems[first : (rank + 1) * len(problems) // ranks]
        if not problems:
            return Sampled()
        busy = self.judge.busy_s
        prompts = [self.prompts(p)[0] for p in problems]
        params = SamplingParams(cfg.samples_per_problem + greedy, cfg.temperature, cfg.top_p, cfg.max_new_tokens,
                                seed, greedy_first=greedy, first_prompt=first)
        pending: dict[tuple[int, int], tuple[Completion, ProgramSpan, Future[Verdict]]] = {}

        def judge_now(i: int, j: int, completion: Completion) -> None:
            span = prompts[i].span(completion.text)
            pending[(i, j)] = (completion, span, self.judge.submit(problems[i], span.program(completion.text)))

        with self.autocast():  # the hf engine runs the learner's model
            generation = self.engine.generate(prompts, params, judge_now)
        waited = time.perf_counter()
        judged = {key: Judged(c, span, future.result()) for key, (c, span, future) in pending.items()}
        groups = [Group(problem, judged[(i, 0)] if greedy else None,
                        [judged[(i, j)] for j in range(greedy, params.n)]) for i, problem in enumerate(problems)]
        return Sampled(groups, generation.new_tokens, generation.wall_s, time.perf_counter() - waited,
                       self.judge.busy_s - busy)
