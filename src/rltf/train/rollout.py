"""The actor: sample K programs per problem with the engine, judge each as it is generated, and
turn each problem's :class:`Group` of verdicts into buffer samples with their baselines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rltf.buffer import Sample
from rltf.config import TrainConfig
from rltf.feedback import ProgramSpan, token_returns
from rltf.generation import Completion, Engine, SamplingParams
from rltf.judge import Judge, JudgeConfig, Verdict, open_judge
from rltf.judge.verdict import PHASES
from rltf.models import Policy
from rltf.problems import Problem
from rltf.prompts import Prompt

VERDICT_KEYS = ("pass", "fail", *PHASES, "infra_error")
"""The verdict mix: passes, wrong answers, each error phase and judge failures (``Verdict.error_category``)."""


# --------------------------------------------------------------------------- judging in the background


class JudgeService:
    """``judge.workers`` sandbox servers judging one program at a time each, as programs arrive.

    A completion is judged as soon as the engine finishes it (:meth:`submit` returns a future), so
    judging hides behind generation, and a program that runs into its time limit occupies one server
    for that long without holding back the others. Each :class:`Judge` (not thread-safe) is used by
    one thread at a time: a thread takes a free judge from the queue and puts it back. With
    ``judge.backend: ray`` each is a one-actor :class:`rltf.judge.ray_pool.RayJudge`.
    """

    def __init__(self, config: JudgeConfig) -> None:
        self._all: list[Judge] = []
        try:
            for _ in range(max(1, config.workers)):
                self._all.append(open_judge(dataclasses.replace(config, workers=1)))
        except BaseException:
            for judge in self._all:
                judge.close()
            raise
        self._free: queue.SimpleQueue[Judge] = queue.SimpleQueue()
        for judge in self._all:
            self._free.put(judge)
        self._pool = ThreadPoolExecutor(max_workers=len(self._all), thread_name_prefix="rltf-judge")
        self._lock = threading.Lock()
        self.isolation = self._all[0].isolation
        self.busy_s = 0.0

    def _run(self, problem: Problem, program: str) -> Verdict:
        judge = self._free.get()
        started = time.perf_counter()
        try:
            return judge.run(problem, program)
        finally:
            self._free.put(judge)
            with self._lock:
                self.busy_s += time.perf_counter() - started

    def submit(self, problem: Problem, program: str) -> Future[Verdict]:
        return self._pool.submit(self._run, problem, program)

    def run_many(self, pairs: Iterable[tuple[Problem, str]]) -> list[Verdict]:
        """Blocking, like :meth:`Judge.run_many` (what :func:`rltf.evaluation.evaluate` calls)."""
        return [future.result() for future in [self.submit(p, program) for p, program in pairs]]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for judge in self._all:
            judge.close()

    def __enter__(self) -> JudgeService:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- the actor


@dataclass
class Rollout:
    """What one actor call produced: buffer samples and the numbers logged about them."""

    samples: list[Sample] = field(default_factory=list)
    verdicts: Counter[str] = field(default_factory=Counter)
    programs: int = 0
    greedy_passed: int = 0
    greedy: int = 0
    rewards: list[float] = field(default_factory=list)
    terms: dict[str, list[float]] = field(default_factory=dict)
    token_returns: list[float] = field(default_factory=list)
    dropped: int = 0
    groups: int = 0
    groups_without_signal: int = 0
    """Groups whose token returns were all zero (with dynamic sampling their samples are dropped)."""
    new_tokens: int = 0
    gen_s: float = 0.0
    judge_wait_s: float = 0.0
    judge_busy_s: float = 0.0
    static_findings: Counter[str] = field(default_factory=Counter)
    program_records: list[dict[str, Any]] = field(default_factory=list)
    """Every judged program (greedy baselines too) with its verdict: the ``samples.jsonl`` lines."""

    def metrics(self) -> dict[str, Any]:
        """``time_judge_s`` is the judging that generation did not hide (waiting after the last
        ``generate``); ``time_judge_busy_s`` all of it. ``reward_fine`` and ``reward_static`` are
        the fine and static terms' shares of the mean token return; ``static_findings`` counts the
        penalised findings by rule."""
        programs = max(self.programs, 1)
        return {
            "reward_mean": mean_or_none(self.rewards),
            **{f"reward_{term}": mean_or_none(values) for term, values in self.terms.items()},
            "return_mean": mean_or_none(self.token_returns),
            "sample_pass_rate": self.verdicts["pass"] / programs if self.programs else None,
            "greedy_pass_rate": self.greedy_passed / self.greedy if self.greedy else None,
            "verdicts": {k: self.verdicts[k] for k in VERDICT_KEYS},
            **({"static_findings": dict(self.static_findings)} if self.static_findings else {}),
            "samples_new": len(self.samples),
            "samples_dropped_infra": self.dropped,
            "groups": self.groups,
            "groups_without_signal": self.groups_without_signal,
            "gen_tokens": self.new_tokens,
            "time_gen_s": self.gen_s,
            "time_judge_s": self.judge_wait_s,
            "time_judge_busy_s": self.judge_busy_s,
            "tokens_per_s_gen": self.new_tokens / self.gen_s if self.gen_s else None,
        }

    def merge(self, other: Rollout) -> None:
        """Add another call's output (dynamic sampling draws more problems within one step)."""
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if isinstance(mine, dict) and not isinstance(mine, Counter):
                for key, values in theirs.items():
                    mine.setdefault(key, []).extend(values)
            else:
                setattr(self, f.name, mine + theirs)


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def stable_seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


class Prompts:
    """Each problem's prompt and its token ids as generation sees them, built once per run."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._cache: dict[str, tuple[Prompt, tuple[int, ...]]] = {}

    def __call__(self, problem: Problem) -> tuple[Prompt, tuple[int, ...]]:
        if problem.id not in self._cache:
            prompt = self.policy.prompt(problem)
            self._cache[problem.id] = (prompt, tuple(self.policy.prompt_ids([prompt])[0]))
        return self._cache[problem.id]


@dataclass(frozen=True)
class Judged:
    """One completion, the program read out of it and the judge's verdict on that program."""

    completion: Completion
    span: ProgramSpan
    verdict: Verdict


@dataclass(frozen=True)
class Group:
    """A problem's rollout: its greedy baseline (when the config decodes one) and its K samples."""

    problem: Problem
    greedy: Judged | None
    samples: list[Judged]


def baselines(group: Group, kind: str) -> list[Any]:
    """What each sample of ``group`` is compared with (:func:`rltf.feedback.token_returns`'s ``baseline``):
    the group's own greedy verdict, the verdicts of its other K - 1 samples (``rloo``), of all its K
    samples (``grpo``), or None."""
    verdicts = [s.verdict for s in group.samples]
    if kind == "greedy":
        return [group.greedy.verdict if group.greedy else None] * len(verdicts)
    if kind == "rloo":
        return [verdicts[:j] + verdicts[j + 1:] for j in range(len(verdicts))]
    if kind == "grpo":
        return [verdicts] * len(verdicts)
    return [None] * len(verdicts)


class Actor:
    """Samples programs with the engine, judges each as soon as it is generated, and turns the
    verdicts into buffer samples."""

    def __init__(self, engine: Engine, judge: JudgeService, config: TrainConfig, prompts: Prompts,
                 autocast: Callable[[], contextlib.AbstractContextManager[Any]]) -> None:
        self.engine, self.judge, self.config, self.prompts, self.autocast = engine, judge, config, prompts, autocast

    def rollout(self, problems: Sequence[Problem], step: int, rank: int = 0, ranks: int = 1) -> Rollout:
        """K samples per problem (+ a greedy baseline as sample 0 of the same request).

        With ``ranks`` data-parallel processes this one takes the ``rank``-th contiguous share of
        ``problems``, seeded as the whole call (:attr:`SamplingParams.first_prompt`): the ranks'
        rollouts, merged in rank order, are the one-process rollout of all of them.
        """
        cfg, fb = self.config.rollout, self.config.feedback
        greedy = fb.baseline == "greedy"
        rollout = Rollout()
        busy0 = self.judge.busy_s
        seed = stable_seed(self.config.seed, step, *(p.id for p in problems))
        first = rank * len(problems) // ranks
        problems = problems[first : (rank + 1) * len(problems) // ranks]
        if not problems:
            return rollout
        prompts = [self.prompts(p)[0] for p in problems]
        params = SamplingParams(cfg.samples_per_problem + greedy, cfg.temperature, cfg.top_p, cfg.max_new_tokens,
                                seed, greedy_first=greedy, first_prompt=first)
        pending: dict[tuple[int, int], tuple[Completion, ProgramSpan, Future[Verdict]]] = {}

        def judge_now(i: int, j: int, completion: Completion) -> None:
            span = prompts[i].span(completion.text)
            pending[(i, j)] = (completion, span, self.judge.submit(problems[i], span.program(completion.text)))

        with self.autocast():  # the hf engine runs the learner's model
            generation = self.engine.generate(prompts, params, judge_now)
        rollout.gen_s, rollout.new_tokens = generation.wall_s, generation.new_tokens
        waited = time.perf_counter()
        judged = {key: Judged(c, span, future.result()) for key, (c, span, future) in pending.items()}
        rollout.judge_wait_s = time.perf_counter() - waited
        rollout.judge_busy_s = self.judge.busy_s - busy0
        groups = [Group(problem, judged[(i, 0)] if greedy else None,
                        [judged[(i, j)] for j in range(greedy, params.n)]) for i, problem in enumerate(problems)]
        for group in groups:
            self._score(group, rollout, step)
        return rollout

    def _score(self, group: Group, rollout: Rollout, step: int) -> None:
        fb = self.config.feedback
        if group.greedy is not None:
            rollout.greedy += 1
            rollout.greedy_passed += group.greedy.verdict.status == "pass"
        for j, judged in enumerate(([group.greedy] if group.greedy else []) + group.samples):
            verdict = judged.verdict
            rollout.program_records.append({
                "step": step + 1, "problem_id": group.problem.id, "greedy": group.greedy is not None and j == 0,
                "program": judged.span.program(judged.completion.text), "status": verdict.status,
                "category": verdict.error_category, "passed": verdict.passed, "total": verdict.total,
                "policy_version": judged.completion.policy_version})
        prompt_ids = self.prompts(group.problem)[1]
        rollout.groups += 1
        first = len(rollout.samples)
        for sample, baseline in zip(group.samples, baselines(group, fb.baseline)):
            completion, verdict = sample.completion, sample.verdict
            rollout.programs += 1
            rollout.verdicts[verdict.error_category] += 1
            if not completion.token_ids:
                continue
            result = token_returns(verdict, completion.text, completion.offsets, sample.span, baseline, fb)
            if result is None:
                rollout.dropped += 1
                continue
            returns, record = result
            values = returns.tolist()
            rollout.rewards.append(record.reward)
            rollout.terms.setdefault(record.reward_term, []).append(record.reward)
            rollout.terms.setdefault("fine", []).append(record.fine * len(record.tokens) / len(values))
            if fb.static_weight:
                rollout.terms.setdefault("static", []).append(record.terms()["static"] / len(values))
                rollout.static_findings.update(m.finding.rule for m in record.static)
            rollout.terms.setdefault("baseline", []).append(record.baseline)
            rollout.terms.setdefault("advantage", []).append(record.advantage)
            rollout.token_returns.extend(values)
            rollout.samples.append(Sample(
                group.problem.id, prompt_ids, completion.token_ids, tuple(values),
                {"status": verdict.status, "category": verdict.error_category, "passed": verdict.passed,
                 "total": verdict.total}, record.reward, completion.policy_version, logprobs=completion.logprobs))
        if not any(r for s in rollout.samples[first:] for r in s.returns):
            rollout.groups_without_signal += 1
            if self.config.rollout.dynamic_sampling:
                del rollout.samples[first:]

