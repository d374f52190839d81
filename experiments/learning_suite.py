"""The learning suite: does the recipe learn on every family and every seed, and is it the RL term that learns?

The learning test (``learning_test.py``) on the families of :mod:`rltf.families`, which the recipe
was not built on: ``rltf/configs/learning-test.yaml`` with the family's train split and its held-out
split as the evaluation (8 samples per problem), under a recipe (:data:`RECIPES`): ``stable-rl8`` (the
default config's recipe), ``rl+sl`` (the RL term plus the supervised term on the train problems'
references at weight 1 each, as the paper trains; the default before ``stable-rl8``), ``sl-only``,
``rl-only``, and from the ``sl-only`` run's checkpoint ``rl-after-sl``, ``rl-after-sl-dynamic``,
``sl-after-sl`` and ``rft-after-sl``. Each (recipe, family, estimator, seed) is one run; ``cross`` trains
on every family but one and evaluates the one left out.

    python experiments/learning_suite.py run --family strings --seed 0     # the default recipe, stable-rl8
    python experiments/learning_suite.py run --recipe rl-after-sl --family strings --seed 1
    python experiments/learning_suite.py cross --heldout stdio --estimator grpo --seed 0
    python experiments/learning_suite.py all --recipe rl-only --estimators grpo,rloo,greedy --seeds 0,1,2
    python experiments/learning_suite.py table            # suite.{json,md,png} from the finished runs

Runs live in ``--out/<recipe>`` (default ``runs/learning-suite``), one process each, and resume when
repeated; ``table`` writes its files to ``--results`` (default ``experiments/learning``): the default
recipe's runs (``suite-default.{md,png}``, what the README shows), every run, held-out pass by family and
recipe, and the recipes compared by problem (:data:`PAIRS`) (``suite.{json,md,png}``). Target per
(family, seed): held-out pass up by at least 20 points or at least 85 %, never below its start, in at
most 15 minutes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
from learning_test import check_settings, result, train

from rltf.ablation.stats import bootstrap_mean, sign_test
from rltf.config import TrainConfig, load_config
from rltf.families import FAMILIES, load_family
from rltf.problems import save_problems
from rltf.train import read_evals
from rltf.train.checkpoint import CHECKPOINTS, latest_checkpoint

TARGET_RISE, TARGET_LEVEL, TARGET_MINUTES = 0.20, 0.85, 15.0
SL = ["optim.sl_weight=1", "optim.sl_micro_batch=4"]
DEFAULT_RECIPE = "stable-rl8"
DEFAULT_SETTINGS = ("rollout.dynamic_sampling", "feedback.overlong", "optim.loss_aggregation", "optim.rl_weight")
"""Where the default config differs from ``learning-test.yaml`` beyond the supervised term and the scale."""
RECIPES = {DEFAULT_RECIPE: [*SL, *(f"{key}={attrgetter(key)(TrainConfig())}" for key in DEFAULT_SETTINGS)],
           "rl+sl": SL, "rl-only": [], "sl-only": [*SL, "optim.rl_weight=0", "rollout.enabled=false"]}
"""Overrides of ``learning-test.yaml`` (RL alone, token mean, weight 1) per recipe. ``stable-rl8``: the
default config's recipe, chosen on MBPP's learnable set and validation split (experiments/mbpp-learnable):
the supervised term, dynamic sampling, the soft overlong term, Dr. GRPO's constant normaliser and the RL
term at weight 8 (the constant normaliser makes the RL gradient a few per cent of the supervised one at
weight 1). ``rl+sl``: the paper's mix, 16 references a step (4 per RL micro-batch) beside the 64 sampled
programs, both terms at weight 1, the RL term a token mean. ``sl-only``: the same 16 references a step and
nothing sampled, so either recipe minus ``sl-only`` is what its RL term adds.
``rl-after-sl`` / ``sl-after-sl``: RL alone / the same SL again, for the same steps, from the last
checkpoint of the (family, seed)'s ``sl-only`` run in the same ``--out`` (:data:`WARM_STARTED`; ``--set``
changes the second stage, not the warm start): does RL add once SL has taught the format, against
continuing SL for the same steps? ``rl-after-sl-dynamic``: ``rl-after-sl`` with ``rollout.dynamic_sampling``
(groups whose samples all got one reward are replaced, up to 3 generate calls a step). ``rft-after-sl``:
rejection-sampling fine-tuning from the same checkpoint, the baseline a user would try before RL: the same
sampling as ``rl-after-sl``, no RL term, and 16 sequences a step (``sl-after-sl``'s count) drawn from the
programs that passed so far, each once per problem (``optim.sl_source=passing``)."""
RECIPES |= {"rl-after-sl": RECIPES["rl-only"], "rl-after-sl-dynamic": ["rollout.dynamic_sampling=true"],
            "sl-after-sl": RECIPES["sl-only"],
            "rft-after-sl": [*SL, "optim.rl_weight=0", "optim.sl_source=passing"]}
WARM_STARTED = ("rl-after-sl", "rl-after-sl-dynamic", "sl-after-sl", "rft-after-sl")


def run_family(out: Path, recipe: str, family: str, estimator: str, seed: int,
               overrides: list[str]) -> dict[str, Any]:
    """One (recipe, family, estimator, seed) run, resumed if it exists; its result with per-problem numbers."""
    labels = {"recipe": recipe, "family": family, "estimator": _estimator(recipe, estimator), "seed": seed}
    start = []
    if recipe in WARM_STARTED:
        warm = run_family(out, "sl-only", family, estimator, seed, [])  # --set changes the second stage only
        labels["minutes_warm_start"] = warm["minutes"]
        start = [f"model.name={latest_checkpoint(out / 'sl-only' / family / f'none-seed{seed}' / 'run') / 'model'}"]
    config = load_config("learning-test", [
        f"data.dataset=family-{family}", "data.split=train", f"eval.dataset=family-{family}", "eval.split=heldout",
        *_baseline(labels["estimator"]), f"seed={seed}", *RECIPES[recipe], *start, *overrides])
    return _finish(out / recipe / family / f"{labels['estimator']}-seed{seed}", config, labels)


def run_cross(out: Path, recipe: str, heldout: str, estimator: str, seed: int,
              overrides: list[str]) -> dict[str, Any]:
    """Train on the train splits of every family but ``heldout``; evaluate ``heldout``'s held-out split."""
    if recipe in WARM_STARTED:
        raise SystemExit(f"cross runs start from the embedded model: --recipe {recipe} is for run and all")
    estimator = _estimator(recipe, estimator)
    where = out / recipe / f"cross-{heldout}" / f"{estimator}-seed{seed}"
    data = where / "train.jsonl.gz"
    if not data.is_file():
        where.mkdir(parents=True, exist_ok=True)
        save_problems([p for name in FAMILIES if name != heldout for p in load_family(name, "train")], data)
    config = load_config("learning-test", [
        f"data.dataset={data}", f"eval.dataset=family-{heldout}", "eval.split=heldout",
        *_baseline(estimator), f"seed={seed}", *RECIPES[recipe], *overrides])
    return _finish(where, config, {"recipe": recipe, "family": f"cross-{heldout}", "estimator": estimator,
                                   "seed": seed})


def _estimator(recipe: str, estimator: str) -> str:
    return "none" if "optim.rl_weight=0" in RECIPES[recipe] else estimator  # no RL term: no estimator


def _baseline(estimator: str) -> list[str]:
    return [] if estimator == "none" else [f"feedback.baseline={estimator}"]


def _finish(where: Path, config: Any, labels: dict[str, Any]) -> dict[str, Any]:
    """Train (or resume) and write ``result.json``; a finished run is read back. Only ``sl-only`` runs
    keep their checkpoint (the warm starts): 1.6 GB each would fill a disk over the whole suite."""
    if (where / "result.json").is_file():
        check_settings(config, where / "run")
        return json.loads((where / "result.json").read_text())
    train(config, where / "run")
    res = {**labels, **result(where / "run", labels["estimator"])}
    evals = read_evals(where / "run")
    first, last = evals[0][1]["per_problem"], evals[-1][1]["per_problem"]
    res["per_problem"] = {pid: [first[pid]["fraction"], last[pid]["fraction"]] for pid in last}
    (where / "result.json").write_text(json.dumps(res, indent=1) + "\n")
    if labels["recipe"] != "sl-only":
        shutil.rmtree(where / "run" / CHECKPOINTS, ignore_errors=True)
    return res


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    """Before / after, the change with its 95 % interval over problems, problems better / worse, the target."""
    pairs = np.array(list(res["per_problem"].values()))
    change = pairs[:, 1] - pairs[:, 0]
    low, high = bootstrap_mean(change[None, :])
    before, after = res["heldout_pass_before"], res["heldout_pass_after"]
    minutes = res["minutes"] + res.get("minutes_warm_start", 0.0)
    return {"recipe": res["recipe"], "family": res["family"], "estimator": res["estimator"], "seed": res["seed"],
            "before": before,
            "after": after, "change": after - before, "ci": [low, high], "better": int((change > 0).sum()),
            "worse": int((change < 0).sum()), "minutes": minutes,
            "target_met": minutes <= TARGET_MINUTES and after >= before
            and (after - before >= TARGET_RISE or after >= TARGET_LEVEL)}


def table(out: Path, results_dir: Path) -> None:
    # the recipe is the run's folder (<recipe>/<family>/<estimator>-seed<n>/result.json)
    results = [{**json.loads(p.read_text()), "recipe": p.parents[2].name} for p in out.glob("*/*/*/result.json")]
    results.sort(key=lambda r: (list(RECIPES).index(r["recipe"]), r["family"], r["estimator"], r["seed"]))
    rows = [summarise(r) for r in results]
    if not rows:
        raise SystemExit(f"no finished runs under {out}")
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "suite.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| recipe | family | estimator | seed | held-out pass before | after | change (95 % CI over problems) | "
             "better / worse | minutes | target |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['recipe']} | {r['family']} | {r['estimator']} | {r['seed']} | {100 * r['before']:.1f} % | "
                     f"{100 * r['after']:.1f} % | {100 * r['change']:+.1f} ({100 * r['ci'][0]:+.1f}, "
                     f"{100 * r['ci'][1]:+.1f}) | {r['better']} / {r['worse']} | {r['minutes']:.1f} | "
                     f"{'met' if r['target_met'] else 'missed'} |")
    lines += ["", *pivot(rows), "", *paired_table(results)]
    (results_dir / "suite.md").write_text("\n".join(lines) + "\n")
    plot(results, results_dir / "suite.png")
    print("\n".join(lines))
    default = [i for i, r in enumerate(rows) if r["recipe"] == DEFAULT_RECIPE and not r["family"].startswith("cross-")]
    if default:
        (results_dir / "suite-default.md").write_text("\n".join(default_table([rows[i] for i in default])) + "\n")
        plot([results[i] for i in default], results_dir / "suite-default.png")


def default_table(rows: list[dict[str, Any]]) -> list[str]:
    """The default recipe against the target: held-out pass before → after by family and seed (what the
    README shows), the count that met it, then one row per (family, seed) with its interval."""
    seeds = sorted({r["seed"] for r in rows})
    compact = ["| family | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for family in sorted({r["family"] for r in rows}):
        by_seed = {r["seed"]: r for r in rows if r["family"] == family}
        compact.append(f"| {family} | " + " | ".join(
            f"{100 * by_seed[s]['before']:.0f} → {100 * by_seed[s]['after']:.0f} %" if s in by_seed else "–"
            for s in seeds) + " |")
    changes, minutes = [100 * r["change"] for r in rows], [r["minutes"] for r in rows]
    summary = (f"{DEFAULT_RECIPE}: target met on {sum(r['target_met'] for r in rows)} of {len(rows)} (family, seed) "
               f"runs over {len({r['family'] for r in rows})} families; changes {min(changes):+.1f} to "
               f"{max(changes):+.1f} points, {min(minutes):.1f}–{max(minutes):.1f} minutes a run.")
    detail = ["| family | seed | held-out pass before | after | change (95 % CI over problems) | better / worse | "
              "minutes | target |", "|---|---|---|---|---|---|---|---|"]
    detail += [f"| {r['family']} | {r['seed']} | {100 * r['before']:.1f} % | {100 * r['after']:.1f} % | "
               f"{100 * r['change']:+.1f} ({100 * r['ci'][0]:+.1f}, {100 * r['ci'][1]:+.1f}) | "
               f"{r['better']} / {r['worse']} | {r['minutes']:.1f} | {'met' if r['target_met'] else 'missed'} |"
               for r in rows]
    return [*compact, "", summary, "", *detail]


def pivot(rows: list[dict[str, Any]]) -> list[str]:
    """Held-out pass by family (rows) and recipe (columns), the mean over the seeds run (grpo's RL runs);
    the first column is the embedded model's, before any training."""
    rows = [r for r in rows if r["estimator"] in ("grpo", "none") and not r["family"].startswith("cross-")]
    recipes = sorted({r["recipe"] for r in rows}, key=list(RECIPES).index)
    lines = ["| family | embedded model | " + " | ".join(recipes) + " |", "|---|---|" + "---|" * len(recipes)]
    for family in sorted({r["family"] for r in rows}):
        cells = []
        for recipe in recipes:
            after = [r["after"] for r in rows if r["family"] == family and r["recipe"] == recipe]
            cells.append(f"{100 * np.mean(after):.1f} % ({len(after)})" if after else "–")
        start = [r["before"] for r in rows if r["family"] == family and r["recipe"] not in WARM_STARTED]
        lines.append(f"| {family} | {100 * np.mean(start):.1f} % | " + " | ".join(cells) + " |")
    return lines


PAIRS = ((DEFAULT_RECIPE, "sl-only"), (DEFAULT_RECIPE, "rl+sl"), ("rl+sl", "sl-only"),
         ("rl-after-sl", "sl-after-sl"), ("rl-after-sl-dynamic", "sl-after-sl"),
         ("rl-after-sl-dynamic", "rl-after-sl"), ("rl-after-sl", "rft-after-sl"),
         ("rl-after-sl-dynamic", "rft-after-sl"), ("rft-after-sl", "sl-after-sl"))
"""(A, B) recipes compared by problem: what the RL term adds to SL (``stable-rl8`` and ``rl+sl`` vs
``sl-only``), the default recipe against the paper's mix, RL against the same steps of SL and against
rejection-sampling fine-tuning from one checkpoint, and what dynamic sampling changes."""


def paired_table(results: list[dict[str, Any]]) -> list[str]:
    """Each of :data:`PAIRS`: held-out pass after, A minus B, paired by problem over the seeds both recipes
    ran (per family, then all families' problems together), with the 95 % interval over problems and
    the sign test. The RL runs are grpo's (the default estimator)."""
    lines = ["| A | B | family | seeds | after, A | after, B | A − B (95 % CI) | "
             "problems better / worse | sign test p |", "|---|---|---|---|---|---|---|---|---|"]
    runs = {(r["recipe"], r["family"], r["seed"]): r["per_problem"] for r in results
            if r["estimator"] in ("grpo", "none")}
    for treated, control in PAIRS:
        cells = {}  # family -> per-seed (treated, control) after-pass matrices over the family's problems
        for (recipe, family, seed), per_problem in sorted(runs.items()):
            other = runs.get((control, family, seed))
            if recipe == treated and other is not None:
                ids = sorted(per_problem)
                cells.setdefault(family, {})[seed] = (np.array([per_problem[i][1] for i in ids]),
                                                      np.array([other[i][1] for i in ids]))
        if not cells:
            continue
        groups = [(family, c, sorted(c)) for family, c in sorted(cells.items())]
        families = [c for family, c in cells.items() if not family.startswith("cross-")]  # held-out sets once
        seeds_everywhere = sorted(set.intersection(*(set(c) for c in families))) if families else []
        if len(families) > 1 and seeds_everywhere:
            groups.append(("all", {s: tuple(np.concatenate([c[s][k] for c in families]) for k in (0, 1))
                                   for s in seeds_everywhere}, seeds_everywhere))
        for family, by_seed, seeds in groups:
            with_rl = np.stack([by_seed[s][0] for s in seeds])
            without = np.stack([by_seed[s][1] for s in seeds])
            diff = (with_rl - without).mean(axis=0)  # a problem's seeds travel together
            low, high = bootstrap_mean(diff[None, :])
            lines.append(f"| {treated} | {control} | {family} | {','.join(map(str, seeds))} | "
                         f"{100 * with_rl.mean():.1f} % | {100 * without.mean():.1f} % | {100 * diff.mean():+.1f} "
                         f"({100 * low:+.1f}, {100 * high:+.1f}) | {int((diff > 0).sum())} / {int((diff < 0).sum())} "
                         f"| {sign_test(diff):.3g} |")
    return lines


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Held-out pass along each run, one panel per (recipe, family)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = sorted({r["recipe"] for r in results}, key=list(RECIPES).index)
    families = sorted({r["family"] for r in results})
    fig, axes = plt.subplots(len(recipes), len(families), figsize=(3.2 * len(families), 3.0 * len(recipes)),
                             squeeze=False)
    for row, recipe in zip(axes, recipes):
        for ax, family in zip(row, families):
            for res in (r for r in results if r["family"] == family and r["recipe"] == recipe):
                curve = res["heldout_curve"]
                ax.plot([c["step"] for c in curve], [100 * c["pass"] for c in curve], marker="o", alpha=0.8,
                        label=f"{res['estimator']} s{res['seed']}")
            ax.set_title(f"{family} ({recipe})", fontsize=10)
            ax.set_xlabel("optimizer step")
            ax.set_ylim(0, 100)
            if ax.lines:
                ax.legend(fontsize=7)
        row[0].set_ylabel("held-out programs passing, %")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("run", "cross", "all", "table"))
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=DEFAULT_RECIPE)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="strings")
    parser.add_argument("--heldout", choices=sorted(FAMILIES), default="stdio")
    parser.add_argument("--estimator", choices=("greedy", "rloo", "grpo"), default="grpo")
    parser.add_argument("--estimators", default="grpo,rloo,greedy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("runs/learning-suite"))
    parser.add_argument("--results", type=Path, default=Path("experiments/learning"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="further config overrides (dotted keys of rltf/configs/learning-test.yaml)")
    args = parser.parse_args(argv)
    if args.command == "run":
        print(json.dumps(summarise(run_family(args.out, args.recipe, args.family, args.estimator, args.seed,
                                              args.overrides))))
    elif args.command == "cross":
        print(json.dumps(summarise(run_cross(args.out, args.recipe, args.heldout, args.estimator, args.seed,
                                             args.overrides))))
    elif args.command == "all":  # one process per run: a long driver process grew to 14 GB and was killed
        for seed in map(int, args.seeds.split(",")):
            for estimator in args.estimators.split(","):
                for family in FAMILIES:
                    subprocess.run([sys.executable, __file__, "run", "--recipe", args.recipe, "--family", family,
                                    "--estimator", estimator, "--seed", str(seed), "--out", str(args.out),
                                    "--results", str(args.results),
                                    *(f"--set={o}" for o in args.overrides)], check=True)
    else:  # only here: a run must not overwrite the committed table with the runs in --out alone
        table(args.out, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
