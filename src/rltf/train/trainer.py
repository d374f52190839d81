"""Online RLTF training: one process (or N ranks), a generation engine as actor and the policy as learner.

A step, top to bottom in :meth:`Trainer.step_once`: the engine samples K programs (plus one greedy
baseline) for a few training problems and the judge runs each the moment it is generated
(:mod:`rltf.train.rollout`); verdicts become per-token returns against each group's baseline
(:mod:`rltf.train.rewards`); the samples are staged into the online buffer, which takes them in
every ``update_freq`` steps; the loss mixes the token-weighted policy-gradient term on buffer samples
with supervised cross-entropy on reference solutions (or on the run's passing programs:
``optim.sl_source``), run packed (:mod:`rltf.train.packing`); one
optimizer step; then the engine takes the new weights (every ``engine.sync_every`` steps).

Unlike the original (actors reloading learner checkpoints from disk every 600 s, so samples were up
to tens of steps stale), the engine is synced in memory, and a sample's ``policy_version`` records
the weights the engine actually served when it sampled. Checkpoints are written to a temporary
directory and renamed, so a run killed at any moment resumes from its last complete step.
Data-parallel and sharded runs: :mod:`rltf.train.distributed`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltf.buffer import OnlineBuffer, PassingPool, Sample
from rltf.config import TrainConfig, save_config
from rltf.datasets import drop_mbpp_leaks, load_problem_set
from rltf.generation import Engine, make_engine
from rltf.judge import JudgeService
from rltf.models import PromptCache, autocast_dtype, build_policy, model_identity, set_threads
from rltf.problems import Problem
from rltf.seeds import restore_random, stable_seed
from rltf.train.checkpoint import (
    CHECKPOINTS,
    CONFIG,
    EVAL_DIR,
    METRICS,
    SAMPLES,
    latest_checkpoint,
    load,
    save,
    write_text_atomic,
)
from rltf.train.curriculum import (
    PASS_RATES,
    LearnableSampler,
    ProblemSampler,
    estimate_pass_rates,
    pass_rate_cache,
    pass_rate_summary,
    sample_passes,
)
from rltf.train.distributed import Ranks, launcher_fsdp
from rltf.train.losses import TrainItem, collate, entropy, kept_target_tokens, logprobs_of, target_logits
from rltf.train.packing import Weighted, logprobs, micro_batches, order, tensors, weigh, weighted_loss
from rltf.train.report import Trackers, append_learner_batches, mean_or_none, progress_text, read_metrics
from rltf.train.rewards import Rollout, score
from rltf.train.rollout import Actor

Evaluator = Callable[[Engine, JudgeService, int, Path], dict[str, Any]]
"""Periodic evaluation hook ``(engine, judge, step, out_dir) -> summary``; callers pass
:func:`rltf.evaluation.train_evaluator` (the trainer does not import evaluation: data flows the other way)."""


class Trainer:
    """Runs (or resumes) one training run in ``run_dir``; see the module docstring for the loop."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                 evaluator: Evaluator | None = None, show_progress: bool | None = None) -> None:
        config = launcher_fsdp(config)
        self.config, self.run_dir, self.evaluator = config, Path(run_dir), evaluator
        self.ranks = Ranks(config)
        self.is_main = self.ranks.is_main
        self.show_progress = (config.log.progress if show_progress is None else show_progress) and self.is_main
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if not resume and ((self.run_dir / CHECKPOINTS).exists() or (self.run_dir / METRICS).exists()):
            raise FileExistsError(f"{self.run_dir} already holds a run: resume it or choose another directory")
        self.ranks.wait()  # every rank has looked before rank 0 writes
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            save_config(config, self.run_dir / CONFIG)
        set_threads(config.model.threads)
        random.seed(config.seed)
        np.random.seed(config.seed % 2**32)
        torch.manual_seed(config.seed)

        data = config.data
        self.problems = load_problem_set(data.dataset, data.split, data.path, None)
        if data.drop_leaks:
            self.problems = drop_mbpp_leaks(self.problems)
        self.problems = self.problems[:data.limit]
        if not self.problems:
            raise ValueError("no training problems")
        self.problem_index = {p.id: i for i, p in enumerate(self.problems)}
        self.references = [(i, s) for i, p in enumerate(self.problems) for s in range(len(p.solutions))]
        if not config.rollout.enabled and not self.references:
            raise ValueError("supervised fine-tuning (rollout.enabled=false) needs reference solutions; "
                             "the training problems have none")
        with self.ranks.main_first():  # rank 0 writes a random init or model conversion once
            self.policy = build_policy(config.model, resume_from=checkpoint, init_dir=self.run_dir / "init-model",
                                       seed=config.seed, device=self.ranks.load_device)
        # prompts are cut once, to what collate keeps beside a full-length completion
        self.policy.max_prompt_tokens = config.optim.max_seq_len if self.policy.is_encoder_decoder else \
            max(1, config.optim.max_seq_len - config.rollout.max_new_tokens)
        self.model = self.policy.model
        self.start_model = self._start_model(checkpoint)
        if config.optim.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        # serving: what the engine samples from and checkpoints save; learner: what the update runs
        self.serving, self.learner = self.ranks.wrap(self.policy)
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
        self.autocast_dtype = autocast_dtype(opt.autocast, self.model.device.type)
        self.buffer = OnlineBuffer(config.buffer.capacity, seed=stable_seed(config.seed, "buffer"),
                                   mode=config.buffer.mode)
        self.sampler = ProblemSampler(len(self.problems), seed=stable_seed(config.seed, "problems")) \
            if config.rollout.selection == "uniform" else LearnableSampler(
                len(self.problems), stable_seed(config.seed, "problems"), config.rollout.selection_floor,
                config.rollout.selection_decay)
        self.sl_rng = random.Random(stable_seed(config.seed, "sl"))
        self.passing = PassingPool()
        self.step = 0
        self.offline_done = False
        self.prompts = PromptCache(self.policy)
        self._checkpoint_record: dict[str, Any] | None = None
        if checkpoint is not None:
            self._load_state(checkpoint)
        if self.is_main:
            self._truncate_metrics()

    def _start_model(self, checkpoint: Path | None) -> Any:
        """What the KL term compares with (``optim.kl_coef``): None where it is off or LoRA trains (the
        adapters switched off are the start), else a frozen copy of the start weights, loaded again
        from the run's start when resuming. Unsharded on every rank."""
        if not self.config.optim.kl_coef or self.config.model.lora.enabled:
            return None
        if checkpoint is None:
            start = copy.deepcopy(self.policy.model)
        else:
            start = build_policy(self.config.model, resume_from=None, init_dir=self.run_dir / "init-model",
                                 seed=self.config.seed, device=self.ranks.load_device).model
        return start.eval().requires_grad_(False)

    # ---------------------------------------------------------------- the loop

    def run(self, stop_at: int | None = None) -> int:
        """Train until ``config.steps`` (or ``stop_at``, to simulate an interruption); returns the step."""
        target = min(self.config.steps, stop_at if stop_at is not None else self.config.steps)
        trackers = Trackers.start(self.config, self.run_dir, self.step) if self.is_main else Trackers()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]train"), BarColumn(bar_width=20), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), disable=not self.show_progress)
        engine = make_engine(self.serving, self.config.engine, version=self.step, device=str(self.model.device))
        if self.ranks.fsdp and engine.shares_weights:
            engine.close()
            raise ValueError(f"distributed.fsdp: the {engine.name} engine samples with the learner's own (sharded) "
                             "modules; use engine.name=llamacpp or ct2")
        try:
            with JudgeService(self.config.judge) as judge, progress, \
                    (self.run_dir / METRICS).open("a") if self.is_main else open(os.devnull, "w") as sink:
                task = progress.add_task("train", total=self.config.steps, completed=self.step, info="")
                actor = Actor(engine, judge, self.config.rollout, greedy=self.config.feedback.baseline == "greedy",
                              seed=self.config.seed, prompts=self.prompts, autocast=self._autocast)
                if self.config.rollout.enabled and not self.config.rollout.online and not self.offline_done:
                    self._offline_fill(actor)
                if self.config.rollout.enabled and isinstance(self.sampler, LearnableSampler) \
                        and None in self.sampler.rates:  # a run that samples nothing draws no problems
                    self._estimate_pass_rates(engine, judge)
                self._maybe_eval(engine, judge, trackers, progress)
                while self.step < target:
                    record = self.step_once(actor)
                    if self.step % self.config.checkpoint.every == 0 or self.step == target:
                        started = time.perf_counter()
                        self.save_checkpoint(record)
                        record["time_checkpoint_s"] = time.perf_counter() - started
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    trackers.log(record)
                    progress.update(task, completed=self.step, info=progress_text(record))
                    self._maybe_eval(engine, judge, trackers, progress)
        finally:
            engine.close()
            trackers.finish()
        return self.step

    def step_once(self, actor: Actor) -> dict[str, Any]:
        """One optimizer step of online RLTF; returns its metrics line."""
        cfg, opt = self.config, self.config.optim
        started = time.perf_counter()
        record: dict[str, Any] = {"step": self.step + 1}

        # 1. sample and judge: K programs for each of this step's problems, judged as they stream out,
        # 2. rewards: each group's verdicts become per-token returns against its baseline
        rollout = self._rollout(actor) if cfg.rollout.enabled and cfg.rollout.online else Rollout()
        if cfg.log.samples and self.is_main and rollout.program_records:  # before the checkpoint: a resume keeps them
            with (self.run_dir / SAMPLES).open("a", encoding="utf-8") as sink:
                sink.writelines(json.dumps(program) + "\n" for program in rollout.program_records)
        record.update(rollout.metrics())
        record.update(self._fresh_check(rollout.samples))

        # 3. buffer: staged now, taken in every update_freq steps (the paper's online buffer); the
        # passing programs also join the run's pool of them (optim.sl_source)
        self.buffer.stage(rollout.samples)
        record["sl_passing_new"] = self.passing.add(rollout.passing)
        added = dropped = 0
        if self.step % cfg.buffer.update_freq == 0 or not self.buffer:
            added, dropped = self.buffer.refresh(self.step)
        stale = self.buffer.prune(self.step, cfg.buffer.max_staleness)
        record.update({"buffer_size": len(self.buffer), "buffer_pending": len(self.buffer.pending),
                       "buffer_added": added, "buffer_dropped": dropped, "buffer_dropped_stale": stale})

        # 4. loss: RL micro-batches from the buffer and SL micro-batches (optim.sl_source), each micro-batch's
        # normaliser folded into its sequences' scales, this rank's share run packed, forward and backward
        learner_started = time.perf_counter()
        self.learner.train()
        self.optimizer.zero_grad(set_to_none=True)
        pairs = opt.grad_accum * self.ranks.count
        drawn = [self.buffer.sample(opt.micro_batch) if opt.rl_weight else [] for _ in range(pairs)]
        supervised = [self._sl_items(opt.sl_micro_batch or opt.micro_batch) if opt.sl_weight else ([], 0)
                      for _ in range(pairs)]
        references = [items for items, _ in supervised]
        record["sl_passing_drawn"] = sum(passing for _, passing in supervised)
        if cfg.log.learner_batches and self.is_main:
            append_learner_batches(self.run_dir, self.step + 1, dataclasses.asdict(opt), drawn, references)
        mine = range(self.ranks.index * opt.grad_accum, (self.ranks.index + 1) * opt.grad_accum)
        weighted, skipped = weigh(
            [[TrainItem(s.prompt_ids, s.completion_ids, s.returns, s.logprobs) for s in drawn[i]] for i in mine],
            [references[i] for i in mine], rl_weight=opt.rl_weight, sl_weight=opt.sl_weight,
            grad_accum=opt.grad_accum, ranks=self.ranks.count, aggregation=opt.loss_aggregation,
            importance=opt.importance, step_tokens=sum(self._kept(s) for samples in drawn for s in samples),
            max_len=opt.max_seq_len, encoder_decoder=self.policy.is_encoder_decoder,
            max_new_tokens=cfg.rollout.max_new_tokens)
        part = self._backward(weighted)
        part.update(skipped=skipped, staleness=[self.step - s.policy_version for i in mine for s in drawn[i]])

        # 5. optimizer step (DDP / FSDP averaged the ranks' gradients at their last backward)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, opt.max_grad_norm if opt.max_grad_norm > 0
                                                   else math.inf).item()
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.learner.eval()
        self.step += 1
        record.update(self._learner_metrics(self.ranks.gather(part), drawn, references, grad_norm,
                                            time.perf_counter() - learner_started))
        record.update(self.buffer.usage())
        record.update({"sl_passing_pool": len(self.passing), "sl_passing_problems": self.passing.problems()})

        # 6. sync: the engine samples the next step with the new weights
        engine = actor.engine
        due = cfg.rollout.enabled and (engine.shares_weights or self.step % cfg.engine.sync_every == 0)
        synced = time.perf_counter()
        if due:
            self.ranks.gather_weights()
            engine.sync(self.step)
        record.update({"time_sync_s": time.perf_counter() - synced if due else 0.0,
                       "engine_version": engine.policy_version, "engine": engine.label,
                       "learner_dtype": self.autocast_dtype or str(self.model.dtype).removeprefix("torch."),
                       "time_step_s": time.perf_counter() - started})
        return record

    # ---------------------------------------------------------------- the step's parts

    def _rollout(self, actor: Actor) -> Rollout:
        """This step's scored rollout; with dynamic sampling, more problems replace groups without
        signal until ``problems_per_step`` groups carry some or ``max_rollouts`` calls were made.
        Each rank samples, judges and scores its share of the problems; every rank gets the whole
        (the shares merged in rank order: the one-process rollout)."""
        cfg = self.config.rollout
        rollout, calls, wanted = Rollout(), 0, cfg.problems_per_step
        while wanted > 0 and calls < (cfg.max_rollouts if cfg.dynamic_sampling else 1):
            rollout.merge(self._sample_and_score(actor, [self.problems[i] for i in self.sampler.draw(wanted)],
                                                 self.step))
            calls += 1
            wanted = cfg.problems_per_step - rollout.groups_with_signal
        if isinstance(self.sampler, LearnableSampler):  # every group moves its problem's estimate
            for problem_id, passes in sample_passes(rollout.program_records).items():
                self.sampler.update(self.problem_index[problem_id], sum(passes), len(passes))
        return rollout

    def _sample_and_score(self, actor: Actor, problems: Sequence[Problem], step: int) -> Rollout:
        sampled = actor.sample(problems, step, self.ranks.index, self.ranks.count)
        mine = score(sampled, [self.prompts(g.problem)[1] for g in sampled.groups], self.config.feedback, step,
                     drop_without_signal=self.config.rollout.dynamic_sampling,
                     max_new_tokens=self.config.rollout.max_new_tokens)
        whole = Rollout()
        for part in self.ranks.gather(mine):
            whole.merge(part)
        return whole

    def _estimate_pass_rates(self, engine: Engine, judge: JudgeService) -> None:
        """``rollout.selection: learnable``'s pre-pass: each training problem's pass rate from
        ``selection_samples`` samples of the starting model (:func:`rltf.train.curriculum.estimate_pass_rates`)."""
        cfg = self.config.rollout
        # one sampling seed for every run's pre-pass: seeds of one experiment share the estimates
        actor = Actor(engine, judge, dataclasses.replace(cfg, samples_per_problem=cfg.selection_samples),
                      greedy=False, seed=stable_seed("selection"), prompts=self.prompts, autocast=self._autocast)
        cache = pass_rate_cache(model_identity(self.config.model.name), engine.label, self.policy.style, cfg)
        known = json.loads(cache.read_text()) if self.is_main and cache.is_file() else {}
        if self.is_main and (self.run_dir / PASS_RATES).is_file():  # given (see PASS_RATES); the cache's first
            known = {**json.loads((self.run_dir / PASS_RATES).read_text())["rates"], **known}
        known = self.ranks.gather(known)[0]  # rank 0's cache for every rank: they sample the same problems

        def sample(problems: Sequence[Problem]) -> dict[str, list[bool]]:
            sampled = actor.sample(problems, 0, self.ranks.index, self.ranks.count)
            mine = {g.problem.id: [j.verdict.status == "pass" for j in g.samples] for g in sampled.groups}
            return {k: v for part in self.ranks.gather(mine) for k, v in part.items()}

        def save(rates: dict[str, float]) -> None:
            if self.is_main:
                cache.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(cache, json.dumps(rates, sort_keys=True))

        started = time.perf_counter()
        self.sampler.rates = estimate_pass_rates(self.problems, sample, known, cfg.problems_per_step, save)
        if self.is_main:
            write_text_atomic(self.run_dir / PASS_RATES, json.dumps(
                pass_rate_summary(self.problems, self.sampler.rates, cache, time.perf_counter() - started),
                indent=1) + "\n")

    def _sl_items(self, n: int) -> tuple[list[TrainItem], int]:
        """``n`` uniform draws from ``optim.sl_source``'s sequences: reference solutions of training
        problems (any problem, any solution), passing programs from the run's pool, or both together
        (none while the source is empty); and how many of them were passing programs."""
        source = self.config.optim.sl_source
        references = self.references if source != "passing" else []
        passing = self.passing.programs if source != "references" else []
        items, drawn_passing = [], 0
        eos = self.policy.tokenizer.eos_token_id
        for _ in range(n if references or passing else 0):
            k = self.sl_rng.randrange(len(references) + len(passing))
            if k >= len(references):  # a sampled program: its own tokens, as the engine produced them
                _, prompt_ids, completion_ids = passing[k - len(references)]
                items.append(TrainItem(prompt_ids, completion_ids, [1.0] * len(completion_ids)))
                drawn_passing += 1
                continue
            index, solution = references[k]
            problem = self.problems[index]
            prompt, prompt_ids = self.prompts(problem)
            target = self.policy.tokenizer(prompt.answer(problem.solutions[solution]),
                                           add_special_tokens=False).input_ids + ([eos] if eos is not None else [])
            items.append(TrainItem(prompt_ids, target, [1.0] * len(target)))
        return items, drawn_passing

    def _kept(self, sample: Sample) -> int:
        return kept_target_tokens(len(sample.prompt_ids), len(sample.completion_ids), self.config.optim.max_seq_len,
                                  self.policy.is_encoder_decoder)

    def _backward(self, weighted: Sequence[Weighted]) -> dict[str, Any]:
        """Forward and backward of the rank's weighted sequences, micro-batch by micro-batch (every rank
        runs as many as the busiest: FSDP's forward is a collective); the loss parts (each already
        scaled by its micro-batch's normaliser) and the importance diagnostics of what ran."""
        opt, pad = self.config.optim, self.policy.tokenizer.pad_token_id
        items = [w.item for w in weighted]
        batches = micro_batches(items, opt.max_seq_len, opt.micro_batch_tokens, opt.pack_row_tokens,
                                opt.share_prompts, self.policy.is_encoder_decoder)
        runs = self.ranks.most(len(batches))
        part: dict[str, Any] = {"loss_rl": 0.0, "loss_sl": 0.0, "loss_kl": 0.0, "tokens": 0, "forwards": runs,
                                "diagnostics": {}}
        for n in range(runs):
            with self.ranks.grad_sync(self.learner, on=n == runs - 1):
                if n >= len(batches):  # an idle rank's share of the collective: a forward that changes nothing
                    token = self.policy.tokenizer.eos_token_id or 0
                    idle = tensors([[((token,), [0])]], [TrainItem([token], [token], [0.0])], opt.max_seq_len, pad,
                                   self.policy.is_encoder_decoder)
                    with self._autocast():
                        logp = logprobs(self.learner, idle)
                    self._start_logprobs(idle)  # the busy ranks' start-policy forward, when it runs the learner
                    (logp.sum() * 0.0).backward()
                    continue
                batch = tensors(batches[n], items, opt.max_seq_len, pad, self.policy.is_encoder_decoder)
                with self._autocast():
                    logp = logprobs(self.learner, batch)
                loss, parts, diagnostics = weighted_loss(logp, batch.owner, batch.weights, batch.behaviour,
                                                         [weighted[i] for i in order(batches[n])], opt.clip_eps,
                                                         opt.tis_cap, self._start_logprobs(batch), opt.kl_coef)
                loss.backward()
            part["loss_rl"] += parts["rl"]
            part["loss_sl"] += parts["sl"]
            part["loss_kl"] += parts["kl"]
            for key, values in diagnostics.items():
                part["diagnostics"].setdefault(key, []).extend(values)
            part["tokens"] += batch.tokens
        return part

    @torch.no_grad()
    def _start_logprobs(self, batch: Any) -> torch.Tensor | None:
        """The start policy's log-probs of a micro-batch's target tokens, for the KL term (None without one)."""
        if not self.config.optim.kl_coef:
            return None
        if self.start_model is not None:
            with self._autocast():
                return logprobs(self.start_model, batch)
        with self._autocast(), self.model.disable_adapter():  # through the (wrapped) learner: FSDP shards it
            return logprobs(self.learner, batch)

    def _learner_metrics(self, parts: list[dict[str, Any]], drawn: list[list[Sample]],
                         references: list[list[TrainItem]], grad_norm: float, elapsed: float) -> dict[str, Any]:
        """The update's metrics line from every rank's part. Each rank's losses sum to its weight times
        its mean micro-batch loss: the mean over ranks, unweighted."""
        opt, ranks = self.config.optim, self.ranks.count
        staleness, tokens = [x for p in parts for x in p["staleness"]], sum(p["tokens"] for p in parts)
        diagnostics = {key: [x for p in parts for x in p["diagnostics"].get(key, [])]
                       for key in ("ratio", "clipped", "kl", "kl_start")}
        loss_rl = sum(p["loss_rl"] for p in parts) / (ranks * opt.rl_weight) if opt.rl_weight and any(drawn) else None
        loss_sl = sum(p["loss_sl"] for p in parts) / (ranks * opt.sl_weight) if opt.sl_weight and any(references) \
            else None
        samples, skipped = sum(map(len, drawn)), sum(p["skipped"] for p in parts)
        return {"loss": opt.rl_weight * (loss_rl or 0.0) + opt.sl_weight * (loss_sl or 0.0), "loss_rl": loss_rl,
                "loss_sl": loss_sl, "grad_norm": grad_norm,
                "staleness_mean": mean_or_none(staleness), "staleness_max": max(staleness, default=None),
                "train_samples": samples, "train_references": sum(map(len, references)),
                "train_tokens": tokens, "train_forwards": sum(p["forwards"] for p in parts),
                "samples_skipped_zero_weight": skipped, "samples_skipped_frac": skipped / samples if samples else None,
                "importance_ratio_mean": mean_or_none(diagnostics["ratio"]),
                "importance_clip_frac": mean_or_none(diagnostics["clipped"]),
                "kl_behaviour_current": mean_or_none(diagnostics["kl"]),
                "kl_start": mean_or_none(diagnostics["kl_start"]),
                "loss_kl": sum(p["loss_kl"] for p in parts) / ranks if opt.kl_coef else None,
                "time_train_s": elapsed, "tokens_per_s_train": tokens / elapsed if elapsed else None}

    def _fresh_check(self, samples: Sequence[Sample], n: int = 2) -> dict[str, Any]:
        """The learner on up to ``n`` fresh samples (one extra no-grad forward): the mean |engine log-prob -
        learner log-prob| of their tokens, and the policy's entropy at those tokens.

        Both score the same tokens with the same weights (the samples' version is the learner's
        step), so the gap is the engine's numerical mismatch (quantization, kernels): what
        importance correction has to absorb. The entropy falling to zero is a policy collapsing.
        """
        fresh = [s for s in samples if s.policy_version == self.step and s.logprobs][:n]
        if not fresh or not (self.is_main or self.ranks.fsdp):  # under FSDP the forward is a collective
            return {"logprob_gap": None, "entropy": None}
        started = time.perf_counter()
        batch = collate([TrainItem(s.prompt_ids, s.completion_ids, [1.0] * len(s.completion_ids), s.logprobs)
                         for s in fresh], self.policy.tokenizer.pad_token_id, self.config.optim.max_seq_len,
                        self.policy.is_encoder_decoder)
        batch = dataclasses.replace(batch, inputs={k: v.to(self.model.device) for k, v in batch.inputs.items()})
        with torch.no_grad(), self._autocast():  # not inference_mode: FSDP2 would gather into inference tensors
            logits, targets = target_logits(self.model, batch)
            learner = logprobs_of(logits, targets)
        gap = (batch.behaviour - learner.cpu()).abs()
        return {"logprob_gap": float(gap.mean()), "logprob_gap_max": float(gap.max()),
                "entropy": float(entropy(logits).mean()), "time_logprob_gap_s": time.perf_counter() - started}

    def _offline_fill(self, actor: Actor) -> None:
        """CodeRL-style offline data: the initial policy samples every training problem once."""
        per_call = self.config.rollout.problems_per_step
        problems = self.sampler.draw(len(self.problems))
        for start in range(0, len(problems), per_call):
            batch = [self.problems[i] for i in problems[start : start + per_call]]
            rollout = self._sample_and_score(actor, batch, step=0)
            self.buffer.stage(rollout.samples)
            self.passing.add(rollout.passing)
        self.buffer.refresh(0)
        self.offline_done = True

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if not self.autocast_dtype:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=getattr(torch, self.autocast_dtype))

    # ---------------------------------------------------------------- state

    def save_checkpoint(self, record: dict[str, Any] | None = None) -> Path | None:
        """Checkpoint this step (:func:`rltf.train.checkpoint.save`) on rank 0; every rank calls it (under
        FSDP the weights and optimizer state are gathered from all). ``record`` (this step's metrics
        line) travels with it: the line is appended to ``metrics.jsonl`` only after the rename, so a
        resume restores it if the kill came in between."""
        self.ranks.gather_weights()
        optimizer_state = self.ranks.optimizer_state(self.optimizer)
        if not self.is_main:
            return None
        state = {"step": self.step, "offline_done": self.offline_done, "sampler": self.sampler.state_dict(),
                 "sl_rng": self.sl_rng.getstate(), "passing": self.passing.state_dict(), "record": json.dumps(record),
                 "processes": self.ranks.count, "fsdp": self.ranks.fsdp}
        return save(self.run_dir / CHECKPOINTS, self.step, self.config.checkpoint.keep, self.serving, optimizer_state,
                    self.scheduler, self.buffer, state)

    def _load_state(self, checkpoint: Path) -> None:
        self.buffer, state, optimizer_state = load(checkpoint, self.scheduler, self.model.device)
        if state.get("processes", 1) != self.ranks.count:
            raise ValueError(f"{checkpoint} was written by a run of {state.get('processes', 1)} processes; resume it "
                             f"with as many (this one has {self.ranks.count}): each rank trains grad_accum "
                             "micro-batches")
        if state.get("fsdp", False) != self.ranks.fsdp:
            raise ValueError(f"{checkpoint} was written {'with' if state.get('fsdp') else 'without'} FSDP; resume it "
                             "the same way (its optimizer state is saved in that mode's layout)")
        self.ranks.load_optimizer_state(self.optimizer, optimizer_state)
        # overrides on resume apply from the next refresh
        self.buffer.capacity, self.buffer.mode = self.config.buffer.capacity, self.config.buffer.mode
        self.step, self.offline_done = state["step"], state["offline_done"]
        self.sampler.load_state_dict(state["sampler"])
        restore_random(self.sl_rng, state["sl_rng"])
        if "passing" in state:  # checkpoints from before the pool: it starts empty
            self.passing.load_state_dict(state["passing"])
        self._checkpoint_record = json.loads(state["record"])

    def _truncate_metrics(self) -> None:
        """Make ``metrics.jsonl`` and ``samples.jsonl`` end at the checkpoint's step: later steps (and a
        torn last line) will be redone, and the checkpoint's own metrics line comes back if the kill
        came before it was written (its samples are written before the checkpoint)."""
        for name in (METRICS, SAMPLES):
            path = self.run_dir / name
            kept = [r for r in read_metrics(self.run_dir, name) if r.get("step", 0) <= self.step]
            if name == METRICS and self._checkpoint_record and not any(r["step"] == self.step for r in kept):
                kept.append(self._checkpoint_record)
            if path.exists() or kept:
                write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

    def _maybe_eval(self, engine: Engine, judge: JudgeService, trackers: Trackers, progress: Any) -> None:
        cfg, step = self.config.eval, self.step
        due = (step == 0 and cfg.at_start) or (step == self.config.steps and cfg.at_end) \
            or (cfg.every > 0 and step % cfg.every == 0)
        out = self.run_dir / EVAL_DIR / f"step-{step:06d}"
        if self.evaluator is None or not due or (out / "summary.json").exists():
            return
        if engine.policy_version != step:  # with sync_every > 1 the engine may hold older weights
            self.ranks.gather_weights()  # every rank (a collective under FSDP); rank 0 evaluates
            if self.is_main:
                engine.sync(step)
        if not self.is_main:
            return
        progress.stop()  # the evaluation shows its own progress bar; rich allows one at a time
        devices = range(torch.cuda.device_count())
        with torch.random.fork_rng(devices=devices), self._autocast():  # evaluation must not shift training RNG
            summary = self.evaluator(engine, judge, step, out)
        progress.start()
        trackers.log_eval(step, summary)


