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

Data-parallel (``accelerate launch --num_processes N``): every rank holds the whole state (problem
order, buffer, RNGs, engine, judge), samples and judges a contiguous share of each step's problems,
and receives the others' samples, so the buffers stay identical; the update draws the global batch
(N x ``grad_accum`` micro-batch pairs) and each rank trains on its share under DDP, which averages
the gradients. N ranks thus take the steps one process would take with N x ``grad_accum``. Rank 0
writes metrics, evaluations and checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltf.buffer import OnlineBuffer, Sample
from rltf.config import TrainConfig, save_config
from rltf.datasets import drop_mbpp_leaks
from rltf.generation import Engine, make_engine
from rltf.models import DEFAULT_MODEL, Policy, autocast_dtype, embedded_gguf, set_threads
from rltf.problems import Problem, load_problems
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
from rltf.train.losses import (
    TrainItem,
    collate,
    kept_target_tokens,
    target_logprobs,
)
from rltf.train.packing import Weighted, build, order, packed_logprobs, plan, weigh, weighted_loss
from rltf.train.report import log_scalars, progress_text, read_metrics
from rltf.train.rollout import Actor, JudgeService, Prompts, Rollout, mean_or_none, stable_seed

Evaluator = Callable[[Engine, JudgeService, int, Path], dict[str, Any]]
"""Periodic evaluation hook ``(engine, judge, step, out_dir) -> summary``; callers pass
:func:`rltf.evaluation.train_evaluator` (the trainer does not import evaluation: data flows the other way)."""



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


def launcher_fsdp(config: TrainConfig) -> TrainConfig:
    """``config`` with ``distributed.fsdp`` on when ``accelerate launch`` was given an FSDP config
    (``--use_fsdp``; it says so in the ranks' environment, on CPUs too): FSDP2 only, its
    ``reshard_after_forward`` taken from the launcher."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return config
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise ValueError("accelerate is configured for FSDP version 1; rltf shards with FSDP2 (fully_shard): "
                         "set fsdp_version: 2 in the accelerate config")
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"
    return dataclasses.replace(config, distributed=dataclasses.replace(config.distributed, fsdp=True,
                                                                       reshard_after_forward=reshard))


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Runs (or resumes) one training run in ``run_dir``; see the module docstring for the loop."""

    def __init__(self, config: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                 evaluator: Evaluator | None = None, show_progress: bool | None = None) -> None:
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        config = launcher_fsdp(config)
        self.config, self.run_dir, self.evaluator = config, Path(run_dir), evaluator
        self.accelerator = Accelerator(cpu=config.model.device == "cpu", kwargs_handlers=[
            InitProcessGroupKwargs(timeout=timedelta(seconds=config.distributed.timeout_s))])
        kind = self.accelerator.distributed_type.value
        if kind not in ("NO", "MULTI_CPU", "MULTI_GPU", *(("FSDP",) if config.distributed.fsdp else ())):
            raise ValueError(f"accelerate is configured for {kind}; rltf trains data-parallel (DDP) or sharded with "
                             "torch's FSDP2 (distributed.fsdp=true, or an accelerate FSDP config): DeepSpeed would "
                             "own the model and optimizer that each step's engine sync reads (README, Multi-GPU "
                             "and multi-node)")
        self.ranks, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.fsdp = config.distributed.fsdp and self.ranks > 1
        self.is_main = self.accelerator.is_main_process
        self.show_progress = (config.log.progress if show_progress is None else show_progress) and self.is_main
        checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if not resume and ((self.run_dir / CHECKPOINTS).exists() or (self.run_dir / METRICS).exists()):
            raise FileExistsError(f"{self.run_dir} already holds a run: resume it or choose another directory")
        self.accelerator.wait_for_everyone()  # every rank has looked before rank 0 writes
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
        self.references = [(i, s) for i, p in enumerate(self.problems) for s in range(len(p.solutions))]
        if not config.rollout.enabled and not self.references:
            raise ValueError("supervised fine-tuning (rollout.enabled=false) needs reference solutions; "
                             "the training problems have none")
        with self.accelerator.main_process_first():  # rank 0 writes a random init or model conversion once
            self.policy = self._load_policy(checkpoint)
        # prompts are cut once, to what collate keeps beside a full-length completion
        self.policy.max_prompt_tokens = config.optim.max_seq_len if self.policy.is_encoder_decoder else \
            max(1, config.optim.max_seq_len - config.rollout.max_new_tokens)
        self.model = self.policy.model
        if config.optim.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        # what the engine serves and checkpoints save: the policy itself, or under FSDP a whole copy
        self.serving = self._shard() if self.fsdp else self.policy
        # what the update's forward passes run: the model itself (sharded in place under FSDP), or its
        # DDP wrapper (same parameters)
        self.learner = self.accelerator.prepare_model(self.model) if self.ranks > 1 and not self.fsdp else self.model
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
        self.buffer = OnlineBuffer(config.buffer.capacity, seed=stable_seed(config.seed, "buffer"),
                                   mode=config.buffer.mode)
        self.sampler = ProblemSampler(len(self.problems), seed=stable_seed(config.seed, "problems"))
        self.sl_rng = random.Random(stable_seed(config.seed, "sl"))
        self.step = 0
        self.offline_done = False
        self.prompts = Prompts(self.policy)
        self._checkpoint_record: dict[str, Any] | None = None
        if checkpoint is not None:
            self._load_state(checkpoint)
        if self.is_main:
            self._truncate_metrics()

    # ---------------------------------------------------------------- setup

    def _load_policy(self, checkpoint: Path | None) -> Policy:
        m = self.config.model
        source = m.name
        if checkpoint is not None and not m.lora.enabled:
            source = str(checkpoint / "model")
        elif m.random_init is not None:
            source = str(self._random_model())
        # a GPU per rank; under FSDP loaded on the CPU first, where _shard copies it for the engine
        device = "cpu" if self.fsdp else m.device if m.device == "cpu" or self.ranks == 1 else \
            str(self.accelerator.device)
        policy = Policy.load(source, allow_download=m.allow_download, style=m.style, dtype=m.dtype, device=device)
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

    def _shard(self) -> Policy:
        """FSDP2: keep a whole copy of the model (loaded on the CPU) there for the engine and the
        checkpoints (refreshed by :meth:`_gather`), move the learner to the rank's device and shard
        it: every decoder layer (the model's ``_no_split_modules``) and the model itself, so each
        layer is gathered only around its use. The copy never touches the GPU."""
        from torch.distributed.fsdp import fully_shard

        serving = dataclasses.replace(self.policy, model=copy.deepcopy(self.model).eval())
        serving.model.requires_grad_(False)
        if self.config.model.device != "cpu":  # the learner goes to the rank's GPU; the copy never does
            self.model.to(self.accelerator.device)
        layers = set(getattr(self.model, "_no_split_modules", None) or ())
        reshard = self.config.distributed.reshard_after_forward
        for module in [m for m in self.model.modules() if type(m).__name__ in layers]:
            fully_shard(module, reshard_after_forward=reshard)
        fully_shard(self.model, reshard_after_forward=reshard)
        return serving

    def _gather(self) -> None:
        """FSDP: copy the learner's whole current weights into the serving copy. A collective: every
        rank calls it at the same point. Without FSDP the serving policy is the learner's: nothing to do."""
        if not self.fsdp:
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        whole = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))
        self.serving.model.load_state_dict(whole)

    def _grad_sync(self, on: bool) -> contextlib.AbstractContextManager[Any]:
        """Whether this backward exchanges gradients (only a rank's last one does): DDP's ``no_sync``,
        or FSDP2's switch, under which gradients accumulate unsharded until the exchanging backward."""
        if self.fsdp:
            self.model.set_requires_gradient_sync(on)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if on else self.accelerator.no_sync(self.learner)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        dtype = autocast_dtype(self.config.optim.autocast, self.model.device.type)
        if not dtype:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.model.device.type, dtype=getattr(torch, dtype))

    # ---------------------------------------------------------------- state

    def save_checkpoint(self, record: dict[str, Any] | None = None) -> Path | None:
        """Checkpoint this step (:func:`rltf.train.checkpoint.save`) on rank 0; every rank calls it (under
        FSDP the weights and optimizer state are gathered from all). ``record`` (this step's metrics
        line) travels with it: the line is appended to ``metrics.jsonl`` only after the rename, so a
        resume restores it if the kill came in between."""
        self._gather()
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            optimizer_state = get_optimizer_state_dict(self.model, self.optimizer, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))  # the whole state, on rank 0 only
        elif self.is_main:
            optimizer_state = self.optimizer.state_dict()
        if not self.is_main:
            return None
        state = {"step": self.step, "offline_done": self.offline_done, "sampler": self.sampler.state_dict(),
                 "sl_rng": self.sl_rng.getstate(), "record": json.dumps(record), "processes": self.ranks,
                 "fsdp": self.fsdp}
        return save(self.run_dir / CHECKPOINTS, self.step, self.config.checkpoint.keep, self.serving, optimizer_state,
                    self.scheduler, self.buffer, state)

    def _load_state(self, checkpoint: Path) -> None:
        self.buffer, state, optimizer_state = load(checkpoint, self.scheduler, self.model.device)
        if state.get("processes", 1) != self.ranks:
            raise ValueError(f"{checkpoint} was written by a run of {state.get('processes', 1)} processes; resume it "
                             f"with as many (this one has {self.ranks}): each rank trains grad_accum micro-batches")
        if state.get("fsdp", False) != self.fsdp:
            raise ValueError(f"{checkpoint} was written {'with' if state.get('fsdp') else 'without'} FSDP; resume it "
                             "the same way (its optimizer state is saved in that mode's layout)")
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, optimizer_state,
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(optimizer_state)
        # overrides on resume apply from the next refresh
        self.buffer.capacity, self.buffer.mode = self.config.buffer.capacity, self.config.buffer.mode
        self.step, self.offline_done = state["step"], state["offline_done"]
        self.sampler.load_state_dict(state["sampler"])
        version, internal, gauss = state["sl_rng"]
        self.sl_rng.setstate((version, tuple(internal), gauss))
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

    # ---------------------------------------------------------------- the loop

    def run(self, stop_at: int | None = None) -> int:
        """Train until ``config.steps`` (or ``stop_at``, to simulate an interruption); returns the step."""
        from torch.utils.tensorboard import SummaryWriter

        target = min(self.config.steps, stop_at if stop_at is not None else self.config.steps)
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step + 1) \
            if self.config.log.tensorboard and self.is_main else None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn("[bold]train"), BarColumn(bar_width=20), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), disable=not self.show_progress)
        engine = make_engine(self.serving, self.config.engine, version=self.step, device=str(self.model.device))
        if self.fsdp and engine.shares_weights:
            engine.close()
            raise ValueError(f"distributed.fsdp: the {engine.name} engine samples with the learner's own (sharded) "
                             "modules; use engine.name=llamacpp or ct2")
        try:
            with JudgeService(self.config.judge) as judge, progress, \
                    (self.run_dir / METRICS).open("a") if self.is_main else open(os.devnull, "w") as sink:
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
                        log_scalars(writer, record)
                    progress.update(task, completed=self.step, info=progress_text(record))
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
            self.buffer.stage(self._shared_rollout(actor, batch, step=0).samples)
        self.buffer.refresh(0)
        self.offline_done = True

    def _train_step(self, actor: Actor) -> dict[str, Any]:
        started = time.perf_counter()
        record: dict[str, Any] = {"step": self.step + 1}
        if self.config.rollout.enabled and self.config.rollout.online:
            rollout = self._rollout(actor)
            self.buffer.stage(rollout.samples)
            if self.config.log.samples and self.is_main:  # before the checkpoint: a resume keeps them
                with (self.run_dir / SAMPLES).open("a", encoding="utf-8") as sink:
                    sink.writelines(json.dumps(program) + "\n" for program in rollout.program_records)
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
        synced = time.perf_counter()
        if due:
            self._gather()
            engine.sync(self.step)
        record["time_sync_s"] = time.perf_counter() - synced if due else 0.0
        record["engine_version"] = engine.policy_version
        record["time_step_s"] = time.perf_counter() - started
        return record

    def _rollout(self, actor: Actor) -> Rollout:
        """This step's rollout; with dynamic sampling, more problems replace groups without signal
        until ``problems_per_step`` groups carry some or ``max_rollouts`` calls were made."""
        cfg = self.config.rollout
        rollout, calls, wanted = Rollout(), 0, cfg.problems_per_step
        while wanted > 0 and calls < (cfg.max_rollouts if cfg.dynamic_sampling else 1):
            rollout.merge(self._shared_rollout(actor, [self.problems[i] for i in self.sampler.draw(wanted)], self.step))
            calls += 1
            wanted = cfg.problems_per_step - (rollout.groups - rollout.groups_without_signal)
        return rollout

    def _shared_rollout(self, actor: Actor, problems: Sequence[Problem], step: int) -> Rollout:
        """The rollout of ``problems``: this rank samples and judges its share, and every rank gets
        the whole (the ranks' shares merged in rank order: the one-process rollout)."""
        mine = actor.rollout(problems, step, self.rank, self.ranks)
        if self.ranks == 1:
            return mine
        from accelerate.utils import gather_object

        whole = Rollout()
        for part in gather_object([mine]):
            whole.merge(part)
        return whole

    def _logprob_gap(self, samples: Sequence[Sample], n: int = 2) -> dict[str, Any]:
        """Mean |engine log-prob - learner log-prob| over the tokens of up to ``n`` fresh samples (one extra
        no-grad forward on them).

        Both score the same tokens with the same weights (the samples' version is the learner's
        step), so the gap is the engine's numerical mismatch (quantization, kernels): what
        importance correction has to absorb.
        """
        fresh = [s for s in samples if s.policy_version == self.step and s.logprobs][:n]
        if not fresh or not (self.is_main or self.fsdp):  # under FSDP the forward is a collective
            return {"logprob_gap": None}
        started = time.perf_counter()
        with torch.no_grad():  # not inference_mode: FSDP2 would gather into inference tensors and fail
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

    def _logprobs(self, items: Sequence[TrainItem], model: Any = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """The log-probs of the items' target tokens under ``model`` (default: the learner's model,
        unwrapped), their weights and behaviour log-probs, and the tokens fed."""
        batch = collate(items, self.policy.tokenizer.pad_token_id, self.config.optim.max_seq_len,
                        self.policy.is_encoder_decoder)
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        with self._autocast():
            logp, weights, behaviour = target_logprobs(self.model if model is None else model, batch)
        return logp, weights, behaviour, int(batch["attention_mask"].sum())

    def _kept(self, sample: Sample) -> int:
        return kept_target_tokens(len(sample.prompt_ids), len(sample.completion_ids), self.config.optim.max_seq_len,
                                  self.policy.is_encoder_decoder)

    def _update(self) -> dict[str, Any]:
        """One optimizer step over the global batch: ``grad_accum`` pairs of an RL micro-batch and an
        SL micro-batch per rank.

        Each micro-batch's normaliser (its token mean, divided by ``grad_accum``) becomes a scale
        on each of its sequences, so the step's loss is ``Σ scale · Σ_t term_t`` whatever runs
        together: the rank's sequences are then packed by token budget with shared prompts run
        once (:mod:`rltf.train.packing`), and samples whose returns are all zero, whose terms are
        zero under every importance correction, are not run at all.

        Every rank draws the whole batch (same buffer, same RNGs) and trains on its contiguous share
        of the pairs; gradients are exchanged at the rank's last backward (the others run under
        ``no_sync``), after every rank has run as many forwards as the busiest one (FSDP's forward is
        a collective). The average over N ranks is the one-process step over N x ``grad_accum`` pairs.
        """
        opt = self.config.optim
        started = time.perf_counter()
        self.learner.train()
        self.optimizer.zero_grad(set_to_none=True)
        pairs = opt.grad_accum * self.ranks
        # every RL micro-batch is drawn first: the global token mean needs the step's token count
        drawn = [self.buffer.sample(opt.micro_batch) if opt.rl_weight else [] for _ in range(pairs)]
        references = [self._sl_items(opt.micro_batch) if opt.sl_weight else [] for _ in range(pairs)]
        kept = [[self._kept(s) for s in samples] for samples in drawn]
        step_tokens = sum(map(sum, kept))
        if self.config.log.learner_batches and self.is_main:
            self._record_batches(drawn, references)
        share = range(self.rank * opt.grad_accum, (self.rank + 1) * opt.grad_accum)
        weighted, skipped = weigh(
            [[TrainItem(s.prompt_ids, s.completion_ids, s.returns, s.logprobs) for s in drawn[i]] for i in share],
            [references[i] for i in share], rl_weight=opt.rl_weight, sl_weight=opt.sl_weight,
            grad_accum=opt.grad_accum, ranks=self.ranks, aggregation=opt.loss_aggregation, importance=opt.importance,
            step_tokens=step_tokens, max_len=opt.max_seq_len, encoder_decoder=self.policy.is_encoder_decoder)
        local = self._backward(weighted)
        local["staleness"] = [self.step - s.policy_version for i in share for s in drawn[i]]
        local["skipped"] = skipped
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, opt.max_grad_norm if opt.max_grad_norm > 0
                                                   else math.inf).item()
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.learner.eval()
        elapsed = time.perf_counter() - started
        parts = [local]
        if self.ranks > 1:
            from accelerate.utils import gather_object

            parts = gather_object([local])
        staleness, tokens = [x for p in parts for x in p["staleness"]], sum(p["tokens"] for p in parts)
        diagnostics = {key: [x for p in parts for x in p["diagnostics"].get(key, [])]
                       for key in ("ratio", "clipped", "kl")}
        # each rank's parts sum to its weight times its mean micro-batch loss: the mean over ranks, unweighted
        loss_rl = sum(p["loss_rl"] for p in parts) / (self.ranks * opt.rl_weight) if opt.rl_weight and any(drawn) \
            else None
        loss_sl = sum(p["loss_sl"] for p in parts) / (self.ranks * opt.sl_weight) \
            if opt.sl_weight and any(references) else None
        samples = sum(map(len, drawn))
        return {"loss": opt.rl_weight * (loss_rl or 0.0) + opt.sl_weight * (loss_sl or 0.0), "loss_rl": loss_rl,
                "loss_sl": loss_sl, "lr": lr,
                "grad_norm": grad_norm,
                "staleness_mean": mean_or_none(staleness), "staleness_max": max(staleness, default=None),
                "train_tokens": tokens, "train_forwards": sum(p["forwards"] for p in parts),
                "samples_skipped_zero_weight": sum(p["skipped"] for p in parts),
                "samples_skipped_frac": sum(p["skipped"] for p in parts) / samples if samples else None,
                "importance_ratio_mean": mean_or_none(diagnostics["ratio"]),
                "importance_clip_frac": mean_or_none(diagnostics["clipped"]),
                "kl_behaviour_current": mean_or_none(diagnostics["kl"]),
                "time_train_s": elapsed, "tokens_per_s_train": tokens / elapsed if elapsed else None}

    def _record_batches(self, drawn: list[list[Sample]], references: list[list[TrainItem]]) -> None:
        """Append this step's micro-batches to ``learner_batches.jsonl`` (``log.learner_batches``)."""
        record = {"step": self.step + 1, "optim": dataclasses.asdict(self.config.optim),
                  "rl": [[{"prompt_ids": list(s.prompt_ids), "target_ids": list(s.completion_ids),
                           "weights": list(s.returns), "behaviour": list(s.logprobs)} for s in samples]
                         for samples in drawn],
                  "sl": [[{"prompt_ids": list(it.prompt_ids), "target_ids": list(it.target_ids)} for it in items]
                         for items in references]}
        with (self.run_dir / "learner_batches.jsonl").open("a", encoding="utf-8") as sink:
            sink.write(json.dumps(record) + "\n")

    def _backward(self, weighted: Sequence[Weighted]) -> dict[str, Any]:
        """Forward and backward of the rank's weighted sequences, micro-batch by micro-batch; the
        loss terms (each already divided by its micro-batch's normaliser and ``grad_accum``) and the
        importance diagnostics of the sequences that ran."""
        opt = self.config.optim
        items = [w.item for w in weighted]
        if self.policy.is_encoder_decoder:  # no packing for encoder-decoders: a padded micro-batch each
            batches = [[[((), [i])]] for i in range(len(items))]
        else:
            batches = plan(items, opt.max_seq_len, opt.micro_batch_tokens, opt.pack_row_tokens, opt.share_prompts)
        runs = len(batches)
        if self.ranks > 1:  # every rank runs as many forwards as the busiest (FSDP's forward is a collective)
            count = torch.tensor([runs], device=self.model.device)
            torch.distributed.all_reduce(count, op=torch.distributed.ReduceOp.MAX)
            runs = int(count.item())
        local: dict[str, Any] = {"loss_rl": 0.0, "loss_sl": 0.0, "tokens": 0, "forwards": runs, "diagnostics": {}}
        for n in range(runs):
            with self._grad_sync(n == runs - 1):
                if n >= len(batches):  # an idle rank's share of the collective: a zero-weighted forward
                    self._idle_forward()
                    continue
                members = [weighted[i] for i in order(batches[n])]
                with self._autocast():
                    if self.policy.is_encoder_decoder:
                        logp, weights, behaviour, tokens = self._logprobs([members[0].item], self.learner)
                        owner = torch.zeros(len(logp), dtype=torch.long)
                    else:
                        batch = build(batches[n], items, opt.max_seq_len, self.policy.tokenizer.pad_token_id)
                        logp = packed_logprobs(self.learner, batch)
                        owner, weights, behaviour, tokens = batch.owner, batch.weights, batch.behaviour, batch.tokens
                loss, parts, diagnostics = weighted_loss(logp, owner, weights, behaviour, members, opt.clip_eps,
                                                         opt.tis_cap)
                loss.backward()
                local["loss_rl"] += parts["rl"]
                local["loss_sl"] += parts["sl"]
                for key, values in diagnostics.items():
                    local["diagnostics"].setdefault(key, []).extend(values)
                local["tokens"] += tokens
        return local

    def _idle_forward(self) -> None:
        """A forward and backward that changes nothing: a rank with fewer micro-batches than another
        still takes part in each collective."""
        token = self.policy.tokenizer.eos_token_id or 0
        item = TrainItem([token], [token], [0.0])
        if self.policy.is_encoder_decoder:
            logp = self._logprobs([item], self.learner)[0]
        else:
            logp = packed_logprobs(self.learner, build([[((token,), [0])]], [item], self.config.optim.max_seq_len,
                                                       self.policy.tokenizer.pad_token_id))
        (logp.sum() * 0.0).backward()

    def _maybe_eval(self, engine: Engine, judge: JudgeService, writer: Any, progress: Any) -> None:
        cfg, step = self.config.eval, self.step
        due = (step == 0 and cfg.at_start) or (step == self.config.steps and cfg.at_end) \
            or (cfg.every > 0 and step % cfg.every == 0)
        out = self.run_dir / EVAL_DIR / f"step-{step:06d}"
        if self.evaluator is None or not due or (out / "summary.json").exists():
            return
        if engine.policy_version != step:  # with sync_every > 1 the engine may hold older weights
            self._gather()  # every rank (a collective under FSDP); rank 0 evaluates
            if self.is_main:
                engine.sync(step)
        if not self.is_main:
            return
        progress.stop()  # the evaluation shows its own progress bar; rich allows one at a time
        devices = range(torch.cuda.device_count())
        with torch.random.fork_rng(devices=devices), self._autocast():  # evaluation must not shift training RNG
            summary = self.evaluator(engine, judge, step, out)
        progress.start()
        if writer is not None:
            for k, v in summary.get("pass_at_k", {}).items():
                writer.add_scalar(f"eval/pass@{k}", v, step)
            writer.flush()

