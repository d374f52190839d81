"""RL from an SFT warm start on MBPP, judged on the validation split: which estimator and importance setting?

Stages, each a resumable run under ``OUT`` (default ``runs/mbpp-validation``; the committed copy is
``experiments/mbpp-validation``, made by ``experiments/archive.py``):

    python experiments/mbpp_validation.py sft                                  # rltf/configs/mbpp-sft.yaml
    python experiments/mbpp_validation.py rl --estimator rloo --importance none  # rltf/configs/mbpp-rl.yaml
    python experiments/mbpp_validation.py table                                # OUT/results.md + plot

and MBPP's learnable set (issue 30), from a leak-free warm start in its own OUT:

    python experiments/mbpp_validation.py sft --out runs/mbpp-learnable --set data.drop_leaks=true
    python experiments/mbpp_validation.py learnable --out runs/mbpp-learnable --seed 0 --set steps=12
    python experiments/mbpp_validation.py learnable --out runs/mbpp-learnable --seed 0 --recipe stable --set ...

(``--recipe`` names a run made with the given overrides; its result records them).

``sft`` fine-tunes the embedded SmolLM2-135M-Instruct on the MBPP train references; ``rl`` trains
RL alone (no supervised term) from its last checkpoint, in ``OUT/<estimator>-<importance>``. Each
writes ``result.json``: pass@1 on the 90 MBPP validation problems (ids 511-600) before and after
(greedy by default; ``--set eval.samples=5 --set eval.temperature=0.1 --set eval.top_p=0.95`` for
sampled) with the paired interval and sign test over problems (:mod:`rltf.ablation.stats`), and
for RL the sampled pass rate and verdict mix of the training problems' programs over the run.
``learnable`` adds the pass rate of 16 fresh samples per learnable problem before and after
(:func:`run_learnable`) and the share of greedy validation programs cut at the token limit.
Choices are made on these numbers; the test split is not used. Repeating a command resumes its
run (checkpoints are not committed: a new machine redoes ``sft`` first, which is seeded).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from learning_test import run_minutes, train

from rltf._io import read_jsonl
from rltf.ablation.stats import paired
from rltf.config import load_config
from rltf.datasets import load_problem_set
from rltf.evaluation import SAMPLES, per_problem_pass
from rltf.problems import save_problems
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


def fresh_pass(out: Path, model: Path, problems: Path, config: Any, samples: int) -> dict[str, float]:
    """Each problem's share of ``samples`` fresh programs that pass, sampled from ``model`` as the
    rollouts sample (``rltf eval``, resumable in ``out``)."""
    rollout = config.rollout
    subprocess.run([sys.executable, "-m", "rltf.cli", "eval", "--model", str(model), "--dataset", str(problems),
                    "--n", str(samples), "--k", "1", "--temperature", str(rollout.temperature),
                    "--top-p", str(rollout.top_p), "--max-new-tokens", str(rollout.max_new_tokens),
                    "--out", str(out)], check=True)
    return per_problem_pass(out / SAMPLES)


def run_learnable(out: Path, seed: int, samples: int, overrides: list[str],
                  recipe: str = "learnable") -> dict[str, Any]:
    """RL on MBPP's learnable set: ``rollout.selection: learnable`` from the SFT warm start (grpo), then
    the pass rate of fresh samples on the problems the pre-pass found learnable (0 < p < 1), from the
    warm start (once, shared by the seeds) and from the run's last checkpoint, paired by problem.
    The pre-pass's own estimates chose the set, so they are not the "before": a fresh one is."""
    start = sft_model(out)
    config = load_config("mbpp-rl", [f"model.name={start}", "rollout.selection=learnable",
                                     f"rollout.selection_samples={samples}", "feedback.baseline=grpo",
                                     "data.drop_leaks=true", f"seed={seed}", *overrides])
    arm = f"{recipe}-seed{seed}"
    run_dir = out / arm / "run"
    train(config, run_dir)
    rates = json.loads((run_dir / "pass_rates.json").read_text())["rates"]
    learnable = [p for p in load_problem_set(config.data.dataset, config.data.split, config.data.path, None)
                 if 0 < rates.get(p.id, 0) < 1]  # rates: the run's problems (leaks and --set data.limit out)
    problems = out / "learnable-problems.jsonl"
    save_problems(learnable, problems)
    before = fresh_pass(out / "learnable-before", start, problems, config, samples)
    after = fresh_pass(out / arm / "after", latest_checkpoint(run_dir) / "model", problems, config, samples)
    ids = sorted(before)
    change = paired(np.array([after[p] for p in ids]), np.array([before[p] for p in ids]))
    last = read_evals(run_dir)[-1][0]
    greedy = read_jsonl(run_dir / EVAL_DIR / f"step-{last:06d}" / SAMPLES)
    records = read_metrics(run_dir)
    return {
        "arm": arm, "recipe": recipe, "overrides": overrides, "estimator": "grpo",
        "importance": config.optim.importance, "seed": seed,
        "learnable_problems": len(ids), "learnable_samples": samples,
        "learnable_pass_before": float(np.mean([before[p] for p in ids])),
        "learnable_pass_after": float(np.mean([after[p] for p in ids])),
        "learnable_change_ci95": list(change.ci95), "learnable_gained": change.better,
        "learnable_lost": change.worse,
        "learnable_by_problem": {p: [before[p], after[p]] for p in ids},
        "validation_cut_at_limit": sum(r["finish_reason"] == "length" for r in greedy) / len(greedy),
        "minutes_training": run_minutes(run_dir)[1],
        "prepass_minutes": json.loads((run_dir / "pass_rates.json").read_text())["seconds"] / 60,
        **validation(run_dir), **train_programs(records),
        "train_curve": [{key: r.get(key) for key in ("step", "sample_pass_rate", "reward_mean", "groups_with_pass",
                                                      "completion_truncated_frac", "entropy", "grad_norm")}
                        for r in records],
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


def _after_by_seed(runs: list[dict[str, Any]], ids: list[str]) -> np.ndarray:
    """Seeds x problems: each run's fresh "after" pass rate, rows in seed order (so recipes pair by seed)."""
    return np.array([[r["learnable_by_problem"][p][1] for p in ids] for r in sorted(runs, key=lambda r: r["seed"])])


def _change(result: Any) -> str:
    """A paired difference in points with its interval: ``+5.8 (+2.7, +8.9)``."""
    return f"{100 * result.diff:+.1f} ({100 * result.ci95[0]:+.1f}, {100 * result.ci95[1]:+.1f})"


def learnable_table(results: list[dict[str, Any]]) -> str:
    """Markdown of the learnable-set runs: fresh sampled pass on the learnable problems before and after,
    paired by problem, beside validation pass@1 and the greedy validation programs the token limit cut."""
    lines = ["| run | learnable problems | sampled pass before → after | change (95 % CI) | gained / lost | "
             "validation pass@1 before → after | validation cut at limit | training minutes | pre-pass minutes |",
             "|---|---|---|---|---|---|---|---|---|"]
    runs = [r for r in results if "learnable_problems" in r]
    for res in runs:
        low, high = res["learnable_change_ci95"]
        change = res["learnable_pass_after"] - res["learnable_pass_before"]
        lines.append(f"| {res['arm']} | {res['learnable_problems']} | {pct(res['learnable_pass_before'])} → "
                     f"{pct(res['learnable_pass_after'])} | {100 * change:+.1f} ({100 * low:+.1f}, {100 * high:+.1f}) "
                     f"| {res['learnable_gained']} / {res['learnable_lost']} | {pct(res['validation_pass_before'])} → "
                     f"{pct(res['validation_pass_after'])} | {pct(res['validation_cut_at_limit'])} % | "
                     f"{res['minutes_training']:.1f} | {res['prepass_minutes']:.1f} |")
    by_recipe: dict[str, list[dict[str, Any]]] = {}
    for res in runs:
        by_recipe.setdefault(res["recipe"], []).append(res)
    for recipe, seeds in by_recipe.items():
        if len(seeds) < 2:
            continue
        ids = sorted(seeds[0]["learnable_by_problem"])  # the seeds together: each problem's after over seeds
        before = np.array([seeds[0]["learnable_by_problem"][p][0] for p in ids])
        after = _after_by_seed(seeds, ids)
        pooled = paired(after, before)
        lines.append(f"| {recipe}, seeds {', '.join(str(r['seed']) for r in seeds)}, paired by problem | {len(ids)} | "
                     f"{pct(before.mean())} → {pct(after.mean())} | {_change(pooled)} | "
                     f"{pooled.better} / {pooled.worse} | – | – | – | – |")
    lines += ["", "| recipe | overrides of `mbpp-rl` (besides grpo, learnable selection, leak-free data) |",
              "|---|---|"]
    lines += [f"| {recipe} | `{' '.join(seeds[0]['overrides'])}` |"
              for recipe, seeds in by_recipe.items()]
    lines += ["", "| A − B, after, paired by problem | seeds | change (95 % CI) | better / worse |",
              "|---|---|---|---|"]
    for a, b in itertools.combinations(by_recipe, 2):
        seeds = sorted({r["seed"] for r in by_recipe[a]} & {r["seed"] for r in by_recipe[b]})
        if not seeds:
            continue
        ids = sorted(by_recipe[a][0]["learnable_by_problem"])
        after = {name: _after_by_seed([r for r in by_recipe[name] if r["seed"] in seeds], ids) for name in (a, b)}
        diff = paired(after[a], after[b])
        lines.append(f"| {a} − {b} | {', '.join(map(str, seeds))} | {_change(diff)} | {diff.better} / {diff.worse} |")
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
    parser.add_argument("stage", choices=("sft", "rl", "learnable", "table"))
    parser.add_argument("--estimator", choices=ESTIMATORS, default="rloo")
    parser.add_argument("--importance", choices=IMPORTANCE, default="none")
    parser.add_argument("--seed", type=int, default=0, help="the RL run's seed (the SFT warm start is shared)")
    parser.add_argument("--samples", type=int, default=16, help="learnable: programs per problem, pre-pass and fresh")
    parser.add_argument("--out", type=Path, default=Path("runs/mbpp-validation"))
    parser.add_argument("--recipe", default="learnable",
                        help="learnable: the run's name before -seedN, for a recipe given by --set")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="further config overrides (a dry run: --set steps=2 --set eval.limit=4)")
    args = parser.parse_args(argv)
    if args.stage == "table":
        results = finished(args.out)
        text = table(results) + "\n" + learnable_table(results)
        (args.out / "results.md").write_text(text)
        plot(results, args.out / "curves.png")
        print(text)
        return 0
    res = (run_sft(args.out, args.overrides) if args.stage == "sft"
           else run_learnable(args.out, args.seed, args.samples, args.overrides, args.recipe)
           if args.stage == "learnable"
           else run_rl(args.out, args.estimator, args.importance, args.seed, args.overrides))
    (args.out / res["arm"] / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"{res['arm']}: validation pass@1 {pct(res['validation_pass_before'])}% -> "
          f"{pct(res['validation_pass_after'])}% in {res['minutes']:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
