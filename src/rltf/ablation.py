"""``rltf ablate``: every arm of a spec, for every seed, trained and evaluated alike, then compared
with paired statistics.

An ablation is a claim about a difference ("full RLTF beats coarse feedback"), so each arm is the
same base config plus a few overrides, every arm runs the same seeds, steps and evaluations, and the
comparison is paired: arm and reference are judged on the same problems under the same seed. The
spec is YAML::

    base: mbpp-rl                       # a config name or file
    overrides: [model.name=runs/sft/checkpoints/step-12/model]
    arms:
      coarse: [feedback.adaptive=false, feedback.fine_grained=false]
      full: []
    seeds: [0, 1, 2]
    steps: 8
    reference: coarse
    eval: [{dataset: mbpp, split: test}, {dataset: mbpp-plus, split: test}, {dataset: humaneval}]

Each (arm, seed) is one ``rltf train`` run in ``OUT/ARM/seed-N`` followed by greedy pass@1 of its
last checkpoint on every eval target (``OUT/ARM/seed-N/ablate-eval/TARGET``). Runs go to a child
process each, pinned to its own cores with a matching thread count (``threads`` cores a run,
``parallel`` runs at once), so two cores run two single-thread runs instead of two runs whose OpenMP
pools fight over both cores. Everything resumes: a repeated command skips finished runs and
evaluations and continues the others where their checkpoints and samples end.

Outputs: ``ablation.json`` (one row per arm and eval target), ``ablation.md`` (the same as a table,
with the verdict mix and the compute each arm spent) and ``ablation.png``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from rltf.config import ConfigError, TrainConfig, differing_keys, load_config
from rltf.evaluation import SAMPLES, SUMMARY, per_problem_pass
from rltf.train import CONFIG, read_metrics
from rltf.train.checkpoint import latest_checkpoint

RESULT, SPEC_COPY, LOG = "ablate-result.json", "spec.yaml", "ablate.log"
EVAL_DIR, WARM_START = "ablate-eval", "warm-start"


@dataclass(frozen=True)
class EvalTarget:
    """A held-out set every run is scored on: greedy pass@1 of its last checkpoint."""

    dataset: str
    split: str | None = None
    limit: int | None = None

    @property
    def name(self) -> str:
        return self.dataset + (f"-{self.split}" if self.split else "") + (f"-first{self.limit}" if self.limit else "")


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

    def __post_init__(self) -> None:
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
    known = {"base", "arms", "seeds", "steps", "reference", "eval", "overrides", "threads", "parallel", "warm_start"}
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
                            warm_start=warm_start)
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --------------------------------------------------------------------------- statistics


def bootstrap_mean(matrix: np.ndarray, draws: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the mean of a seeds × problems matrix, resampling seeds and problems alike
    (the same problems for every seed in a draw: they are one problem set scored under each seed)."""
    matrix = np.asarray(matrix, dtype=float)
    rng = np.random.default_rng(seed)
    seeds, problems = matrix.shape
    means = np.empty(draws)
    for start in range(0, draws, 1000):
        n = min(1000, draws - start)
        rows = rng.integers(seeds, size=(n, seeds))
        cols = rng.integers(problems, size=(n, problems))
        means[start:start + n] = matrix[rows[:, :, None], cols[:, None, :]].mean(axis=(1, 2))
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def sign_test(diffs: np.ndarray) -> float:
    """Two-sided exact sign test on paired differences, ties dropped. With 0/1 outcomes (greedy
    pass@1) this is McNemar's exact test on the discordant (problem, seed) pairs."""
    diffs = np.asarray(diffs).ravel()
    better, worse = int((diffs > 0).sum()), int((diffs < 0).sum())
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


# --------------------------------------------------------------------------- runs


def run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / arm / f"seed-{seed}"


def run_finished(spec: AblationSpec, out: Path, arm: str, seed: int) -> bool:
    """Trained to ``steps`` and evaluated on every target (an added target reopens the run)."""
    path = run_dir(out, arm, seed) / RESULT
    if not path.is_file():
        return False
    result = json.loads(path.read_text())
    return result.get("steps") == spec.steps and {t.name for t in spec.eval} <= set(result.get("evals", {}))


def cpu_slots(spec: AblationSpec) -> list[tuple[int, ...]]:
    """Disjoint core sets, ``threads`` cores each, one per run that may go at once."""
    cpus = sorted(os.sched_getaffinity(0))
    count = min(spec.parallel or len(cpus) // spec.threads, len(cpus) // spec.threads)
    if count < 1:
        raise ConfigError(f"threads={spec.threads} needs more cores than the {len(cpus)} this process may use")
    return [tuple(cpus[i * spec.threads:(i + 1) * spec.threads]) for i in range(count)]


def _launch(out: Path, arm: str, seed: int, cpus: tuple[int, ...]) -> subprocess.Popen:
    """One run's child process, on ``cpus`` only, its thread pools sized to them."""
    directory = run_dir(out, arm, seed)
    directory.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(len(cpus))
    with (directory / LOG).open("a") as log:
        return subprocess.Popen([sys.executable, "-m", "rltf.ablation", str(out / SPEC_COPY), str(out), arm, str(seed)],
                                stdout=log, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=lambda: os.sched_setaffinity(0, cpus))


def run_ablation(spec_path: str | Path, out: str | Path, echo: Any = print) -> dict[str, Any]:
    """Run every unfinished (arm, seed) of the spec, ``parallel`` at a time on their own cores, then
    write ``ablation.json``, ``ablation.md`` and ``ablation.png``. Returns the summary."""
    spec, out = load_spec(spec_path), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_COPY).write_text(Path(spec_path).read_text(encoding="utf-8"), encoding="utf-8")
    configs = {(arm, seed): spec.config(arm, seed, out) for arm in spec.arms for seed in spec.seeds}
    if spec.warm_start:
        configs[WARM_START, 0] = spec.warm_start.config()
    for (arm, seed), config in configs.items():  # config errors before any run starts, and no resume elsewise
        saved = (out / WARM_START if arm == WARM_START else run_dir(out, arm, seed)) / CONFIG
        if saved.is_file() and (differ := differing_keys(load_config(str(saved)), config)):
            raise ConfigError(f"{saved.parent} was started with other settings ({', '.join(differ)})")
    pending = [(a, s) for a in spec.arms for s in spec.seeds if not run_finished(spec, out, a, s)]
    if pending and spec.warm_start and not warm_start_model(spec, out).is_dir():
        echo(f"training the warm start in {out / WARM_START} ({spec.warm_start.base}) first, on every core")
        _train(configs[WARM_START, 0], out / WARM_START)
    free, failed = cpu_slots(spec), []
    running: dict[subprocess.Popen, tuple[str, int, tuple[int, ...]]] = {}
    echo(f"{len(spec.arms) * len(spec.seeds) - len(pending)} runs finished, {len(pending)} to go, "
         f"{len(free)} at a time on cores {free}")
    try:
        while pending or running:
            while pending and free:
                arm, seed = pending.pop(0)
                cpus = free.pop(0)
                running[_launch(out, arm, seed, cpus)] = (arm, seed, cpus)
                echo(f"started {arm} seed {seed} on cores {list(cpus)} (log {run_dir(out, arm, seed) / LOG})")
            time.sleep(0.5)
            for child in [c for c in running if c.poll() is not None]:
                arm, seed, cpus = running.pop(child)
                free.append(cpus)
                if child.returncode:
                    failed.append(f"{arm} seed {seed} (exit {child.returncode}, see {run_dir(out, arm, seed) / LOG})")
                echo(f"{'FAILED' if child.returncode else 'finished'} {arm} seed {seed}")
    finally:  # an interrupted ablation leaves no orphan runs behind (they resume next time)
        for child in running:
            child.kill()
    if failed:
        raise RuntimeError("ablation runs failed: " + "; ".join(failed))
    summary = summarize(spec, out)
    write_outputs(summary, out)
    return summary


def run_one(spec: AblationSpec, out: Path, arm: str, seed: int) -> None:
    """The child's job: train (or resume) one run, then evaluate its last checkpoint on every target."""
    from rltf.evaluation import EvalSettings, evaluate
    from rltf.generation import make_engine
    from rltf.judge import Judge
    from rltf.models import Policy
    from rltf.train import load_problem_set

    config, directory = spec.config(arm, seed, out), run_dir(out, arm, seed)
    _train(config, directory)
    checkpoint = latest_checkpoint(directory)
    assert checkpoint is not None and checkpoint.name == f"step-{spec.steps:06d}", checkpoint
    policy = Policy.load(str(checkpoint / "model"), style=config.model.style, dtype=config.model.dtype)
    engine = make_engine(policy, config.engine, version=spec.steps)
    evals = {}
    with Judge(config.judge) as judge:
        for target in spec.eval:
            problems = load_problem_set(target.dataset, target.split, None, target.limit)
            settings = EvalSettings(target.dataset, target.split, f"{arm}/seed-{seed}@step-{spec.steps}",
                                    policy.style, n=1, temperature=0.0, top_p=1.0,
                                    max_new_tokens=config.eval.max_new_tokens, seed=seed,
                                    batch_size=config.eval.batch_size, engine=engine.label)
            summary = evaluate(engine, policy, problems, judge, directory / EVAL_DIR / target.name, settings, ks=(1,),
                               show_progress=False)
            evals[target.name] = summary["pass_at_k"]["1"]
    result = {"arm": arm, "seed": seed, "steps": spec.steps, "cpus": sorted(os.sched_getaffinity(0)),
              "torch_threads": _torch_threads(), "evals": evals}
    (directory / (RESULT + ".tmp")).write_text(json.dumps(result, indent=1) + "\n")
    (directory / (RESULT + ".tmp")).replace(directory / RESULT)


def _train(config: TrainConfig, directory: Path) -> None:
    """Train (or resume) one run to its last step."""
    from transformers.utils import logging as hf_logging

    from rltf.evaluation import train_evaluator
    from rltf.train import Trainer

    hf_logging.disable_progress_bar()
    Trainer(config, directory, resume=True, evaluator=train_evaluator(config), show_progress=False).run()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# --------------------------------------------------------------------------- summary


def compute_spent(directory: Path) -> dict[str, float]:
    """What one run cost: sampled programs, generated and trained tokens, optimizer steps and wall
    seconds (training and checkpoints, plus the ablation's evaluations)."""
    records = read_metrics(directory)
    eval_s = sum(json.loads(p.read_text())["timing"]["wall_s"] for p in (directory / EVAL_DIR).glob(f"*/{SUMMARY}"))
    return {
        "samples": sum(sum((r.get("verdicts") or {}).values()) for r in records),
        "gen_tokens": sum(r.get("gen_tokens") or 0 for r in records),
        "train_tokens": sum(r.get("train_tokens") or 0 for r in records),
        "steps": records[-1]["step"] if records else 0,
        "wall_s": sum((r.get("time_step_s") or 0) + (r.get("time_checkpoint_s") or 0) for r in records) + eval_s,
    }


def summarize(spec: AblationSpec, out: Path) -> dict[str, Any]:
    """One row per (arm, eval target): pass@1 per seed, their mean with a problems × seeds bootstrap
    interval, and the paired difference against the reference arm with its interval and sign test."""
    rows = []
    for target in spec.eval:
        scores = {(arm, seed): per_problem_pass(run_dir(out, arm, seed) / EVAL_DIR / target.name / SAMPLES)
                  for arm in spec.arms for seed in spec.seeds}
        problems = sorted(set.intersection(*(set(s) for s in scores.values())))
        matrices = {arm: np.array([[scores[arm, seed][p] for p in problems] for seed in spec.seeds])
                    for arm in spec.arms}
        reference = matrices[spec.reference]
        for arm in spec.arms:
            matrix, verdicts = matrices[arm], Counter()
            for seed in spec.seeds:
                verdicts.update(json.loads((run_dir(out, arm, seed) / EVAL_DIR / target.name / SUMMARY).read_text())
                                ["category"])
            diff = matrix - reference
            spent = [compute_spent(run_dir(out, arm, seed)) for seed in spec.seeds]
            rows.append({
                "arm": arm, "dataset": target.name, "problems": len(problems),
                "runs": {str(seed): float(matrix[i].mean()) for i, seed in enumerate(spec.seeds)},
                "pass@1": float(matrix.mean()), "ci95": list(bootstrap_mean(matrix)),
                "vs_reference": {"diff": float(diff.mean()), "ci95": list(bootstrap_mean(diff)),
                                 "p": sign_test(diff), "better": int((diff > 0).sum()), "worse": int((diff < 0).sum())},
                "verdicts": dict(verdicts.most_common()),
                "compute_per_run": {k: sum(s[k] for s in spent) / len(spent) for k in spent[0]},
            })
    curves = {arm: _reward_curve(out, arm, spec.seeds) for arm in spec.arms}
    return {"reference": spec.reference, "seeds": spec.seeds, "steps": spec.steps, "rows": rows,
            "reward_curves": curves}


def _reward_curve(out: Path, arm: str, seeds: list[int]) -> list[float | None]:
    """Mean train reward per step over the seeds (None where no seed sampled: SL-only arms)."""
    per_seed = [[r.get("reward_mean") for r in read_metrics(run_dir(out, arm, seed))] for seed in seeds]
    curve: list[float | None] = []
    for values in zip(*per_seed, strict=False):
        known = [v for v in values if v is not None]
        curve.append(sum(known) / len(known) if known else None)
    return curve


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown(summary: dict[str, Any]) -> str:
    ref = summary["reference"]
    lines = [f"Greedy pass@1, mean over seeds {summary['seeds']} with a 95 % bootstrap interval over problems and "
             f"seeds; the difference against `{ref}` is paired by problem and seed (95 % bootstrap interval, exact "
             "two-sided sign test). Verdicts: pass / wrong / runtime / compile / timeout, summed over seeds. "
             "Compute: per run, mean over seeds.", "",
             "| arm | eval | pass@1 (95 % CI) | per seed | vs reference (95 % CI) | p | better / worse | verdicts | "
             "programs sampled | tokens generated | tokens trained | steps | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        low, high = row["ci95"]
        vs, spent, mix = row["vs_reference"], row["compute_per_run"], row["verdicts"]
        is_ref = row["arm"] == ref
        versus = "–" if is_ref else f"{100 * vs['diff']:+.1f} ({100 * vs['ci95'][0]:+.1f}, {100 * vs['ci95'][1]:+.1f})"
        p_value = "–" if is_ref else f"{vs['p']:.3g}"
        counts = "–" if is_ref else f"{vs['better']} / {vs['worse']}"
        timeout = sum(v for k, v in mix.items() if "timeout" in k)
        shown = "/".join(str(mix.get(k, 0)) for k in ("pass", "fail", "error/runtime", "error/compile")) + f"/{timeout}"
        lines.append(f"| {row['arm']} | {row['dataset']} ({row['problems']}) | {_pct(row['pass@1'])} ({_pct(low)}, "
                     f"{_pct(high)}) | {', '.join(_pct(v) for v in row['runs'].values())} | {versus} | "
                     f"{p_value} | {counts} | {shown} | "
                     f"{spent['samples']:.0f} | {spent['gen_tokens']:.0f} | {spent['train_tokens']:.0f} | "
                     f"{spent['steps']:.0f} | {spent['wall_s'] / 60:.1f} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(summary["reward_curves"])
    datasets = list(dict.fromkeys(r["dataset"] for r in summary["rows"]))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(datasets)
    for d, dataset in enumerate(datasets):
        rows = {r["arm"]: r for r in summary["rows"] if r["dataset"] == dataset}
        means = [100 * rows[a]["pass@1"] for a in arms]
        errors = [[m - 100 * rows[a]["ci95"][0] for m, a in zip(means, arms, strict=True)],
                  [100 * rows[a]["ci95"][1] - m for m, a in zip(means, arms, strict=True)]]
        left.bar([i + d * width for i in range(len(arms))], means, width, yerr=errors, capsize=3, label=dataset)
    left.set_xticks([i + width * (len(datasets) - 1) / 2 for i in range(len(arms))], arms, rotation=30, ha="right")
    left.set_ylabel("greedy pass@1 (%)")
    left.legend(fontsize=8)
    for arm, curve in summary["reward_curves"].items():
        points = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
        if points:
            right.plot(*zip(*points, strict=True), marker=".", label=arm)
    right.set_xlabel("optimizer step")
    right.set_ylabel("train reward (mean over seeds)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    (out / "ablation.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "ablation.md").write_text(markdown(summary))
    plot(summary, out / "ablation.png")


if __name__ == "__main__":  # the child process of one run: SPEC OUT ARM SEED
    spec_file, out_dir, arm_name, seed_text = sys.argv[1:5]
    run_one(load_spec(spec_file), Path(out_dir), arm_name, int(seed_text))
