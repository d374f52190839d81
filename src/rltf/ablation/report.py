"""The ablation's outputs: one row per (arm, eval target) with intervals and paired tests, the
compute each run spent, ``ablation.md`` and ``ablation.png``."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rltf.ablation.spec import EVAL_DIR, WARM_START, AblationSpec, finished_runs, run_dir, warm_start_evaluated
from rltf.ablation.stats import bootstrap_mean, sign_test
from rltf.evaluation import SAMPLES, SUMMARY, cut_at_limit, per_problem_pass
from rltf.train import read_metrics, read_samples


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


def finished_seeds(spec: AblationSpec, out: Path) -> dict[str, list[int]]:
    """Per arm, its finished seeds among those the reference arm has finished (arms with none left
    out): every seed of every arm once the ablation is complete, and a paired table before."""
    finished = finished_runs(spec, out)
    reference = [s for s in spec.seeds if (spec.reference, s) in finished]
    if not reference:
        raise ValueError(f"the reference arm {spec.reference!r} has no finished run in {out} yet")
    done = {arm: [s for s in reference if (arm, s) in finished] for arm in spec.arms}
    return {arm: seeds for arm, seeds in done.items() if seeds}


def summarize(spec: AblationSpec, out: Path) -> dict[str, Any]:
    """One row per (arm, eval target): pass@1 per seed, their mean with a problems × seeds bootstrap
    interval, and the paired difference against the reference arm (same seeds) with its interval
    and sign test. Only finished runs count (:func:`finished_seeds`). With a warm start scored, its
    row (``warm-start``, step 0) comes first, one model paired with every reference seed."""
    seeds_of, rows = finished_seeds(spec, out), []
    scored = dict(seeds_of)
    if spec.warm_start and warm_start_evaluated(spec, out):
        scored = {WARM_START: [spec.warm_start.config().seed], **seeds_of}
    for target in spec.eval:
        scores = {(arm, seed): per_problem_pass(run_dir(out, arm, seed) / EVAL_DIR / target.name / SAMPLES)
                  for arm, seeds in scored.items() for seed in seeds}
        problems = sorted(set.intersection(*(set(s) for s in scores.values())))
        for arm, seeds in scored.items():
            matrix, verdicts = np.array([[scores[arm, seed][p] for p in problems] for seed in seeds]), Counter()
            for seed in seeds:
                verdicts.update(json.loads((run_dir(out, arm, seed) / EVAL_DIR / target.name / SUMMARY).read_text())
                                ["category"])
            paired = seeds_of[spec.reference] if arm == WARM_START else seeds  # one warm start against every seed
            diff = matrix - np.array([[scores[spec.reference, seed][p] for p in problems] for seed in paired])
            spent = [compute_spent(run_dir(out, arm, seed)) for seed in seeds]
            cut = sum(cut_at_limit(run_dir(out, arm, seed) / EVAL_DIR / target.name / SAMPLES) for seed in seeds)
            rows.append({
                "arm": arm, "dataset": target.name, "problems": len(problems),
                "runs": {str(seed): float(matrix[i].mean()) for i, seed in enumerate(seeds)},
                "pass@1": float(matrix.mean()), "ci95": list(bootstrap_mean(matrix)),
                "vs_reference": {"diff": float(diff.mean()), "ci95": list(bootstrap_mean(diff)),
                                 "p": sign_test(diff), "better": int((diff > 0).sum()), "worse": int((diff < 0).sum())},
                "verdicts": dict(verdicts.most_common()), "cut_at_limit": cut,
                "compute_per_run": {k: sum(s[k] for s in spent) / len(spent) for k in spent[0]},
            })
    curves = {arm: _reward_curve(out, arm, seeds) for arm, seeds in seeds_of.items()}
    finished = len(finished_runs(spec, out))
    return {"reference": spec.reference, "seeds": spec.seeds, "steps": spec.steps,
            "runs_finished": finished, "runs_total": len(spec.arms) * len(spec.seeds), "rows": rows,
            "mbpp_plus_gap": plus_gap(spec, out, scored), "reward_curves": curves,
            "training_shift": [shift for arm, seeds in seeds_of.items()
                               if (shift := training_shift(spec, out, arm, seeds)) is not None]}


def training_shift(spec: AblationSpec, out: Path, arm: str, seeds: list[int]) -> dict[str, Any] | None:
    """How an arm's sampled programs changed while it trained, its first half of steps against its
    second (over seeds): reward, pass rate, verdict mix and tokens per program, with how far each
    update moved the policy from the one that sampled (importance ratio and KL on the sampled
    tokens). None for arms that sample nothing."""
    records = [r for seed in seeds for r in read_metrics(run_dir(out, arm, seed)) if r.get("verdicts")
               and sum(r["verdicts"].values())]
    if not records:
        return None
    halves = {}
    for half, chosen in (("first", [r for r in records if r["step"] <= spec.steps // 2]),
                         ("second", [r for r in records if r["step"] > spec.steps // 2])):
        mix: Counter = Counter()
        for r in chosen:
            mix.update(r["verdicts"])
        programs = sum(mix.values()) or 1
        halves[half] = {"reward": float(np.mean([r["reward_mean"] for r in chosen])) if chosen else None,
                        "shares": {k: mix[k] / programs for k in ("pass", "fail", "runtime", "compile")},
                        "tokens_per_program": sum(r.get("gen_tokens") or 0 for r in chosen) / programs}
    known = {key: [r[key] for r in records if r.get(key) is not None]
             for key in ("importance_ratio_mean", "kl_behaviour_current")}
    groups = np.array([sampled_groups(run_dir(out, arm, seed)) for seed in seeds], dtype=float).mean(axis=0)
    return {"arm": arm, **halves, **{key: float(np.mean(v)) if v else None for key, v in known.items()},
            "per_run": dict(zip(("groups", "groups_with_pass", "passing_programs"), groups.tolist(), strict=True))}


def sampled_groups(directory: Path) -> tuple[int, int, int]:
    """How much learning signal a run's rollouts held: its groups (one problem's sampled programs in
    one step), the groups with at least one passing program, and the passing programs, from
    ``samples.jsonl`` (greedy baselines left out). A group with no pass can still rank its programs
    (a wrong answer above a crash), but only the passing groups show the model a solution."""
    passed: defaultdict[tuple[int, str], list[bool]] = defaultdict(list)
    for record in read_samples(directory):
        if not record["greedy"]:
            passed[record["step"], record["problem_id"]].append(record["status"] == "pass")
    return len(passed), sum(map(any, passed.values())), sum(map(sum, passed.values()))


def plus_gap(spec: AblationSpec, out: Path, seeds_of: dict[str, list[int]]) -> list[dict[str, Any]] | None:
    """The reward-hacking signal: pass@1 on MBPP's own asserts (those the prompt shows and the train
    reward checks) minus MBPP+ on the same tasks, with its paired interval, beside the train
    programs' pass rate; None unless the spec evaluates both ``mbpp`` and ``mbpp-plus``."""
    base = next((t for t in spec.eval if t.dataset == "mbpp"), None)
    plus = next((t for t in spec.eval if t.dataset == "mbpp-plus"), None)
    if base is None or plus is None:
        return None
    rows = []
    for arm, seeds in seeds_of.items():
        by_seed = [[{p.rsplit("/", 1)[1]: v for p, v in per_problem_pass(
            run_dir(out, arm, seed) / EVAL_DIR / target.name / SAMPLES).items()} for target in (base, plus)]
            for seed in seeds]
        tasks = sorted(set.intersection(*(set(scores) for pair in by_seed for scores in pair)))
        if not tasks:
            return None
        mbpp, mbpp_plus = (np.array([[pair[i][t] for t in tasks] for pair in by_seed]) for i in (0, 1))
        train = [r["sample_pass_rate"] for seed in seeds for r in read_metrics(run_dir(out, arm, seed))
                 if r.get("sample_pass_rate") is not None]
        rows.append({"arm": arm, "problems": len(tasks), "mbpp": float(mbpp.mean()),
                     "mbpp_plus": float(mbpp_plus.mean()), "gap": float((mbpp - mbpp_plus).mean()),
                     "ci95": list(bootstrap_mean(mbpp - mbpp_plus)),
                     "train_sample_pass": sum(train) / len(train) if train else None})
    return rows


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


def _points(diff: float, ci95: list[float]) -> str:
    """A difference in percentage points with its interval: ``+1.0 (-0.3, +2.3)``."""
    return f"{100 * diff:+.1f} ({100 * ci95[0]:+.1f}, {100 * ci95[1]:+.1f})"


def markdown(summary: dict[str, Any]) -> str:
    ref = summary["reference"]
    done, total = summary["runs_finished"], summary["runs_total"]
    partial = (f"**Partial: {done} of {total} runs finished**; an arm shows the seeds it and `{ref}` have both "
               "finished, and arms with none are not shown. " if done < total else "")
    warm = (f" `{WARM_START}` is the model every arm starts from (step 0): one model, paired with each of `{ref}`'s "
            "seeds; its compute is its own training." if any(r["arm"] == WARM_START for r in summary["rows"]) else "")
    lines = [f"{partial}Greedy pass@1, mean over seeds (of {summary['seeds']}) with a 95 % bootstrap interval over "
             f"problems and seeds; the difference against `{ref}` is paired by problem and seed (95 % bootstrap "
             "interval, exact two-sided sign test). Verdicts: pass / wrong / runtime / compile / timeout, and the "
             f"programs cut at the token limit, summed over seeds. Compute: per run, mean over seeds.{warm}", "",
             *headline(summary), "",
             "| arm | eval | pass@1 (95 % CI) | per seed | vs reference (95 % CI) | p | better / worse | verdicts | "
             "cut at limit | programs sampled | tokens generated | tokens trained | steps | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        low, high = row["ci95"]
        vs, spent, mix = row["vs_reference"], row["compute_per_run"], row["verdicts"]
        is_ref = row["arm"] == ref
        versus = "–" if is_ref else _points(vs["diff"], vs["ci95"])
        p_value = "–" if is_ref else f"{vs['p']:.3g}"
        counts = "–" if is_ref else f"{vs['better']} / {vs['worse']}"
        timeout = sum(v for k, v in mix.items() if "timeout" in k)
        shown = "/".join(str(mix.get(k, 0)) for k in ("pass", "fail", "error/runtime", "error/compile")) + f"/{timeout}"
        cut = f"{row['cut_at_limit']} ({_pct(row['cut_at_limit'] / (row['problems'] * len(row['runs'])))} %)"
        lines.append(f"| {row['arm']} | {row['dataset']} ({row['problems']}) | {_pct(row['pass@1'])} ({_pct(low)}, "
                     f"{_pct(high)}) | {', '.join(_pct(v) for v in row['runs'].values())} | {versus} | "
                     f"{p_value} | {counts} | {shown} | {cut} | "
                     f"{spent['samples']:.0f} | {spent['gen_tokens']:.0f} | {spent['train_tokens']:.0f} | "
                     f"{spent['steps']:.0f} | {spent['wall_s'] / 60:.1f} |")
    if summary.get("mbpp_plus_gap"):
        lines += ["", "Reward hacking: MBPP's own asserts (the train reward's kind) against MBPP+'s stronger tests on "
                  "the same tasks; a gap that grows with the train pass rate is programs fitted to the asserts.", "",
                  "| arm | tasks | MBPP pass@1 | MBPP+ pass@1 | gap (95 % CI) | train sampled pass |",
                  "|---|---|---|---|---|---|"]
        for row in summary["mbpp_plus_gap"]:
            train = "–" if row["train_sample_pass"] is None else _pct(row["train_sample_pass"])
            lines.append(f"| {row['arm']} | {row['problems']} | {_pct(row['mbpp'])} | {_pct(row['mbpp_plus'])} | "
                         f"{_points(row['gap'], row['ci95'])} | "
                         f"{train} |")
    if summary.get("training_shift"):
        lines += ["", "Training shift: the arm's sampled programs in its first half of steps → its second (over "
                  "seeds); importance ratio π_θ/π_behaviour and KL(behaviour ‖ current) on the sampled tokens, mean "
                  "over steps; per run, the groups (one problem's programs in one step) with a passing program, the "
                  "only ones that show the model a solution.",
                  "", "| arm | train reward | sampled pass % | wrong % | runtime % | compile % | tokens per program | "
                  "importance ratio | KL | groups with a pass, per run |", "|---|---|---|---|---|---|---|---|---|---|"]
        for row in summary["training_shift"]:
            first, second = row["first"], row["second"]
            moved = [f"{_num(first['reward'], '+.2f')} → {_num(second['reward'], '+.2f')}"]
            moved += [f"{_pct(first['shares'][k])} → {_pct(second['shares'][k])}"
                      for k in ("pass", "fail", "runtime", "compile")]
            moved.append(f"{first['tokens_per_program']:.0f} → {second['tokens_per_program']:.0f}")
            run = row["per_run"]
            lines.append(f"| {row['arm']} | {' | '.join(moved)} | {_num(row['importance_ratio_mean'], '.3f')} | "
                         f"{_num(row['kl_behaviour_current'], '.4f')} | {run['groups_with_pass']:.1f} of "
                         f"{run['groups']:.0f} ({run['passing_programs']:.1f} passing programs) |")
    return "\n".join(lines) + "\n"


def headline(summary: dict[str, Any]) -> list[str]:
    """The table at a glance: one line per arm, its pass@1 and paired difference on every target."""
    datasets = list(dict.fromkeys(r["dataset"] for r in summary["rows"]))
    by_arm: dict[str, dict[str, dict[str, Any]]] = {}
    for row in summary["rows"]:
        by_arm.setdefault(row["arm"], {})[row["dataset"]] = row
    head = "".join(f" {d} ({by_arm[summary['reference']][d]['problems']}) | vs {summary['reference']} (95 % CI) |"
                   for d in datasets)
    lines = [f"| arm | seeds |{head}", "|---|---|" + "---|---|" * len(datasets)]
    for arm, rows in by_arm.items():
        cells = []
        for d in datasets:
            vs = rows[d]["vs_reference"]
            cells += [_pct(rows[d]["pass@1"]), "–" if arm == summary["reference"] else _points(vs["diff"], vs["ci95"])]
        lines.append(f"| {arm} | {', '.join(rows[datasets[0]]['runs'])} | {' | '.join(cells)} |")
    return lines


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(r["arm"] for r in summary["rows"]))
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
