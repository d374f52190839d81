"""How many samples per problem does a paired comparison need? The power of two sampled evaluations.

    python experiments/eval_power.py A_DIR B_DIR [--out experiments/eval-power/power.md]

A_DIR and B_DIR are ``rltf eval`` outputs on the same problems with n samples each. The paired
difference A − B is clustered by problem (:func:`rltf.ablation.stats.paired`). Its per-problem
variance has two parts: how much the models really differ problem by problem, and sampling noise,
which n samples divide by n. The noise is estimated from each problem's pass fraction p̂ over its
n samples (p̂(1 − p̂) · n / (n − 1) per sample and model), the rest is the models' own; from these,
the difference detectable at 80 % power (two-sided 5 %) is projected for other n, greedy (n = 1)
included as the one-sample case.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from rltf.ablation.stats import paired
from rltf.evaluation import SUMMARY

Z = 1.959964 + 0.841621  # two-sided 5 %, 80 % power


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--ns", default="1,5,15,50")
    parser.add_argument("--out", type=Path, default=None, help="write the table (and a .json beside it)")
    args = parser.parse_args(argv)
    summaries = [json.loads((d / SUMMARY).read_text()) for d in (args.a, args.b)]
    problems = sorted(set(summaries[0]["per_problem"]) & set(summaries[1]["per_problem"]))
    per = [[s["per_problem"][p] for p in problems] for s in summaries]
    n = min(x["n"] for side in per for x in side)
    fractions = [np.array([x["fraction"] for x in side]) for side in per]
    result = paired(fractions[0], fractions[1])
    noise = sum(float(np.mean(f * (1 - f))) * n / (n - 1) for f in fractions)  # per-sample variance, both models
    observed = float(np.var(fractions[0] - fractions[1], ddof=1))
    models = max(observed - noise / n, 0.0)
    rows = [{"n": k, "detectable": Z * math.sqrt((models + noise / k) / len(problems))}
            for k in map(int, args.ns.split(","))]
    report = {"a": str(args.a), "b": str(args.b), "problems": len(problems), "n": n,
              "pass_at_1": [s["pass_at_k"]["1"] for s in summaries],
              "stderr": [s["pass_at_k_stderr"]["1"] for s in summaries], "difference": result.to_dict(),
              "variance": {"observed": observed, "sampling_per_sample": noise, "models": models}, "projected": rows}
    lines = [f"A = `{args.a}`, B = `{args.b}`: {len(problems)} problems, n = {n} samples each.", "",
             f"- pass@1: A {100 * report['pass_at_1'][0]:.2f} ± {100 * report['stderr'][0]:.2f}, "
             f"B {100 * report['pass_at_1'][1]:.2f} ± {100 * report['stderr'][1]:.2f} (± standard error)",
             f"- A − B: {100 * result.diff:+.2f} points (95 % CI {100 * result.ci95[0]:+.2f} to "
             f"{100 * result.ci95[1]:+.2f}), sign test p = {result.p_sign:.3g} ({result.better} better, "
             f"{result.worse} worse problems), detectable at 80 % power: {100 * result.detectable:.2f} points",
             f"- variance of the per-problem difference: {observed:.4f} observed = {models:.4f} between the models "
             f"+ {noise:.4f} / n sampling", "",
             "| samples per problem | detectable difference at 80 % power (points) |", "|---|---|",
             *[f"| {r['n']} | {100 * r['detectable']:.2f} |" for r in rows]]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
