"""Training configuration: nested dataclasses, read from YAML and ``key=value`` overrides.

The dataclass defaults *are* the embedded default run (``rltf/configs/smollm2-mbpp-cpu.yaml`` repeats
them for reading), so ``rltf train`` works from an installed wheel with no file at all. Unknown
keys and values of the wrong type fail loudly with the dotted key: a misspelt ablation switch would
otherwise silently run the default experiment.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from rltf.feedback import FeedbackConfig
from rltf.generation import EngineConfig
from rltf.judge import JudgeConfig

DEFAULT_CONFIG = "smollm2-mbpp-cpu"
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""The named configs (``--config tiny-smoke``), shipped inside the package like its data."""


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclasses; the message names the key."""


@dataclass
class LoraSettings:
    """PEFT LoRA on the policy; checkpoints then hold the adapter (for resume) and merged weights."""

    enabled: bool = False
    r: int = 16
    """The adapters' rank."""
    alpha: int = 32
    """The adapters' scale numerator: their update is scaled by ``alpha / r``."""
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """The modules that get adapters: the attention projections of llama-style models."""


@dataclass
class ModelConfig:
    """``name``: model directory, ``.gguf`` or hub id (``smollm2-135m-instruct`` = the embedded one).

    ``random_init``: build a fresh random ``LlamaConfig`` with these settings and ``name``'s
    tokenizer instead of loading weights (smoke tests; nothing is downloaded).
    """

    name: str = "smollm2-135m-instruct"
    style: Literal["auto", "chat", "base"] = "auto"
    """Prompts through the tokenizer's chat template (``chat``), as plain text to complete (``base``), or
    ``auto``: chat where the tokenizer has a template."""
    dtype: str = "float32"
    device: str = "auto"
    """``auto``: a CUDA GPU where torch sees one, else the CPU (:func:`rltf.models.resolve_device`);
    or ``cpu``, ``cuda``, ``cuda:N``. The engine samples on the same device."""
    threads: int | None = 2
    """torch CPU threads for the learner (and the hf engine). 2 on the default 2-core machine: the
    learner runs alone, after generation and judging; with the hf engine and the judge sharing the
    cores, 1 (more threads than free cores makes OpenMP spin: 16x slower generation measured)."""
    allow_download: bool = False
    """Let transformers fetch a hub model; otherwise a hub id loads from the local cache only."""
    random_init: dict[str, Any] | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)


@dataclass
class DataConfig:
    """Training problems (a registered dataset or a problems ``.jsonl`` file); their reference
    solutions feed the supervised term."""

    dataset: str = "mbpp"
    """A registered dataset (``rltf data list``) or a canonical problems ``.jsonl(.gz)`` file."""
    split: str | None = "train"
    """The dataset's split (None: every split); a problems file has none."""
    path: str | None = None
    """A local copy of the dataset's data in place of the vendored file (required for ``apps``)."""
    limit: int | None = None
    """Train on the first N problems only (None: all)."""
    drop_leaks: bool = True
    """Leave out the 76 MBPP train tasks that twin a validation or test task (reworded, renamed or
    reparameterised; :func:`rltf.datasets.drop_mbpp_leaks`, rule in :mod:`rltf.leaks`) before
    ``limit``, so 298 of 374 remain; other datasets are unaffected."""


@dataclass
class RolloutConfig:
    """The actor: K samples + one greedy baseline per problem, ``problems_per_step`` problems per step.

    ``online: false`` is the CodeRL-style offline ablation: the initial policy samples every
    training problem once before the first update and never again. ``enabled: false`` samples
    nothing: supervised fine-tuning on the reference solutions alone (``rltf sft``), whose
    checkpoints an RL run starts from with ``model.name=RUN/checkpoints/step-N/model``.
    """

    enabled: bool = True
    online: bool = True
    problems_per_step: int = 10
    """Training problems drawn per optimizer step."""
    samples_per_problem: int = 4
    """K, the sampled programs per problem (the greedy baseline comes on top)."""
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 256
    """The longest completion; generation also stops as soon as the code block closes."""
    dynamic_sampling: bool = True
    """Drop groups without signal and sample more problems, up to ``max_rollouts`` generate calls per
    step, so updates carry signal: groups whose token returns are all zero (e.g. every sample passed)
    and, under ``rloo`` / ``grpo``, groups whose samples all got one reward (online difficulty filtering).
    On by default: on MBPP most groups hold no pass (the original samples without it: ``rltf-paper``)."""
    max_rollouts: int = 3
    """With ``dynamic_sampling``: at most this many generate calls per step."""
    selection: Literal["uniform", "learnable"] = "uniform"
    """Which problems a step draws: ``uniform`` (each once per epoch, the original's) or ``learnable``:
    in proportion to p(1 - p) + ``selection_floor``, p a problem's pass rate, estimated before the first
    step from ``selection_samples`` samples per problem (cached per model) and updated from every group
    (p <- (1 - ``selection_decay``)·p + ``selection_decay``·the group's pass rate)."""
    selection_samples: int = 16
    """``learnable``: samples per problem of the starting model that estimate its first pass rates."""
    selection_floor: float = 0.02
    """``learnable``: added to every problem's weight, so that none drops out of the draw."""
    selection_decay: float = 0.5
    """``learnable``: how far each new group's pass rate moves its problem's estimate."""


@dataclass
class BufferConfig:
    capacity: int = 6400
    """The FIFO's size in samples: the oldest leave when a refresh overfills it."""
    update_freq: int = 2
    """Staged samples enter the buffer every ``update_freq`` optimizer steps (paper: 50)."""
    mode: Literal["refresh", "window"] = "refresh"
    """``refresh``: train on the latest refresh's samples, each drawn once before any is drawn
    again (every sample is used when the updates until the next refresh draw as many RL samples as
    it brought); ``window``: the original's sliding window of ``capacity`` with uniform draws."""
    max_staleness: int | None = None
    """Drop samples drawn by weights more than this many optimizer steps old before each update."""


@dataclass
class OptimConfig:
    """One optimizer step = ``grad_accum`` x (one RL micro-batch from the buffer + one SL micro-batch)."""

    lr: float = 1e-5
    """AdamW's learning rate."""
    weight_decay: float = 0.05
    """AdamW's weight decay, on matrices only (not on biases and norms)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    scheduler: str = "constant_with_warmup"
    """A transformers schedule name (``get_scheduler``: ``linear``, ``cosine``, ...) over ``steps``."""
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm."""
    micro_batch: int = 40
    """Buffer samples per RL micro-batch. The default's 40 x 1 is one step's rollout (10 problems x 4
    samples): with ``buffer.update_freq`` 2 and ``mode: refresh`` every sampled program is trained once."""
    grad_accum: int = 1
    """Micro-batch pairs per optimizer step (per rank when data-parallel)."""
    sl_micro_batch: int | None = 4
    """Reference solutions per SL micro-batch; None: ``micro_batch`` (the original's one reference per
    buffer sample). The SL term is a token mean either way, so this sets its variance, not its weight; a
    reference costs its whole prompt (no sample shares it), so the default keeps the 4 a step it had
    when ``micro_batch`` was 4."""
    rl_weight: float = 8.0
    """Weight of the RL (policy-gradient) term; 0 trains the supervised term alone. 8 by default because
    the ``constant`` aggregation divides by ``rollout.max_new_tokens`` per sequence, about 5x an MBPP
    program's tokens: at 1 the RL gradient was a few per cent of the update (the paper's: 1, with
    ``token_mean``)."""
    sl_weight: float = 1.0
    """Weight of the supervised term on reference solutions, as the paper's trainer adds; 0: RL alone."""
    sl_source: Literal["references", "passing", "both"] = "references"
    """What the supervised term trains on: the problems' reference solutions (the paper's), the programs
    the policy sampled that passed, each once per problem (rejection-sampling fine-tuning, expert
    iteration: with ``rl_weight: 0`` the RFT baseline), or uniform draws from both together. Every
    source draws as many sequences a step (``sl_micro_batch`` x ``grad_accum``); until a program
    has passed, ``passing`` has nothing to draw and the step trains the RL term alone."""
    max_seq_len: int = 768
    """The longest prompt + completion the learner trains on; prompts are cut to leave room for
    ``rollout.max_new_tokens``."""
    autocast: Literal["auto", "bfloat16", "float16"] | None = "auto"
    """``bfloat16``/``float16`` autocast for forward and backward passes; weights and optimizer stay
    float32. ``auto``: bfloat16 where the hardware has it (GPUs; CPUs with AVX512-BF16 or AMX, where
    it is about 2x float32), float16 on older GPUs, float32 on other CPUs (emulated bfloat16 is slower)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, more time."""
    importance: Literal["none", "ppo_clip", "tis"] = "none"
    """Correct the RL term for samples drawn by another policy than the learner's (a stale buffer
    sample, or a half-precision engine), with ρ_t = π_θ(w_t) / π_behaviour(w_t) from the engine's
    stored log-probs: ``ppo_clip`` minimises -min(ρ_t·r_t, clip(ρ_t, 1 ± clip_eps)·r_t) (PPO's
    surrogate), ``tis`` weights each token's term by min(ρ_t, tis_cap), held constant (truncated
    importance sampling); ``none`` is the original's plain -r_t·log π_θ(w_t)."""
    clip_eps: float = 0.2
    """``ppo_clip``'s ε."""
    tis_cap: float = 2.0
    """``tis``'s cap on the importance ratio."""
    kl_coef: float = 0.0
    """β of a KL term that holds the learner to the policy the run started from (a trust region the
    original lacks): β·Σ scale·k3_t over the RL tokens, k3_t = e^(q_t - p_t) - (q_t - p_t) - 1 with q the
    start policy's log-prob (Schulman's k3, as GRPO uses it; ≥ 0, unbiased for KL(current‖start)),
    aggregated like the RL term. Samples skipped for zero returns carry none. Costs one no-grad
    forward of the start policy per micro-batch (LoRA: the adapters switched off; else a frozen copy)."""
    loss_aggregation: Literal["token_mean", "seq_mean", "global_token_mean", "constant"] = "constant"
    """How the RL term averages its token terms: over the tokens of each micro-batch (the original's;
    long completions weigh more), over each micro-batch's sequences (each sequence's token mean: a
    long wrong answer loses less per token), over all the step's RL tokens (independent of how they
    are split into micro-batches), or ``constant``: their sum over sequences x ``rollout.max_new_tokens``
    (Dr. GRPO, arXiv 2503.20783: no length bias either way; the default)."""
    micro_batch_tokens: int = 4096
    """What one forward and backward runs on: rows packed with sequences (:mod:`rltf.train.packing`),
    as many rows as fit this many padded tokens. ``micro_batch`` still fixes the loss (each
    micro-batch's token mean), so the budget changes speed and memory, not the update."""
    pack_row_tokens: int = 1024
    """The longest packed row (at least ``max_seq_len``). Attention is quadratic in a row's length,
    and groups packed into one row attend over each other's positions (masked, but computed): one
    default MBPP step took 166 s at 2048, 69 s at 1024 and 73 s unpacked (1 thread, float32)."""
    share_prompts: bool = True
    """Run a prompt once for every sequence of the step that shares it (a group's samples, and a
    reference of the same problem), with the prompt's gradient summed over them: exact, and the
    prompt is most of an MBPP sequence."""

    def __post_init__(self) -> None:
        if not self.max_seq_len <= self.pack_row_tokens <= self.micro_batch_tokens:
            raise ConfigError(f"optim needs max_seq_len ({self.max_seq_len}) <= pack_row_tokens "
                              f"({self.pack_row_tokens}) <= micro_batch_tokens ({self.micro_batch_tokens})")


@dataclass
class CheckpointConfig:
    every: int = 1
    """Checkpoint every N optimizer steps (and after the last)."""
    keep: int = 1
    """How many of the newest checkpoints to keep."""


@dataclass
class EvalConfig:
    """pass@1 on a fixed held-out subset: the same prompts before, during and after training.

    Greedy by default; ``samples`` > 1 with ``temperature`` > 0 measures the share of sampled
    programs that pass instead (what the learning test reports)."""

    dataset: str = "mbpp"
    """The held-out problems: a registered dataset or a problems file."""
    split: str | None = "test"
    path: str | None = None
    limit: int | None = 100
    """The first N problems of the split (None: all)."""
    every: int = 0
    """Also evaluate every N steps (0: only before and after)."""
    at_start: bool = True
    """Evaluate the starting model (step 0)."""
    at_end: bool = True
    """Evaluate after the last step."""
    max_new_tokens: int = 256
    batch_size: int = 128
    """Sequences per chunk; fast engines keep their slots full only with many sequences in flight."""
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.samples < 1 or (self.samples > 1 and self.temperature == 0):
            raise ConfigError("eval.samples must be 1 for greedy decoding (temperature 0), and >= 1")


Tracker = Literal["tensorboard", "wandb", "mlflow", "trackio"]


@dataclass
class LogConfig:
    report_to: list[Tracker] = field(default_factory=lambda: ["tensorboard"])
    """Experiment trackers that take each step's metrics and the run's config (accelerate's; ``[]``:
    none). Local unless told otherwise: TensorBoard in ``tb/``, wandb offline under the run (``WANDB_MODE``
    and ``WANDB_DIR`` say otherwise), MLflow in ``mlflow.db`` under the run (unless ``MLFLOW_TRACKING_URI``),
    trackio in its local store."""
    project: str = "rltf"
    """The tracker project (wandb, trackio) or experiment (MLflow) the run joins; the run is named after
    its directory."""
    progress: bool = True
    """Show a progress bar with each step's main metrics on the terminal."""
    samples: bool = True
    """Write every judged program of the rollouts (greedy baselines too) with its verdict to
    ``samples.jsonl``: what the model wrote, for reading and for re-judging (e.g. on augmented tests)."""
    learner_batches: bool = False
    """Write what each optimizer step trains on (token ids, returns, behaviour log-probs of every
    micro-batch) to ``learner_batches.jsonl``: recorded steps that ``benchmarks/learner_throughput.py``
    replays."""


@dataclass
class DistributedConfig:
    """Data-parallel training, when launched as N processes (``accelerate launch --num_processes N``,
    or ``rltf train --num-processes N``); a single process ignores it."""

    timeout_s: float = 7200.0
    """How long a rank waits in a collective for the others: rank 0 evaluates and checkpoints alone
    while the other ranks wait at the next step's first exchange (torch's default is 10-30 minutes)."""
    fsdp: bool = False
    """Shard parameters, gradients and optimizer state over the ranks with torch's FSDP2
    (``fully_shard`` on every decoder layer and the model) instead of replicating them (DDP). An
    ``accelerate launch`` with an FSDP config (``--use_fsdp``) turns it on. Each rank's engine still
    serves the whole model: its weights are gathered at every sync."""
    reshard_after_forward: bool = True
    """FSDP2: free the gathered layer after its forward (ZeRO-3-like, least memory) or keep it for
    the backward (ZeRO-2-like, one all-gather less per layer)."""


@dataclass
class TrainConfig:
    seed: int = 0
    """Seeds the random init, the problem order, the buffer's draws, sampling and evaluation."""
    steps: int = 40
    """Optimizer steps of the run."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    feedback: FeedbackConfig = field(default_factory=lambda: FeedbackConfig(baseline="grpo", overlong="soft"))
    """The paper's rewards (adaptive + fine-grained) with a group baseline: each program against the mean of
    its problem's K samples, not against the greedy decode (the paper's, ``configs/rltf-paper.yaml``), which
    pushed most programs down where greedy decoding beat sampling; and DAPO's soft overlong punishment,
    since a program the token limit cuts is almost always broken (docs: Training, "The defaults")."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    judge: JudgeConfig = field(default_factory=lambda: JudgeConfig(workers=2))
    buffer: BufferConfig = field(default_factory=BufferConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        positive = {"steps": self.steps, "rollout.samples_per_problem": self.rollout.samples_per_problem,
                    "rollout.problems_per_step": self.rollout.problems_per_step,
                    "rollout.max_rollouts": self.rollout.max_rollouts,
                    "engine.batch_size": self.engine.batch_size, "engine.workers": self.engine.workers,
                    "engine.sync_every": self.engine.sync_every, "buffer.capacity": self.buffer.capacity,
                    "buffer.update_freq": self.buffer.update_freq, "optim.micro_batch": self.optim.micro_batch,
                    "optim.grad_accum": self.optim.grad_accum, "checkpoint.every": self.checkpoint.every,
                    "checkpoint.keep": self.checkpoint.keep}
        if self.buffer.max_staleness is not None and self.buffer.max_staleness < 0:
            raise ConfigError("buffer.max_staleness must be >= 0 (or null: no bound)")
        bad = [k for k, v in positive.items() if v < 1]
        if bad:
            raise ConfigError(f"must be >= 1: {', '.join(bad)}")
        if self.feedback.static_weight and not self.judge.static:
            raise ConfigError("feedback.static_weight needs judge.static: true (the verdicts carry the findings)")
        if not self.rollout.enabled and self.optim.rl_weight:
            raise ConfigError("rollout.enabled=false samples nothing for the RL term: set optim.rl_weight=0 "
                              "(supervised fine-tuning, as rltf sft does)")
        if not (self.optim.rl_weight or self.optim.sl_weight):
            raise ConfigError("optim.rl_weight and optim.sl_weight are both 0: nothing to train")
        if self.optim.sl_source != "references" and not (self.rollout.enabled and self.optim.sl_weight):
            raise ConfigError(f"optim.sl_source={self.optim.sl_source} trains on sampled programs that passed: it "
                              "needs rollout.enabled=true and optim.sl_weight > 0")
        if self.feedback.adaptive and self.judge.stop_on_first_failure:
            raise ConfigError("feedback.adaptive needs every test's result (its pass ratio): "
                              "set judge.stop_on_first_failure=false or feedback.adaptive=false")
        if self.distributed.fsdp and self.model.lora.enabled:
            raise ConfigError("distributed.fsdp shards the whole model; with model.lora only the adapter trains: "
                              "use data-parallel training (distributed.fsdp=false)")
        if self.feedback.baseline in ("rloo", "grpo") and self.rollout.samples_per_problem < 2:
            raise ConfigError(f"feedback.baseline={self.feedback.baseline} needs "
                              "rollout.samples_per_problem >= 2")


# --------------------------------------------------------------------------- loading


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, kind: Any, key: str) -> Any:
    """Check ``value`` against a field's annotation; ints widen to floats, nothing else converts."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {kind}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: is a section; give a mapping of its keys, not {value!r}")
        return _build(kind, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if kind is Any:
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # PyYAML reads 3e-6 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if kind in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
    return value


def _section_defaults(cls: type) -> dict[str, dict[str, Any]]:
    """Each section's default as a mapping, so that a section given in part keeps the rest of the run's
    default, not its class's: ``feedback: {fine_weight: 0.5}`` keeps the ``grpo`` baseline and the soft
    overlong term of ``TrainConfig().feedback``, which ``FeedbackConfig``'s own defaults (the original's) lack."""
    hints = _hints(cls)
    return {f.name: dataclasses.asdict(f.default_factory()) for f in fields(cls)
            if f.init and f.default_factory is not dataclasses.MISSING and is_dataclass(hints[f.name])}


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = _hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"in section {prefix!r}" if prefix else "at the top level"
        guesses = [g for key in unknown for g in _nearest_keys(f"{prefix}.{key}" if prefix else key)]
        hint = f"did you mean {' or '.join(guesses)}?" if guesses else f"known: {', '.join(names)}"
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)} {where}; {hint}")
    defaults = _section_defaults(cls)
    values = {k: _coerce({**defaults[k], **v} if k in defaults and isinstance(v, dict) else v, hints[k],
                         f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def differing_keys(a: TrainConfig, b: TrainConfig) -> list[str]:
    """The dotted keys whose values differ between two configs (``optim.lr``, ``steps``, ...)."""
    def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    left, right = flat(to_dict(a)), flat(to_dict(b))
    return sorted(k for k in left.keys() | right.keys() if left.get(k) != right.get(k))


LEGACY_TENSORBOARD = "log.tensorboard"
"""The switch ``log.report_to`` replaced: configs saved by earlier runs (and overrides) still say it."""


def _migrate(data: dict[str, Any]) -> dict[str, Any]:
    """``log.tensorboard: true/false`` as TensorBoard in or out of ``log.report_to`` (the default list
    when the config gives none), so runs saved before the list still load and resume."""
    log = data.get("log")
    if not isinstance(log, dict) or "tensorboard" not in log:
        return data
    log = dict(log)
    enabled = log.pop("tensorboard")
    if not isinstance(enabled, bool):
        raise ConfigError(f"{LEGACY_TENSORBOARD}: expected bool, got {enabled!r}")
    others = [t for t in log.get("report_to", LogConfig().report_to) if t != "tensorboard"]
    log["report_to"] = ["tensorboard", *others] if enabled else others
    return {**data, "log": log}


def from_dict(data: dict[str, Any]) -> TrainConfig:
    return _build(TrainConfig, _migrate(data))


def _leaf_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key under ``cls`` (``optim.lr``, ``model.lora.r``, ...)."""
    keys: list[str] = []
    for name, kind in _hints(cls).items():
        keys.extend(_leaf_keys(kind, f"{prefix}{name}.") if is_dataclass(kind) else [f"{prefix}{name}"])
    return keys


def _nearest_keys(key: str) -> list[str]:
    """The settable keys a mistyped ``key`` most likely meant: the same name in another section
    (``lr`` -> ``optim.lr``), else the closest spellings."""
    keys = _leaf_keys(TrainConfig)
    leaf = key.rsplit(".", 1)[-1]
    return [k for k in keys if k.rsplit(".", 1)[-1] == leaf] or difflib.get_close_matches(key, keys, n=1)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Merge ``a.b.c=value`` strings into a config mapping; the value is YAML (``true``, ``3e-6``,
    ``null``, ``[a, b]``) except for string fields, which take the text as written. Each value is
    type-checked here, so an error names the override rather than the merged config."""
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        if key == LEGACY_TENSORBOARD:  # from_dict moves it into log.report_to
            data.setdefault("log", {})["tensorboard"] = _parse_value(text, bool)
            continue
        parts = key.split(".")
        cls: Any = TrainConfig
        node = data
        for i, part in enumerate(parts):
            hints = _hints(cls)
            if part not in hints:
                guesses = _nearest_keys(key)
                hint = f"did you mean {' or '.join(guesses)}?" if guesses else f"known: {', '.join(hints)}"
                raise ConfigError(f"unknown config key {key!r}; {hint}")
            kind = hints[part]
            if i < len(parts) - 1:
                if not is_dataclass(kind):
                    raise ConfigError(f"{'.'.join(parts[: i + 1])} is not a section")
                cls = kind
                node = node.setdefault(part, {})
                continue
            if is_dataclass(kind):
                raise ConfigError(f"{key} is a section; set one of its keys ({', '.join(_hints(kind))})")
            node[part] = _coerce(_parse_value(text, kind), kind, key)
    return data


def _parse_value(text: str, kind: Any) -> Any:
    options = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)
    if text.strip().lower() in ("null", "none", "~") and type(None) in options:
        return None
    if str in options:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {text!r}: {exc}") from None


def resolve_config(name: str) -> Path | None:
    """A path, or a config name such as ``tiny-smoke``; None for the embedded default when no file exists."""
    path = Path(name)
    if path.is_file():
        return path
    candidate = CONFIG_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if candidate.is_file():
        return candidate
    if name == DEFAULT_CONFIG:
        return None
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise ConfigError(f"no config {name!r} (a YAML file, or one of: {', '.join(known) or 'none found'})")


def load_config(name: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """The config named or found at ``name`` (default: the embedded default), then ``overrides``."""
    path = resolve_config(name or DEFAULT_CONFIG)
    data: Any = {}
    if path is not None:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections")
    try:
        data = apply_overrides(data, overrides or [])
    except ConfigError as exc:
        raise ConfigError(f"command line: {exc}") from None  # the override is wrong, not the file
    source = str(path or "default config") + (" with the command line's overrides" if overrides else "")
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
