"""Online RLTF training: one process, a generation engine as actor and the policy as learner.

Each optimizer step the engine samples K programs (plus one greedy baseline) for a few training
problems; every completion goes to the judge the moment it is finished, so judging hides behind
generation; per-token returns from :mod:`rltf.feedback` turn verdicts into :class:`~rltf.buffer.Sample`
records that enter the online buffer every ``update_freq`` steps. The update mixes a token-weighted
policy-gradient term on buffer samples with supervised cross-entropy on reference solutions; then the
engine takes the new weights (every ``engine.sync_every`` steps).

Unlike the original (actors reloading learner checkpoints from disk every 600 s, so samples were up
to tens of steps stale), the engine is synced in memory, and a sample's ``policy_version`` records
the weights the engine actually served when it sampled. Checkpoints are written to a temporary directory and
renamed, so a run killed at any moment resumes from its last complete step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import queue
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltf.buffer import OnlineBuffer, Sample
from rltf.config import TrainConfig, save_config
from rltf.feedback import ProgramSpan, token_returns
from rltf.generation import Completion, Engine, SamplingParams, make_engine
from rltf.judge import Judge, JudgeConfig, Verdict
from rltf.judge.verdict import PHASES
from rltf.models import DEFAULT_MODEL, Policy, embedded_gguf, merged, set_threads
from rltf.problems import Problem, load_problems
from rltf.prompts import Prompt

METRICS, CONFIG, CHECKPOINTS, EVAL_DIR = "metrics.jsonl", "config.yaml", "checkpoints", "eval"
VERDICT_KEYS = ("pass", "fail", *PHASES, "infra_error")
"""The verdict mix: passes, wrong answers, each error phase and judge failures (``Verdict.error_category``)."""

Evaluator = Callable[[Engine, "JudgeService", int, Path], dict[str, Any]]
"""Periodic evaluation hook ``(engine, judge, step, out_dir) -> summary``; the CLI passes one built on
:func:`rltf.evaluation.evaluate` (the trainer does not import evaluation: data flows the other way)."""


# --------------------------------------------------------------------------- judging in the background


class JudgeService:
    """``judge.workers`` sandbox servers judging one program at a time each, as programs arrive.

    A completion is judged as soon as the engine finishes it (:meth:`submit` returns a future), so
    judging hides behind generation, and a program that runs into its time limit occupies one server
    for that long without holding back the others. Each :class:`Judge` (not thread-safe) is used by
    one thread at a time: a thread takes a free judge from the queue and puts it back.
    """

    def __init__(self, config: JudgeConfig) -> None:
        self._all: list[Judge] = []
        try:
            for _ in range(max(1, config.workers)):
                self._all.append(Judge(dataclasses.replace(config, workers=1)))
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


# --------------------------------------------------------------------------- problems and sequences


class ProblemSampler:
    """Problems without replacement in a seeded shuffled order, reshuffled when exhausted (as the original)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self._rng, self.order, self.pos, self.epoch = size, random.Random(seed), [], 0, 0
        self._reshuffle()

    def _reshuffle(self) -> None:
        self.order = list(range(self.size))
        self._rng.shuffle(self.order)
        self.pos = 0

    def draw(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            if self.pos == self.size:
                self.epoch += 1
                self._reshuffle()
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "pos": self.pos, "epoch": self.epoch, "rng": self._rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.pos, self.epoch = list(state["order"]), state["pos"], state["epoch"]
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))


def load_problem_set(dataset: str, split: str | None, path: str | None, limit: int | None) -> list[Problem]:
    """A registered benchmark (``rltf.datasets``) or a canonical problems ``.jsonl(.gz)`` file."""
    from rltf.datasets import load_dataset

    if Path(dataset).is_file():
        return load_problems(dataset)[:limit]
    return load_dataset(dataset, split, path, limit)


@dataclass(frozen=True)
class TrainItem:
    """One sequence of a micro-batch: context, target tokens, the weight of each target token and,
    for sampled targets, the engine's log-prob of each (the behaviour policy; empty for references)."""

    prompt_ids: Sequence[int]
    target_ids: Sequence[int]
    weights: Sequence[float]
    behaviour: Sequence[float] = ()


def collate(items: Sequence[TrainItem], pad_id: int, max_len: int, encoder_decoder: bool) -> dict[str, torch.Tensor]:
    """Pad a micro-batch. Causal LMs see ``prompt + target`` (right-padded; ``target_mask`` marks the
    positions of target tokens); encoder-decoders see the prompt and take the target as labels."""
    if encoder_decoder:
        prompts = [list(it.prompt_ids[-max_len:]) for it in items]
        targets = [list(it.target_ids[:kept_target_tokens(0, len(it.target_ids), max_len, True)]) for it in items]
        weights = [list(it.weights[:max_len]) for it in items]
        behaviour = [_behaviour(it)[:max_len] for it in items]
        width, depth = max(map(len, prompts)), max(map(len, targets))
        return {
            "input_ids": torch.tensor([p + [pad_id] * (width - len(p)) for p in prompts]),
            "attention_mask": torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts]),
            "labels": torch.tensor([t + [-100] * (depth - len(t)) for t in targets]),
            "weights": torch.tensor([w + [0.0] * (depth - len(w)) for w in weights]),
            "behaviour": torch.tensor([b + [0.0] * (depth - len(b)) for b in behaviour]),
        }
    rows, masks, weights, behaviour = [], [], [], []
    for it in items:
        prompt = list(it.prompt_ids[-(max_len - 1):])
        target = list(it.target_ids[: kept_target_tokens(len(it.prompt_ids), len(it.target_ids), max_len, False)])
        rows.append(prompt + target)
        masks.append([False] * len(prompt) + [True] * len(target))
        weights.append([0.0] * len(prompt) + list(it.weights[: len(target)]))
        behaviour.append([0.0] * len(prompt) + _behaviour(it)[: len(target)])
    width = max(map(len, rows))
    return {
        "input_ids": torch.tensor([r + [pad_id] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "target_mask": torch.tensor([m + [False] * (width - len(m)) for m in masks]),
        "weights": torch.tensor([w + [0.0] * (width - len(w)) for w in weights]),
        "behaviour": torch.tensor([b + [0.0] * (width - len(b)) for b in behaviour]),
    }


def kept_target_tokens(prompt_len: int, target_len: int, max_len: int, encoder_decoder: bool) -> int:
    """How many of a sequence's target tokens :func:`collate` keeps within ``max_len`` (a causal LM
    keeps the last ``max_len - 1`` prompt tokens and fills the rest with target)."""
    if encoder_decoder:
        return min(target_len, max_len)
    return max(0, min(target_len, max_len - min(prompt_len, max_len - 1)))


def sequence_factors(kept: Sequence[int], how: str, step_tokens: int, grad_accum: int) -> list[float]:
    """A positive factor per sequence of a micro-batch that turns the micro-batch token mean of the RL
    term (divided by ``grad_accum``) into the ``how`` aggregation (:class:`rltf.config.OptimConfig`).

    Scaling a sequence's returns by c > 0 scales each of its token terms by c under every importance
    correction (each is positively homogeneous in r_t), so the aggregation needs no second loss path.
    """
    tokens = sum(kept)
    if how == "token_mean" or not tokens:
        return [1.0] * len(kept)
    if how == "seq_mean":
        return [tokens / (len(kept) * k) if k else 0.0 for k in kept]
    if how == "global_token_mean":
        return [tokens * grad_accum / step_tokens] * len(kept)
    raise ValueError(f"unknown loss aggregation {how!r}")


def _behaviour(item: TrainItem) -> list[float]:
    """The item's behaviour log-probs, zeros (never read) where it has none."""
    return list(item.behaviour) if item.behaviour else [0.0] * len(item.target_ids)


def target_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log p(w_t | context, w_<t)`` of every target token, flattened, and the matching weights and
    behaviour log-probs.

    Only the target positions go through ``log_softmax`` (the vocabulary-wide tensor is the largest
    one in the step, so prompt positions are dropped before it is formed).
    """
    if "labels" in batch:
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_ids).logits
        mask = batch["labels"] != -100
        picked, targets = logits[mask], batch["labels"][mask]
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        mask = batch["target_mask"]
        picked, targets = logits[:, :-1][mask[:, 1:]], batch["input_ids"][:, 1:][mask[:, 1:]]
        mask = mask.clone()
        mask[:, 0] = False  # a target at position 0 has no context; collate never makes one
    logp = torch.log_softmax(picked.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return logp, batch["weights"][mask], batch["behaviour"][mask]


def weighted_nll(logp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``-mean_t(w_t · log p_t)`` over all target tokens of the micro-batch (the original's token mean).

    With ``w_t = r_t`` this is RLTF's policy-gradient loss; with ``w_t = 1`` plain cross-entropy.
    """
    if logp.numel() == 0:
        return logp.sum()
    return -(weights * logp).mean()


def policy_loss(logp: torch.Tensor, returns: torch.Tensor, behaviour: torch.Tensor, kind: str = "none",
                clip_eps: float = 0.2, tis_cap: float = 2.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The RL term over a micro-batch's tokens (token mean), importance-corrected by ``kind`` (see
    :class:`rltf.config.OptimConfig.importance`), and its diagnostics: the mean ratio ρ_t, the
    fraction of tokens whose ratio is clipped, and KL(behaviour‖current) estimated by mean(ρ - 1 - log ρ)
    (unbiased on tokens drawn from the behaviour policy, never negative).

    Every kind has the same gradient, -r_t·∇log π_θ(w_t), where the learner is the behaviour policy (ρ = 1).
    """
    if kind == "none" or logp.numel() == 0:
        return weighted_nll(logp, returns), {}
    log_ratio = logp - behaviour
    ratio = torch.exp(log_ratio)
    stats = {"ratio": ratio.detach().mean(), "kl": (ratio - 1 - log_ratio).detach().mean()}
    if kind == "ppo_clip":
        clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
        stats["clipped"] = (ratio.detach() != clipped.detach()).float().mean()
        return -torch.minimum(ratio * returns, clipped * returns).mean(), stats
    if kind == "tis":
        stats["clipped"] = (ratio.detach() > tis_cap).float().mean()
        return weighted_nll(logp, ratio.detach().clamp(max=tis_cap) * returns), stats
    raise ValueError(f"unknown importance correction {kind!r}")


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

    def metrics(self) -> dict[str, Any]:
        """``time_judge_s`` is the judging that generation did not hide (waiting after the last
        ``generate``); ``time_judge_busy_s`` all of it. ``reward_fine`` is the fine term's share of
        the mean token return."""
        programs = max(self.programs, 1)
        return {
            "reward_mean": _mean(self.rewards),
            **{f"reward_{term}": _mean(values) for term, values in self.terms.items()},
            "return_mean": _mean(self.token_returns),
            "sample_pass_rate": self.verdicts["pass"] / programs if self.programs else None,
            "greedy_pass_rate": self.greedy_passed / self.greedy if self.greedy else None,
            "verdicts": {k: self.verdicts[k] for k in VERDICT_KEYS},
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


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def _seed(*parts: Any) -> int:
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

    def rollout(self, problems: Sequence[Problem], step: int) -> Rollout:
        """K samples per problem (+ a greedy baseline as sample 0 of the same request)."""
        cfg, fb = self.config.rollout, self.config.feedback
        greedy = fb.baseline == "greedy"
        rollout = Rollout()
        busy0 = self.judge.busy_s
        prompts = [self.prompts(p)[0] for p in problems]
        params = SamplingParams(cfg.samples_per_problem + greedy, cfg.temperature, cfg.top_p, cfg.max_new_tokens,
                                _seed(self.config.seed, step, *(p.id for p in problems)), greedy_first=greedy)
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


# --------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint. A ``step-N`` directory appears by rename only once complete, so the
    highest one is whole whenever the process was killed."""
    root = run_dir / CHECKPOINTS
    steps = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if root.is_dir() else []
    return steps[-1] if steps else None


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_model(policy: Policy, out: Path) -> None:
    """Plain HF weights + tokenizer in ``out/model`` (``rltf eval --model`` and transformers load it);
    with LoRA also the adapter in ``out/adapter`` (what resume loads) and merged weights in ``model``."""
    if hasattr(policy.model, "peft_config"):
        policy.model.save_pretrained(out / "adapter")
    merged(policy.model).save_pretrained(out / "model")
    policy.tokenizer.save_pretrained(out / "model")


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Runs (or resumes) one training run in ``run_dir``; see the module docstring for the loop."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                 evaluator: Evaluator | None = None, show_progress: bool | None = None) -> None:
        self.config, self.run_dir, self.evaluator = config, Path(run_dir), evaluator
        self.show_progress = config.log.progress if show_progress is None else show_progress
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if not resume and ((self.run_dir / CHECKPOINTS).exists() or (self.run_dir / METRICS).exists()):
            raise FileExistsError(f"{self.run_dir} already holds a run: resume it or choose another directory")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, self.run_dir / CONFIG)
        set_threads(config.model.threads)
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)

        data = config.data
        self.problems = load_problem_set(data.dataset, data.split, data.path, data.limit)
        if not self.problems:
            raise ValueError("no training problems")
        self.references = [(i, s) for i, p in enumerate(self.problems) for s in range(len(p.solutions))]
        if not config.rollout.enabled and not self.references:
            raise ValueError("supervised fine-tuning (rollout.enabled=false) needs reference solutions; "
                             "the training problems have none")
        self.policy = self._load_policy(checkpoint)
        # prompts are cut once, to what collate keeps beside a full-length completion
        self.policy.max_prompt_tokens = config.optim.max_seq_len if self.policy.is_encoder_decoder else \
            max(1, config.optim.max_seq_len - config.rollout.max_new_tokens)
        self.model = self.policy.model
        if config.optim.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in self.params if p.ndim >= 2]
        rest = [p for p in self.params if p.ndim < 2]
        opt = config.optim
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=opt.lr, betas=(opt.betas[0], opt.betas[1]), eps=opt.eps)
        from transformers import get_scheduler

        self.scheduler = get_scheduler(opt.scheduler, self.optimizer, num_warmup_steps=opt.warmup_steps,
                                       num_training_steps=config.steps)
        self.buffer = OnlineBuffer(config.buffer.capacity, seed=_seed(config.seed, "buffer"), mode=config.buffer.mode)
        self.sampler = ProblemSampler(len(self.problems), seed=_seed(config.seed, "problems"))
        self.sl_rng = random.Random(_seed(config.seed, "sl"))
        self.step = 0
        self.offline_done = False
        self.prompts = Prompts(self.policy)
        self._checkpoint_record: dict[str, Any] | None = None
        if checkpoint is not None:
            self._load_state(checkpoint)
        self._truncate_metrics()

    # ---------------------------------------------------------------- setup

    def _load_policy(self, checkpoint: Path | None) -> Policy:
        m = self.config.model
        source = m.name
        if checkpoint is not None and not m.lora.enabled:
            source = str(checkpoint / "model")
        elif m.random_init is not None:
            source = str(self._random_model())
        policy = Policy.load(source, allow_download=m.allow_download, style=m.style, dtype=m.dtype, device=m.device)
        if m.lora.enabled:
            from peft import LoraConfig, PeftModel, get_peft_model

            if checkpoint is not None:
                policy.model = PeftModel.from_pretrained(policy.model, checkpoint / "adapter", is_trainable=True)
            else:
                task = "SEQ_2_SEQ_LM" if policy.is_encoder_decoder else "CAUSAL_LM"
                policy.model = get_peft_model(policy.model, LoraConfig(
                    r=m.lora.r, lora_alpha=m.lora.alpha, lora_dropout=m.lora.dropout,
                    target_modules=m.lora.target_modules, task_type=task))
        return policy

    def _random_model(self) -> Path:
        """A random Llama with ``model.name``'s tokenizer, written once into the run directory."""
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        out = self.run_dir / "init-model"
        if (out / "config.json").is_file():
            return out
        name = self.config.model.name
        if name == DEFAULT_MODEL:  # straight from the GGUF: no weight conversion needed
            gguf = embedded_gguf()
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=not self.config.model.allow_download)
        settings = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                    "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": True,
                    **(self.config.model.random_init or {})}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **settings))
        tmp = self.run_dir / ".init-model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
        return out

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = self.config.optim.autocast
        if not dtype:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=getattr(torch, dtype))

    # ---------------------------------------------------------------- state

    def save_checkpoint(self, record: dict[str, Any] | None = None) -> Path:
        """Write ``checkpoints/step-N`` atomically (temporary directory, then rename), then prune.

        ``record`` (this step's metrics line) travels with it: the line is appended to
        ``metrics.jsonl`` only after the rename, so a resume restores it if the kill came in between.
        """
        root = self.run_dir / CHECKPOINTS
        root.mkdir(exist_ok=True)
        final = root / f"step-{self.step:06d}"
        tmp = root / f".tmp-step-{self.step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_model(self.policy, tmp)
        torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
        self.buffer.save(tmp / "buffer.pt")
        torch.save({"step": self.step, "offline_done": self.offline_done, "rng": _rng_state(),
                    "sampler": self.sampler.state_dict(), "sl_rng": self.sl_rng.getstate(),
                    "record": json.dumps(record)}, tmp / "trainer.pt")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(root.glob("step-*"))[: -self.config.checkpoint.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _load_state(self, checkpoint: Path) -> None:
        for tmp in (self.run_dir / CHECKPOINTS).glob(".tmp-step-*"):
            shutil.rmtree(tmp, ignore_errors=True)  # a save that was killed half way
        device = self.model.device
        self.optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True))
        self.scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
        self.buffer = OnlineBuffer.load(checkpoint / "buffer.pt")
        # overrides on resume apply from the next refresh
        self.buffer.capacity, self.buffer.mode = self.config.buffer.capacity, self.config.buffer.mode
        state = torch.load(checkpoint / "trainer.pt", weights_only=True)
        self.step, self.offline_done = state["step"], state["offline_done"]
        self.sampler.load_state_dict(state["sampler"])
        version, internal, gauss = state["sl_rng"]
        self.sl_rng.setstate((version, tuple(internal), gauss))
        _set_rng_state(state["rng"])
        self._checkpoint_record = json.loads(state["record"])

    def _truncate_metrics(self) -> None:
        """Make ``metrics.jsonl`` end at the checkpoint's step: later steps (and a torn last line) will
        be redone, and the checkpoint's own line comes back if the kill came before it was written."""
        path = self.run_dir / METRICS
        kept = [r for r in read_metrics(self.run_dir) if r.get("step", 0) <= self.step]
        if self._checkpoint_record and not any(r["step"] == self.step for r in kept):
            kept.append(self._checkpoint_record)
        if path.exists() or kept:
            _write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    # ---------------------------------------------------------------- the loop

    def run(self, stop_at: int | None = None) -> int:
        """Train until ``config.steps`` (or ``stop_at``, to simulate an interruption); returns the step."""
        from torch.utils.tensorboard import SummaryWriter

        target = min(self.config.steps, stop_at if stop_at is not None else self.config.steps)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1) \
            if self.config.log.tensorboard else None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]train"), BarColumn(bar_width=20), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), disable=not self.show_progress)
        engine = make_engine(self.policy, self.config.engine, version=self.step)
        try:
            with JudgeService(self.config.judge) as judge, progress, (self.run_dir / METRICS).open("a") as sink:
                task = progress.add_task("train", total=self.config.steps, completed=self.step, info="")
                actor = Actor(engine, judge, self.config, self.prompts, self._autocast)
                if self.config.rollout.enabled and not self.config.rollout.online and not self.offline_done:
                    self._offline_fill(actor)
                self._maybe_eval(engine, judge, writer, progress)
                while self.step < target:
                    record = self._train_step(actor)
                    if self.step % self.config.checkpoint.every == 0 or self.step == target:
                        started = time.perf_counter()
                        self.save_checkpoint(record)
                        record["time_checkpoint_s"] = time.perf_counter() - started
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    if writer is not None:
                        _log_scalars(writer, record)
                    progress.update(task, completed=self.step, info=_progress_text(record))
                    self._maybe_eval(engine, judge, writer, progress)
        finally:
            engine.close()
            if writer is not None:
                writer.close()
        return self.step

    def _offline_fill(self, actor: Actor) -> None:
        """CodeRL-style offline data: the initial policy samples every training problem once."""
        per_call = self.config.rollout.problems_per_step
        order = self.sampler.draw(len(self.problems))
        for start in range(0, len(order), per_call):
            batch = [self.problems[i] for i in order[start : start + per_call]]
            self.buffer.stage(actor.rollout(batch, step=0).samples)
        self.buffer.refresh(0)
        self.offline_done = True

    def _train_step(self, actor: Actor) -> dict[str, Any]:
        started = time.perf_counter()
        record: dict[str, Any] = {"step": self.step + 1}
        if self.config.rollout.enabled and self.config.rollout.online:
            rollout = self._rollout(actor)
            self.buffer.stage(rollout.samples)
            record.update(rollout.metrics())
            record.update(self._logprob_gap(rollout.samples))
        else:
            record.update(Rollout().metrics())
        added = dropped = 0
        if self.step % self.config.buffer.update_freq == 0 or not self.buffer:
            added, dropped = self.buffer.refresh(self.step)
        stale = self.buffer.prune(self.step, self.config.buffer.max_staleness)
        record.update({"buffer_size": len(self.buffer), "buffer_pending": len(self.buffer.pending),
                       "buffer_added": added, "buffer_dropped": dropped, "buffer_dropped_stale": stale})
        record.update(self._update())
        record.update(self.buffer.usage())
        self.step += 1
        engine = actor.engine
        due = self.config.rollout.enabled and (engine.shares_weights or self.step % self.config.engine.sync_every == 0)
        record["time_sync_s"] = engine.sync(self.step) if due else 0.0
        record["engine_version"] = engine.policy_version
        record["time_step_s"] = time.perf_counter() - started
        return record

    def _rollout(self, actor: Actor) -> Rollout:
        """This step's rollout; with dynamic sampling, more problems replace groups without signal
        until ``problems_per_step`` groups carry some or ``max_rollouts`` calls were made."""
        cfg = self.config.rollout
        rollout, calls, wanted = Rollout(), 0, cfg.problems_per_step
        while wanted > 0 and calls < (cfg.max_rollouts if cfg.dynamic_sampling else 1):
            rollout.merge(actor.rollout([self.problems[i] for i in self.sampler.draw(wanted)], self.step))
            calls += 1
            wanted = cfg.problems_per_step - (rollout.groups - rollout.groups_without_signal)
        return rollout

    def _logprob_gap(self, samples: Sequence[Sample], n: int = 2) -> dict[str, Any]:
        """Mean |engine log-prob - learner log-prob| over the tokens of up to ``n`` fresh samples (one extra
        no-grad forward on them).

        Both score the same tokens with the same weights (the samples' version is the learner's
        step), so the gap is the engine's numerical mismatch (quantization, kernels): what
        importance correction has to absorb.
        """
        fresh = [s for s in samples if s.policy_version == self.step and s.logprobs][:n]
        if not fresh:
            return {"logprob_gap": None}
        started = time.perf_counter()
        with torch.inference_mode():
            learner, _, _, _ = self._logprobs([TrainItem(s.prompt_ids, s.completion_ids, [1.0] * len(s.completion_ids))
                                            for s in fresh])
        kept = [self._kept(s) for s in fresh]
        engine = torch.tensor([lp for s, k in zip(fresh, kept) for lp in s.logprobs[:k]])
        gap = (engine - learner.float().cpu()).abs()
        return {"logprob_gap": float(gap.mean()), "logprob_gap_max": float(gap.max()),
                "time_logprob_gap_s": time.perf_counter() - started}

    def _sl_items(self, n: int) -> list[TrainItem]:
        """``n`` uniformly random reference solutions of training problems (any problem, any solution)."""
        items = []
        eos = self.policy.tokenizer.eos_token_id
        for _ in range(n if self.references else 0):
            index, solution = self.sl_rng.choice(self.references)
            problem = self.problems[index]
            prompt, prompt_ids = self.prompts(problem)
            target = self.policy.tokenizer(prompt.answer(problem.solutions[solution]),
                                           add_special_tokens=False).input_ids + ([eos] if eos is not None else [])
            items.append(TrainItem(prompt_ids, target, [1.0] * len(target)))
        return items

    def _logprobs(self, items: Sequence[TrainItem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The learner's log-probs of the items' target tokens, their weights and behaviour log-probs,
        and the tokens fed."""
        batch = collate(items, self.policy.tokenizer.pad_token_id, self.config.optim.max_seq_len,
                        self.policy.is_encoder_decoder)
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        with self._autocast():
            logp, weights, behaviour = target_logprobs(self.model, batch)
        return logp, weights, behaviour, int(batch["attention_mask"].sum())

    def _kept(self, sample: Sample) -> int:
        return kept_target_tokens(len(sample.prompt_ids), len(sample.completion_ids), self.config.optim.max_seq_len,
                                  self.policy.is_encoder_decoder)

    def _update(self) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` pairs of an RL micro-batch and an SL micro-batch."""
        opt = self.config.optim
        started = time.perf_counter()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        rl, sl, staleness, tokens = [], [], [], 0
        diagnostics: dict[str, list[float]] = {}
        # every RL micro-batch is drawn first: the global token mean needs the step's token count
        drawn = [self.buffer.sample(opt.micro_batch) if opt.rl_weight else [] for _ in range(opt.grad_accum)]
        kept = [[self._kept(s) for s in samples] for samples in drawn]
        step_tokens = sum(map(sum, kept))
        for samples, lengths in zip(drawn, kept):
            if samples:
                if opt.importance != "none" and any(not s.logprobs for s in samples):
                    raise ValueError(f"optim.importance={opt.importance} needs the engine's log-probs on every "
                                     "buffer sample")
                factors = sequence_factors(lengths, opt.loss_aggregation, step_tokens, opt.grad_accum)
                logp, returns, behaviour, n = self._logprobs(
                    [TrainItem(s.prompt_ids, s.completion_ids, [c * r for r in s.returns], s.logprobs)
                     for s, c in zip(samples, factors)])
                loss, stats = policy_loss(logp, returns, behaviour, opt.importance, opt.clip_eps, opt.tis_cap)
                (opt.rl_weight * loss / opt.grad_accum).backward()
                rl.append(loss.item())
                for key, value in stats.items():
                    diagnostics.setdefault(key, []).append(value.item())
                tokens += n
                staleness.extend(self.step - s.policy_version for s in samples)
            if opt.sl_weight:
                items = self._sl_items(opt.micro_batch)
                if items:
                    logp, weights, _, n = self._logprobs(items)
                    loss = weighted_nll(logp, weights)
                    (opt.sl_weight * loss / opt.grad_accum).backward()
                    sl.append(loss.item())
                    tokens += n
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, opt.max_grad_norm if opt.max_grad_norm > 0
                                                   else math.inf).item()
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.model.eval()
        elapsed = time.perf_counter() - started
        loss_rl, loss_sl = _mean(rl), _mean(sl)
        return {"loss": opt.rl_weight * (loss_rl or 0.0) + opt.sl_weight * (loss_sl or 0.0),
                "loss_rl": loss_rl, "loss_sl": loss_sl, "lr": lr, "grad_norm": grad_norm,
                "staleness_mean": _mean(staleness), "staleness_max": max(staleness, default=None),
                "train_tokens": tokens,
                "importance_ratio_mean": _mean(diagnostics.get("ratio", [])),
                "importance_clip_frac": _mean(diagnostics.get("clipped", [])),
                "kl_behaviour_current": _mean(diagnostics.get("kl", [])),
                "time_train_s": elapsed, "tokens_per_s_train": tokens / elapsed if elapsed else None}

    def _maybe_eval(self, engine: Engine, judge: JudgeService, writer: Any, progress: Any) -> None:
        cfg, step = self.config.eval, self.step
        due = (step == 0 and cfg.at_start) or (step == self.config.steps and cfg.at_end) \
            or (cfg.every > 0 and step % cfg.every == 0)
        out = self.run_dir / EVAL_DIR / f"step-{step:06d}"
        if self.evaluator is None or not due or (out / "summary.json").exists():
            return
        if engine.policy_version != step:  # with sync_every > 1 the engine may hold older weights
            engine.sync(step)
        progress.stop()  # the evaluation shows its own progress bar; rich allows one at a time
        devices = range(torch.cuda.device_count())
        with torch.random.fork_rng(devices=devices), self._autocast():  # evaluation must not shift training RNG
            summary = self.evaluator(engine, judge, step, out)
        progress.start()
        if writer is not None:
            for k, v in summary.get("pass_at_k", {}).items():
                writer.add_scalar(f"eval/pass@{k}", v, step)
            writer.flush()


def _log_scalars(writer: Any, record: dict[str, Any]) -> None:
    step = record["step"]
    for key, value in record.items():
        if key == "verdicts":
            total = sum(value.values()) or 1
            for name, count in value.items():
                writer.add_scalar(f"verdicts/{name}", count / total, step)
        elif isinstance(value, (int, float)) and key != "step":
            group = "time" if key.startswith("time_") else "train"
            writer.add_scalar(f"{group}/{key}", value, step)
    writer.flush()


def _progress_text(record: dict[str, Any]) -> str:
    def fmt(key: str, spec: str) -> str:
        value = record.get(key)
        return "-" if value is None else format(value, spec)

    return (f"loss {fmt('loss', '.3f')} reward {fmt('reward_mean', '+.2f')} pass {fmt('sample_pass_rate', '.0%')}"
            f" | gen {fmt('time_gen_s', '.0f')}s judge {fmt('time_judge_s', '.1f')}s"
            f" train {fmt('time_train_s', '.0f')}s")


# --------------------------------------------------------------------------- reading a run back


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        with contextlib.suppress(json.JSONDecodeError):
            records.append(json.loads(line))
    return records


def read_evals(run_dir: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(step, summary)`` of every finished evaluation, in step order."""
    found = []
    for path in sorted((Path(run_dir) / EVAL_DIR).glob("step-*/summary.json")):
        found.append((int(path.parent.name.split("-")[1]), json.loads(path.read_text())))
    return found


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _smooth(values: Sequence[float]) -> np.ndarray:
    """Trailing mean over 5% of the run (same length; the first points average what exists)."""
    window = max(1, len(values) // 20)
    total = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=float))])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (total[end] - total[start]) / (end - start)


def render_report(run_dir: str | Path) -> list[Path]:
    """PNG plots of a run into ``run_dir``: rewards and pass rates, the verdict mix over time,
    losses and the time split per step, and eval pass@1; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    evals = read_evals(run_dir)
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        written.append(run_dir / name)

    def curve(ax: Any, key: str, label: str) -> None:
        steps, values = _series(records, key)
        if not values:
            return
        line, = ax.plot(steps, values, alpha=0.35)
        ax.plot(steps, _smooth(values), color=line.get_color(), label=label)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in [("reward_mean", "reward R(W)"), ("return_mean", "token return r_t")]:
        curve(top, key, label)
    top.axhline(0, color="grey", lw=0.5)
    top.set_ylabel("reward")
    top.legend(fontsize=8)
    for key, label in [("sample_pass_rate", "sampled programs"), ("greedy_pass_rate", "greedy baseline")]:
        curve(bottom, key, label)
    bottom.set_ylabel("pass rate (train problems)")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=8)
    save(fig, "plot_rewards.png")

    mixed = [r for r in records if r.get("verdicts") and sum(r["verdicts"].values())]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if mixed:
        keys = [k for k in VERDICT_KEYS if any(r["verdicts"].get(k) for r in mixed)]
        shares = np.array([[r["verdicts"].get(k, 0) / sum(r["verdicts"].values()) for r in mixed] for k in keys])
        ax.stackplot([r["step"] for r in mixed], [_smooth(s) for s in shares], labels=keys, alpha=0.85)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("share of sampled programs")
    ax.set_title("verdict mix", fontsize=10)
    save(fig, "plot_verdicts.png")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in [("loss", "total"), ("loss_rl", "RL (policy gradient)"), ("loss_sl", "SL (cross-entropy)")]:
        curve(top, key, label)
    top.set_ylabel("loss")
    top.legend(fontsize=8)
    parts = [("time_gen_s", "generate"), ("time_judge_s", "judge (not overlapped)"), ("time_train_s", "train"),
             ("time_checkpoint_s", "checkpoint")]
    steps = [r["step"] for r in records]
    base = np.zeros(len(records))
    for key, label in parts:
        values = np.array([r.get(key) or 0.0 for r in records])
        bottom.bar(steps, values, bottom=base, label=label, width=0.9)
        base += values
    bottom.set_ylabel("seconds per step")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=8)
    save(fig, "plot_loss_time.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if evals:
        steps = [s for s, _ in evals]
        ax.plot(steps, [100 * e["pass_at_k"].get("1", float("nan")) for _, e in evals], marker="o")
        for s, e in evals:
            ax.annotate(f"{100 * e['pass_at_k'].get('1', float('nan')):.1f}", (s, 100 * e["pass_at_k"].get("1", 0)),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        settings = evals[0][1].get("settings", {})
        ax.set_title(f"greedy pass@1 on {settings.get('dataset', '?')} {settings.get('split') or ''} "
                     f"({evals[0][1].get('problems', '?')} problems)", fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("pass@1 (%)")
    save(fig, "plot_eval.png")
    return written


