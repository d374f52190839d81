"""RLTF's learning test: does RL alone raise the pass rate where learning is easy?

RL only (no supervised term), from the embedded SmolLM2-135M-Instruct, on the synthetic family
(``rltf.synthetic``), with ``rltf/configs/learning-test.yaml``; ``--estimator`` picks the advantage
estimator. The held-out pass rate is the share of sampled programs (8 per held-out problem) that
pass, before and after training. Target on a 2-core CPU: +30 points, or at least 80 %, within 30
minutes per estimator.

    python experiments/learning_test.py --estimator grpo --out experiments/learning/grpo
    python experiments/learning_test.py --plot experiments/learning/{greedy,rloo,grpo} --out experiments/learning

The run lives in ``OUT/run`` and resumes when the command is repeated; ``OUT/result.json`` holds
the numbers (with the reward curve), ``OUT/learning_curve.png`` the plot. ``--plot`` draws the
curves of several finished results into one figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rltf.config import TrainConfig, differing_keys, load_config
from rltf.evaluation import train_evaluator
from rltf.train import CONFIG, Trainer, read_evals, read_metrics

TARGET_RISE, TARGET_LEVEL, TARGET_MINUTES = 0.30, 0.80, 30.0


def run_minutes(run_dir: Path) -> tuple[float, float, float]:
    """Minutes the run spent in all, training (steps + checkpoints) and evaluating, summed over sessions."""
    records = read_metrics(run_dir)
    train_s = sum((r.get("time_step_s") or 0.0) + (r.get("time_checkpoint_s") or 0.0) for r in records)
    eval_s = sum(e["timing"]["wall_s"] for _, e in read_evals(run_dir))
    return (train_s + eval_s) / 60, train_s / 60, eval_s / 60


def check_settings(config: TrainConfig, run_dir: Path) -> None:
    """A run in ``run_dir`` started with settings other than ``config`` is an error."""
    if (run_dir / CONFIG).is_file():
        differ = differing_keys(load_config(str(run_dir / CONFIG)), config)
        if differ:
            raise SystemExit(f"{run_dir} was started with other settings ({', '.join(differ)}); use another --out")


def train(config: TrainConfig, run_dir: Path) -> None:
    """Run (or resume) ``config`` in ``run_dir``; a run started with other settings is an error."""
    check_settings(config, run_dir)
    Trainer(config, run_dir, resume=True, evaluator=train_evaluator(config)).run()


def result(run_dir: Path, estimator: str) -> dict[str, Any]:
    """The learning test's numbers from a finished run: held-out pass rates, time and curves."""
    records, evals = read_metrics(run_dir), read_evals(run_dir)
    if len(evals) < 2:
        raise SystemExit(f"{run_dir} has {len(evals)} evaluation(s); the test needs one before and one after")
    (first, before), (last, after) = evals[0], evals[-1]
    pass_before, pass_after = before["pass_at_k"]["1"], after["pass_at_k"]["1"]
    minutes, train_minutes, eval_minutes = run_minutes(run_dir)
    return {
        "estimator": estimator,
        "heldout_pass_before": pass_before,
        "heldout_pass_after": pass_after,
        "heldout_problems": after["problems"],
        "heldout_samples": after["samples"],
        "minutes": minutes,
        "minutes_train": train_minutes,
        "minutes_eval": eval_minutes,
        "steps": last - first,
        "target_met": minutes <= TARGET_MINUTES and (pass_after - pass_before >= TARGET_RISE
                                                     or pass_after >= TARGET_LEVEL),
        "heldout_verdicts_before": before["category"],
        "heldout_verdicts_after": after["category"],
        "heldout_curve": [{"step": s, "pass": e["pass_at_k"]["1"]} for s, e in evals],
        "reward_curve": [{"step": r["step"], "reward_mean": r.get("reward_mean"),
                          "sample_pass_rate": r.get("sample_pass_rate"), "advantage_mean": r.get("reward_advantage"),
                          "grad_norm": r.get("grad_norm")} for r in records],
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for res in results:
        curve = [c for c in res["reward_curve"] if c["sample_pass_rate"] is not None]
        line, = left.plot([c["step"] for c in curve], [100 * c["sample_pass_rate"] for c in curve],
                          label=res["estimator"], alpha=0.8)
        right.plot([c["step"] for c in res["heldout_curve"]], [100 * c["pass"] for c in res["heldout_curve"]],
                   marker="o", color=line.get_color(), label=f"{res['estimator']} ({res['minutes']:.0f} min)")
    left.set_title("train problems: sampled programs passing", fontsize=10)
    right.set_title("held-out problems: sampled programs passing", fontsize=10)
    for ax in (left, right):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("%")
        ax.set_ylim(0, 100)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimator", choices=("greedy", "rloo", "grpo"), default="grpo")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="further config overrides (dotted keys of rltf/configs/learning-test.yaml)")
    parser.add_argument("--plot", nargs="+", type=Path, default=None, metavar="RESULT_DIR",
                        help="draw finished results into OUT/learning_curves.png instead of running")
    args = parser.parse_args(argv)
    if args.plot:
        out = args.out or Path(".")
        out.mkdir(parents=True, exist_ok=True)
        plot([json.loads((d / "result.json").read_text()) for d in args.plot], out / "learning_curves.png")
        return 0
    out = args.out or Path("runs/learning-test") / args.estimator
    overrides = [f"feedback.baseline={args.estimator}", f"seed={args.seed}",
                 *([f"steps={args.steps}"] if args.steps else []), *args.overrides]
    run_dir = out / "run"
    train(load_config("learning-test", overrides), run_dir)
    res = result(run_dir, args.estimator)
    (out / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    plot([res], out / "learning_curve.png")
    print(f"{args.estimator}: held-out pass {100 * res['heldout_pass_before']:.1f}% -> "
          f"{100 * res['heldout_pass_after']:.1f}% in {res['minutes']:.1f} min "
          f"({'target met' if res['target_met'] else 'target missed'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
