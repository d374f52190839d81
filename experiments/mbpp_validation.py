"""RL from an SFT warm start on MBPP, judged on the validation split: which estimator and importance setting?

Two stages, each a resumable run under ``OUT`` (default ``runs/mbpp-validation``; the committed copy is
``experiments/mbpp-validation``, made by ``experiments/archive.py``):

    python experiments/mbpp_validation.py sft                                  # rltf/configs/mbpp-sft.yaml
    python experiments/mbpp_validation.py rl --estimator rloo --importance none  # rltf/configs/mbpp-rl.yaml
    python experiments/mbpp_validation.py table                                # OUT/results.md + plot

``sft`` fine-tunes the embedded SmolLM2-135M-Instruct on the MBPP train references; ``rl`` trains
RL alone (no supervised term) from its last checkpoint, in ``OUT/<estimator>-<importance>``. Each
writes ``result.json``: pass@1 on the 90 MBPP validation problems (ids 511-600) before and after
(greedy by default; ``--set eval.samples=5 --set eval.temperature=0.1 --set eval.top_p=0.95`` for
sampled) with the paired interval and sign test over problems (:mod:`rltf.ablation.stats`), and
for RL the sampled pass rate and verdict mix of the training problems' programs over the run.
Choices are made on these numbers; the test split is not used. Repeating a command resumes its
run (checkpoints are not committed: a new machine redoes ``sft`` first, which is seeded).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from learning_test import run_minutes, train

from rltf.ablation.stats import paired
from rltf.config import load_config
from rltf.evaluation import SAMPLES, per_problem_pass
from rltf.train import read_evals, read_metrics
from rltf.train.checkpoint import CONFIG, EVAL_DIR, latest_checkpoint

ESTIMATORS, IMPORTANCE = ("greedy", "rloo", "grpo"), ("none", "ppo_clip", "tis")
SHOWN = ("fail", "runtime", "compile")
"""The verdict keys the table shows (wrong answer, runtime error, compile error); the result has all."""


def validation(run_dir: Path) -> dict[str, Any]:
    """Greedy pass@1 on validation at the run's first and last evaluation, with the paired interval."""
    evals = read_evals(run_dir)
    if len(evals) < 2:
        raise SystemExit(f"{run_dir} has {len(evals)} evaluation(s); a result needs one before and one after")
    (first, before), (last, after) = evals[0], evals[-1]
    by_problem = [per_problem_pass(run_dir / EVAL_DIR / f"step-{s:06d}" / SAMPLES) for s in (first, last)]
    problems = sorted(by_problem[0])
    change = paired(np.array([by_problem[1][p] for p in problems]), np.array([by_problem[0][p] for p in problems]))
    return {
        "validation_pass_before": before["pass_at_k"]["1"],
        "validation_pass_after": after["pass_at_k"]["1"],
        "validation_change_ci95": list(change.ci95),
        "validation_change_p": change.p_sign,
        "validation_gained": change.better,
        "validation_lost": change.worse,
        "validation_problems": after["problems"],
        "validation_verdicts_before": before["category"],
        "validation_verdicts_after": after["category"],
        "validation_curve": [{"step": s, "pass": e["pass_at_k"]["1"]} for s, e in evals],
        "steps": last - first,
        "minutes": run_minutes(run_dir)[0],
    }


def train_programs(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Sampled pass rate and verdict mix of the training programs, first half of the run against second."""
    half = len(records) // 2

    def mix(part: list[dict[str, Any]]) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        for r in part:
            counts.update(r["verdicts"])
        total = sum(counts.values())
        return {"programs": total, "pass_rate": counts["pass"] / total if total else None, "verdicts": dict(counts)}

    return {"train_first_half": mix(records[:half]), "train_second_half": mix(records[half:])}


def sft_model(out: Path) -> Path:
    """The finished SFT run's last checkpoint: the RL runs' starting weights."""
    run_dir = out / "sft" / "run"
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None or int(checkpoint.name.split("-")[1]) != load_config(str(run_dir / CONFIG)).steps:
        raise SystemExit(f"no finished SFT run in {run_dir}: run `python {sys.argv[0]} sft` first")
    return checkpoint / "model"


def run_sft(out: Path, overrides: list[str]) -> dict[str, Any]:
    run_dir = out / "sft" / "run"
    train(load_config("mbpp-sft", overrides), run_dir)
    return {"arm": "sft", **validation(run_dir)}


def run_rl(out: Path, estimator: str, importance: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """One RL arm; seeds other than 0 (the first table's) run in ``OUT/<estimator>-<importance>-seedN``."""
    config = load_config("mbpp-rl", [f"model.name={sft_model(out)}", f"feedback.baseline={estimator}",
                                     f"optim.importance={importance}", f"seed={seed}", *overrides])
    arm = f"{estimator}-{importance}" + (f"-seed{seed}" if seed else "")
    run_dir = out / arm / "run"
    train(config, run_dir)
    records = read_metrics(run_dir)
    return {
        "arm": arm, "estimator": estimator, "importance": importance, "seed": seed,
        **validation(run_dir), **train_programs(records),
        "train_curve": [{"step": r["step"], "sample_pass_rate": r.get("sample_pass_rate"),
                         "reward_mean": r.get("reward_mean"), "grad_norm": r.get("grad_norm"),
                         "importance_ratio_mean": r.get("importance_ratio_mean"),
                         "importance_clip_frac": r.get("importance_clip_frac"),
                         "kl_behaviour_current": r.get("kl_behaviour_current"),
                         "staleness_mean": r.get("staleness_mean")} for r in records],
    }


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def finished(out: Path) -> list[dict[str, Any]]:
    """The ``result.json`` of every finished arm under ``out``, by arm name."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("*/result.json"))]


def table(results: list[dict[str, Any]]) -> str:
    """Markdown of the arms: validation pass@1 change, train pass rate and verdict shift."""
    lines = ["| arm | validation pass@1 before → after | change (95 % CI) | gained / lost | "
             "train sampled pass, 1st → 2nd half | train wrong / runtime / compile, 1st → 2nd half | minutes |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        low, high = res["validation_change_ci95"]
        change = res["validation_pass_after"] - res["validation_pass_before"]
        first, second = res.get("train_first_half"), res.get("train_second_half")
        train_pass = f"{pct(first['pass_rate'])} → {pct(second['pass_rate'])}" if first else "–"
        shift = (" → ".join("/".join(str(part["verdicts"].get(v, 0)) for v in SHOWN) for part in (first, second))
                 if first else "–")
        lines.append(f"| {res['arm']} | {pct(res['validation_pass_before'])} → {pct(res['validation_pass_after'])} "
                     f"| {100 * change:+.1f} ({100 * low:+.1f}, {100 * high:+.1f}) | "
                     f"{res['validation_gained']} / {res['validation_lost']} | {train_pass} | {shift} | "
                     f"{res['minutes']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for res in (r for r in results if "train_curve" in r):
        curve = [c for c in res["train_curve"] if c["sample_pass_rate"] is not None]
        line, = left.plot([c["step"] for c in curve], [100 * c["sample_pass_rate"] for c in curve],
                          label=res["arm"], alpha=0.8)
        right.plot([c["step"] for c in res["validation_curve"]], [100 * c["pass"] for c in res["validation_curve"]],
                   marker="o", color=line.get_color(), label=res["arm"])
    left.set_title("MBPP train: sampled programs passing", fontsize=10)
    right.set_title("MBPP validation: greedy pass@1", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("optimizer step (RL, from the SFT checkpoint)")
        ax.set_ylabel("%")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("sft", "rl", "table"))
    parser.add_argument("--estimator", choices=ESTIMATORS, default="rloo")
    parser.add_argument("--importance", choices=IMPORTANCE, default="none")
    parser.add_argument("--seed", type=int, default=0, help="the RL run's seed (the SFT warm start is shared)")
    parser.add_argument("--out", type=Path, default=Path("runs/mbpp-validation"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="further config overrides (a dry run: --set steps=2 --set eval.limit=4)")
    args = parser.parse_args(argv)
    if args.stage == "table":
        results = finished(args.out)
        text = table(results)
        (args.out / "results.md").write_text(text)
        plot(results, args.out / "curves.png")
        print(text)
        return 0
    res = (run_sft(args.out, args.overrides) if args.stage == "sft"
           else run_rl(args.out, args.estimator, args.importance, args.seed, args.overrides))
    (args.out / res["arm"] / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"{res['arm']}: validation pass@1 {pct(res['validation_pass_before'])}% -> "
          f"{pct(res['validation_pass_after'])}% in {res['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
