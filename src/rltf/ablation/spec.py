"""The ablation spec (YAML) and where each run of it lives under ``OUT``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rltf.config import ConfigError, TrainConfig, load_config

RESULT, SPEC_COPY, LOG = "ablate-result.json", "spec.yaml", "ablate.log"
EVAL_DIR, WARM_START = "ablate-eval", "warm-start"
WARM_START_TOLERANCE = 1e-3
"""Relative difference in any step's loss above which two trainings of the warm start are different
models. A retraining on another CPU differs by float rounding, which Adam's first, sign-like step
can amplify: bf16 autocast gave 2.6 % at step 2 on another EPYC, hence a float32 warm start."""


@dataclass(frozen=True)
class EvalTarget:
    """A held-out set every run is scored on with its last checkpoint: greedy pass@1 by default, or
    ``n`` samples per problem at ``temperature`` (each problem scored by its pass fraction)."""

    dataset: str
    split: str | None = None
    limit: int | None = None
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.n < 1 or (self.n > 1) != (self.temperature > 0):
            raise ConfigError(f"eval target {self.dataset}: n > 1 goes with temperature > 0, greedy with n 1")

    @property
    def name(self) -> str:
        sampled = f"-t{self.temperature:g}-n{self.n}" if self.temperature > 0 else ""
        return (self.dataset + (f"-{self.split}" if self.split else "") + (f"-first{self.limit}" if self.limit else "")
                + sampled)


@dataclass(frozen=True)
class WarmStart:
    """A run every arm starts from (the paper's SFT model), trained first in ``OUT/warm-start``."""

    base: str
    overrides: list[str] = field(default_factory=list)

    def config(self) -> TrainConfig:
        """It runs alone, so on every core this process may use."""
        t = len(os.sched_getaffinity(0))
        return load_config(self.base, ["eval.at_start=false", "eval.at_end=false", *self.overrides,
                                       f"model.threads={t}", f"engine.workers={t}", f"judge.workers={t}"])


@dataclass(frozen=True)
class AblationSpec:
    base: str
    arms: dict[str, list[str]]
    seeds: list[int]
    steps: int
    reference: str
    eval: list[EvalTarget]
    overrides: list[str] = field(default_factory=list)
    threads: int = 1
    """Cores (and torch / engine / judge threads) per run."""
    parallel: int | None = None
    """Runs at once; default: as many as the cores this process may use hold ``threads`` each."""
    warm_start: WarmStart | None = None
    primary: list[tuple[str, ...]] = field(default_factory=list)
    """The comparisons (A, B) the ablation is run for, named before it runs: reported unadjusted;
    every other comparison with the reference gets a Holm-adjusted p-value."""
    arm_seeds: dict[str, list[int]] = field(default_factory=dict)
    """Arms that run fewer of ``seeds`` than the others (secondary arms on a budget); adding seeds
    here later runs just those."""
    continues: Path | None = None
    """The output directory of a shorter ablation this one runs longer (the same settings but
    ``steps``, from the same warm start): the report pairs each run with the same arm and seed there,
    to say what the added steps changed. Relative to the spec file; read by the report only."""

    def __post_init__(self) -> None:
        for pair in self.primary:
            if len(pair) != 2 or not all(arm in self.arms or arm == WARM_START for arm in pair) or pair[0] == pair[1]:
                raise ConfigError(f"primary comparison {list(pair)} must name two different arms")
        if not self.arms or not self.seeds or not self.eval:
            raise ConfigError("an ablation spec needs at least one arm, one seed and one eval target")
        if self.reference not in self.arms:
            raise ConfigError(f"reference {self.reference!r} is not an arm (arms: {', '.join(self.arms)})")
        if len(set(self.seeds)) != len(self.seeds) or self.steps < 1 or self.threads < 1:
            raise ConfigError("seeds must be distinct, steps and threads >= 1")
        if len({t.name for t in self.eval}) != len(self.eval):
            raise ConfigError("eval targets must be distinct")
        if WARM_START in self.arms:
            raise ConfigError(f"{WARM_START!r} is the warm start's directory, not an arm name")
        for arm, seeds in self.arm_seeds.items():
            if arm not in self.arms or arm == self.reference or not seeds or not set(seeds) <= set(self.seeds):
                raise ConfigError(f"arm_seeds: {arm!r} must be an arm other than the reference, with some of the "
                                  f"spec's seeds {self.seeds}")

    def runs(self) -> list[tuple[str, int]]:
        """Every (arm, seed), seed-major (every arm's first seed, then every arm's second), so a
        half-finished ablation is already a paired table."""
        return [(arm, seed) for seed in self.seeds for arm in self.arms if seed in self.arm_seeds.get(arm, self.seeds)]

    def config(self, arm: str, seed: int, out: Path) -> TrainConfig:
        """The arm's training config: base, the warm start's model, common overrides, the arm's,
        then seed, steps and threads.

        The trainer's own evaluations are off (the ablation evaluates every run on every target);
        an override may turn them back on."""
        t = self.threads
        start = [f"model.name={warm_start_model(self, out)}"] if self.warm_start else []
        return load_config(self.base, ["eval.at_start=false", "eval.at_end=false", *start, *self.overrides,
                                       *self.arms[arm], f"seed={seed}", f"steps={self.steps}", f"model.threads={t}",
                                       f"engine.workers={t}", f"judge.workers={t}"])


def warm_start_model(spec: AblationSpec, out: Path) -> Path:
    assert spec.warm_start is not None
    return out / WARM_START / "checkpoints" / f"step-{spec.warm_start.config().steps:06d}" / "model"


def load_spec(path: str | Path) -> AblationSpec:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an ablation spec is a mapping")
    known = {"base", "arms", "seeds", "steps", "reference", "eval", "overrides", "threads", "parallel", "warm_start",
             "primary", "arm_seeds", "continues"}
    if unknown := set(data) - known:
        raise ConfigError(f"{path}: unknown keys {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    try:
        targets = [EvalTarget(**t) for t in data.get("eval") or []]
        warm = data.get("warm_start")
        warm_start = WarmStart(str(warm["base"]), [str(o) for o in warm.get("overrides") or []]) if warm else None
        return AblationSpec(base=str(data["base"]), arms={str(k): [str(o) for o in v or []]
                                                          for k, v in (data.get("arms") or {}).items()},
                            seeds=[int(s) for s in data.get("seeds") or []], steps=int(data["steps"]),
                            reference=str(data["reference"]), eval=targets,
                            overrides=[str(o) for o in data.get("overrides") or []],
                            threads=int(data.get("threads", 1)), parallel=data.get("parallel"),
                            warm_start=warm_start,
                            primary=[tuple(str(arm) for arm in pair) for pair in data.get("primary") or []],
                            arm_seeds={str(arm): [int(s) for s in seeds]
                                       for arm, seeds in (data.get("arm_seeds") or {}).items()},
                            continues=Path(path).parent / str(data["continues"]) if data.get("continues") else None)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def run_dir(out: Path, arm: str, seed: int) -> Path:
    """Where a run lives; the warm start (one model, whatever the seed) is a run of its own."""
    return out / WARM_START if arm == WARM_START else out / arm / f"seed-{seed}"


def warm_start_losses(spec: AblationSpec, out: Path) -> list[float] | None:
    """The warm start's loss at every step (its fingerprint, from ``OUT/warm-start/metrics.jsonl``);
    None until it has trained every step."""
    if spec.warm_start is None:
        return None
    path = out / WARM_START / "metrics.jsonl"
    losses = [json.loads(line)["loss"] for line in path.read_text().splitlines()] if path.is_file() else []
    return losses if len(losses) == spec.warm_start.config().steps else None


def same_warm_start(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= WARM_START_TOLERANCE * abs(y) for x, y in zip(a, b))


def run_finished(spec: AblationSpec, out: Path, arm: str, seed: int) -> bool:
    """Trained to ``steps`` and evaluated on every target (an added target reopens the run), from
    the warm start in ``OUT`` (a run recorded from another one is not finished: it runs again, so that
    every compared run starts from the same model)."""
    return _finished(spec, out, arm, seed, warm_start_losses(spec, out))


def finished_runs(spec: AblationSpec, out: Path) -> set[tuple[str, int]]:
    """Every finished (arm, seed), the warm start read once."""
    warm = warm_start_losses(spec, out)
    return {(arm, seed) for arm, seed in spec.runs() if _finished(spec, out, arm, seed, warm)}


def warm_start_evaluated(spec: AblationSpec, out: Path) -> bool:
    """The warm start itself scored on every target (the run ``(WARM_START, its seed)``): the step-0
    row every arm moves from."""
    return spec.warm_start is not None and _finished(spec, out, WARM_START, spec.warm_start.config().seed,
                                                     warm_start_losses(spec, out))


def _finished(spec: AblationSpec, out: Path, arm: str, seed: int, warm: list[float] | None) -> bool:
    path = run_dir(out, arm, seed) / RESULT
    if not path.is_file():
        return False
    result = json.loads(path.read_text())
    if warm is not None and not same_warm_start(result.get("warm_start_loss") or [], warm):
        return False
    steps = spec.warm_start.config().steps if arm == WARM_START and spec.warm_start else spec.steps
    return result.get("steps") == steps and {t.name for t in spec.eval} <= set(result.get("evals", {}))
