"""The ablation's outputs: one row per (arm, eval target) with intervals and paired tests, the
spec's primary comparisons with their power, the compute each run spent, ``ablation.md`` and
``ablation.png``. Every test is clustered by problem (:mod:`rltf.ablation.stats`)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rltf._io import existing
from rltf.ablation.spec import (
    EVAL_DIR,
    SPEC_COPY,
    WARM_START,
    AblationSpec,
    finished_runs,
    load_spec,
    run_dir,
    same_warm_start,
    warm_start_evaluated,
    warm_start_losses,
)
from rltf.ablation.stats import BOOTSTRAP_SEED, bootstrap_mean, holm, paired
from rltf.config import ConfigError, differing_keys, load_config
from rltf.datasets import held_out_twins
from rltf.evaluation import SAMPLES, SUMMARY, cut_at_limit, per_problem_pass
from rltf.train import CONFIG, read_metrics, read_samples
from rltf.train import SAMPLES as RUN_SAMPLES
from rltf.train.report import mean_or_none


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
    """One row per (arm, eval target): pass@1 per seed, their mean with a bootstrap interval over
    problems, and the difference against the reference arm (same seeds), clustered by problem
    (:func:`rltf.ablation.stats.paired`); the spec's primary comparisons on every target, with the
    smallest difference each detects at 80 % power, and the other comparisons' Holm-adjusted
    p-values. Only finished runs count (:func:`finished_seeds`). With a warm start scored, its row
    (``warm-start``, step 0) comes first, one model paired with every reference seed."""
    seeds_of, rows, comparisons = finished_seeds(spec, out), [], []
    scored = dict(seeds_of)
    if spec.warm_start and warm_start_evaluated(spec, out):
        scored = {WARM_START: [spec.warm_start.config().seed], **seeds_of}
    for target in spec.eval:
        scores = {(arm, seed): per_problem_pass(run_dir(out, arm, seed) / EVAL_DIR / target.name / SAMPLES)
                  for arm, seeds in scored.items() for seed in seeds}
        problems = sorted(set.intersection(*(set(s) for s in scores.values())))
        primary = [pair for pair in spec.primary if all(arm in scored for arm in pair)]
        twins = set(held_out_twins(target.dataset))
        clean = [p for p in problems if p not in twins]
        for a, b in primary:
            comparisons.append({
                "a": a, "b": b, "dataset": target.name, **_versus(scores, scored, a, b, problems),
                "without_twins": {"problems": len(clean), **_versus(scores, scored, a, b, clean)} if twins else None})
        secondary: dict[str, float] = {}
        for arm, seeds in scored.items():
            verdicts: Counter = Counter()
            for seed in seeds:
                verdicts.update(json.loads((run_dir(out, arm, seed) / EVAL_DIR / target.name / SUMMARY).read_text())
                                ["category"])
            scores_of = _matrix(scores, arm, seeds, problems)
            vs = _versus(scores, scored, arm, spec.reference, problems)
            if arm != spec.reference and (arm, spec.reference) not in primary and (spec.reference, arm) not in primary:
                secondary[arm] = vs["p_sign"]
            spent = [compute_spent(run_dir(out, arm, seed)) for seed in seeds]
            cut = sum(cut_at_limit(run_dir(out, arm, seed) / EVAL_DIR / target.name / SAMPLES) for seed in seeds)
            rows.append({
                "arm": arm, "dataset": target.name, "problems": len(problems),
                "runs": {str(seed): float(scores_of[i].mean()) for i, seed in enumerate(seeds)},
                "pass@1": float(scores_of.mean()), "ci95": list(bootstrap_mean(scores_of)), "vs_reference": vs,
                "verdicts": dict(verdicts.most_common()), "cut_at_limit": cut,
                "compute_per_run": {k: sum(s[k] for s in spent) / len(spent) for k in spent[0]},
            })
        for row in rows[-len(scored):]:
            row["vs_reference"]["p_holm"] = holm(secondary).get(row["arm"])
        if target.n >= 5:  # pass@10 (pass@5 from 5 samples) beside pass@1, paired the same way (secondary)
            k = 10 if target.n >= 10 else 5
            scores = {(arm, seed): per_problem_pass(run_dir(out, arm, seed) / EVAL_DIR / target.name / SAMPLES, k)
                      for arm, seeds in scored.items() for seed in seeds}
            for row in rows[-len(scored):]:
                at_k = _matrix(scores, row["arm"], scored[row["arm"]], problems)
                row[f"pass@{k}"] = {"mean": float(at_k.mean()), "ci95": list(bootstrap_mean(at_k)),
                                    "vs_reference": _versus(scores, scored, row["arm"], spec.reference, problems)}
    curves = {key: {arm: _curve(out, arm, seeds, key) for arm, seeds in seeds_of.items()} for key in CURVES}
    finished = len(finished_runs(spec, out))
    return {"reference": spec.reference, "seeds": spec.seeds, "steps": spec.steps, "bootstrap_seed": BOOTSTRAP_SEED,
            "runs_finished": finished, "runs_total": len(spec.runs()), "rows": rows,
            "primary": comparisons, "twins_sampled": twins_sampled(spec, out, seeds_of),
            "mbpp_plus_gap": plus_gap(spec, out, scored), "added_steps": added_steps(spec, out, seeds_of),
            "curves": curves,
            "training_shift": [shift for arm, seeds in seeds_of.items()
                               if (shift := training_shift(spec, out, arm, seeds)) is not None]}


def _matrix(scores: dict[tuple[str, int], dict[str, float]], arm: str, seeds: list[int],
            problems: list[str]) -> np.ndarray:
    """Seeds × problems pass fractions of one arm."""
    return np.array([[scores[arm, seed][p] for p in problems] for seed in seeds])


def _versus(scores: dict[tuple[str, int], dict[str, float]], scored: dict[str, list[int]], a: str, b: str,
            problems: list[str]) -> dict[str, Any]:
    """A − B on their shared seeds (a warm start, one model, against every seed of the other)."""
    shared = [s for s in scored[a] if s in scored[b]]
    seeds_a = scored[a] if WARM_START in (a, b) else shared
    seeds_b = scored[b] if WARM_START in (a, b) else shared
    return paired(_matrix(scores, a, seeds_a, problems), _matrix(scores, b, seeds_b, problems)).to_dict()


def twins_sampled(spec: AblationSpec, out: Path,
                  seeds_of: dict[str, list[int]]) -> dict[str, dict[str, list[str] | None]]:
    """Per arm and seed, the MBPP held-out problems whose train twin (:func:`rltf.datasets.held_out_twins`)
    the run's rollouts sampled: the runs whose RL term could have learnt a held-out answer (an empty
    list for a run that sampled nothing, None where the run kept no ``samples.jsonl``)."""
    twins = held_out_twins("mbpp")
    found: dict[str, dict[str, list[str] | None]] = {}
    for arm, seeds in seeds_of.items():
        for seed in seeds:
            directory = run_dir(out, arm, seed)
            sampling = load_config(str(directory / CONFIG)).rollout.enabled
            kept = existing(directory / RUN_SAMPLES) is not None or not sampling
            sampled = {r["problem_id"] for r in read_samples(directory)} if kept else None
            found.setdefault(arm, {})[str(seed)] = None if sampled is None else sorted(
                test for test, trains in twins.items() if sampled.intersection(trains))
    return found


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
                        "tokens_per_program": sum(r.get("gen_tokens") or 0 for r in chosen) / programs,
                        "entropy": mean_or_none([r["entropy"] for r in chosen if r.get("entropy") is not None])}
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


def added_steps(spec: AblationSpec, out: Path, seeds_of: dict[str, list[int]]) -> list[dict[str, Any]] | None:
    """What the added steps changed: each arm's finished seeds against the same runs of the shorter
    ablation this one ``continues``, on every target both score, paired by problem (None without
    ``continues``). A shorter run counts only with the same warm start (its losses) and the same
    settings but ``steps`` (and the warm start's path). Unless it was resumed into the longer one,
    it is a sibling run, not its earlier steps: sampling drifts apart with float rounding (another
    CPU), so the difference holds run-to-run spread as well as the added steps."""
    if spec.continues is None:
        return None
    shorter = load_spec(spec.continues / SPEC_COPY)
    if not same_warm_start(warm_start_losses(spec, out) or [], warm_start_losses(shorter, spec.continues) or []):
        raise ConfigError(f"{spec.continues} trained from another warm start than {out}")
    earlier = finished_runs(shorter, spec.continues)
    targets = [t for t in spec.eval if t.name in {s.name for s in shorter.eval}]
    rows = []
    for arm, seeds in seeds_of.items():
        if not (both := [seed for seed in seeds if (arm, seed) in earlier]):
            continue
        for seed in both:
            _same_but_steps(run_dir(out, arm, seed), run_dir(spec.continues, arm, seed))
        for target in targets:
            longer, short = ({seed: per_problem_pass(run_dir(directory, arm, seed) / EVAL_DIR / target.name / SAMPLES)
                              for seed in both} for directory in (out, spec.continues))
            problems = sorted(set.intersection(*(set(s) for s in (*longer.values(), *short.values()))))
            a, b = (np.array([[scores[seed][p] for p in problems] for seed in both]) for scores in (longer, short))
            rows.append({"arm": arm, "dataset": target.name, "seeds": both, "steps": [shorter.steps, spec.steps],
                         "pass@1": [float(b.mean()), float(a.mean())], **paired(a, b).to_dict()})
    return rows


def _same_but_steps(longer: Path, shorter: Path) -> None:
    """Nothing but the steps (and the path of the warm start's weights) may differ between the runs
    compared."""
    differ = set(differing_keys(load_config(str(longer / CONFIG)), load_config(str(shorter / CONFIG))))
    if differ := differ - {"steps", "model.name"}:
        raise ConfigError(f"{shorter} is not {longer} with fewer steps: {', '.join(sorted(differ))} differ")


CURVES = {"reward_mean": "train reward", "sample_pass_rate": "sampled programs passing",
          "groups_with_pass": "groups with a pass", "completion_length_mean": "tokens per program",
          "entropy": "policy entropy (nats / token)"}
"""The per-step metrics the report plots per arm (mean over seeds): the diagnosis of an arm that
does not beat another is in its signal (reward, passes, groups that show a solution), its length
and its entropy."""


def _curve(out: Path, arm: str, seeds: list[int], key: str) -> list[float | None]:
    """A metric per step, mean over the seeds (None where no seed logged it: SL-only arms)."""
    per_seed = [[r.get(key) for r in read_metrics(run_dir(out, arm, seed))] for seed in seeds]
    return [mean_or_none([v for v in values if v is not None]) for values in zip(*per_seed, strict=False)]


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
    lines = [f"{partial}pass@1 (a problem's pass fraction over its samples; 0 or 1 when greedy), mean over seeds "
             f"(of {summary['seeds']}) with a 95 % bootstrap interval over problems. Every difference is clustered by "
             "problem: each problem's mean difference over seeds, then a bootstrap over problems (resampling seed "
             f"{summary['bootstrap_seed']}) and an exact two-sided sign test over problems (better / worse count "
             f"problems). Comparisons with `{ref}` that the spec does not name as primary carry Holm-adjusted "
             "p-values. Verdicts: pass / wrong / runtime / compile / timeout, and the programs cut at the token "
             f"limit, summed over seeds. Compute: per run, mean over seeds.{warm}", "",
             *headline(summary), "", *primary_table(summary), "",
             "| arm | eval | pass@1 (95 % CI) | per seed | vs reference (95 % CI) | p | p (Holm) | better / worse | "
             "verdicts | cut at limit | programs sampled | tokens generated | tokens trained | steps | minutes |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        low, high = row["ci95"]
        vs, spent, mix = row["vs_reference"], row["compute_per_run"], row["verdicts"]
        is_ref = row["arm"] == ref
        versus = "–" if is_ref else _points(vs["diff"], vs["ci95"])
        p_value = "–" if is_ref else f"{vs['p_sign']:.3g}"
        adjusted = "–" if vs.get("p_holm") is None else f"{vs['p_holm']:.3g}"
        counts = "–" if is_ref else f"{vs['better']} / {vs['worse']}"
        timeout = sum(v for k, v in mix.items() if "timeout" in k)
        shown = "/".join(str(mix.get(k, 0)) for k in ("pass", "fail", "error/runtime", "error/compile")) + f"/{timeout}"
        cut = f"{row['cut_at_limit']} ({_pct(row['cut_at_limit'] / max(sum(mix.values()), 1))} %)"
        lines.append(f"| {row['arm']} | {row['dataset']} ({row['problems']}) | {_pct(row['pass@1'])} ({_pct(low)}, "
                     f"{_pct(high)}) | {', '.join(_pct(v) for v in row['runs'].values())} | {versus} | "
                     f"{p_value} | {adjusted} | {counts} | {shown} | {cut} | "
                     f"{spent['samples']:.0f} | {spent['gen_tokens']:.0f} | {spent['train_tokens']:.0f} | "
                     f"{spent['steps']:.0f} | {spent['wall_s'] / 60:.1f} |")
    at_k = [(row, key) for row in summary["rows"] for key in ("pass@5", "pass@10") if key in row]
    if at_k:
        lines += ["", "pass@k (unbiased, from the target's samples: k = 10 where it has 10 a problem, else 5; "
                  "secondary), paired by problem as above:", "",
                  "| arm | eval | k | pass@k (95 % CI) | vs reference (95 % CI) | p | better / worse |",
                  "|---|---|---|---|---|---|---|"]
        for row, key in at_k:
            k, vs = row[key], row[key]["vs_reference"]
            is_ref = row["arm"] == ref
            lines.append(f"| {row['arm']} | {row['dataset']} ({row['problems']}) | {key[5:]} | {_pct(k['mean'])} "
                         f"({_pct(k['ci95'][0])}, {_pct(k['ci95'][1])}) | "
                         f"{'–' if is_ref else _points(vs['diff'], vs['ci95'])} | "
                         f"{'–' if is_ref else format(vs['p_sign'], '.3g')} | "
                         f"{'–' if is_ref else str(vs['better']) + ' / ' + str(vs['worse'])} |")
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
    if summary.get("added_steps"):
        lines += ["", *added_steps_table(summary), ""]
    if summary.get("training_shift"):
        lines += ["", "Training shift: the arm's sampled programs in its first half of steps → its second (over "
                  "seeds); importance ratio π_θ/π_behaviour and KL(behaviour ‖ current) on the sampled tokens, mean "
                  "over steps; per run, the groups (one problem's programs in one step) with a passing program, the "
                  "only ones that show the model a solution; policy entropy on the sampled tokens.",
                  "", "| arm | train reward | sampled pass % | wrong % | runtime % | compile % | tokens per program | "
                  "entropy | importance ratio | KL | groups with a pass, per run |", "|---" * 11 + "|"]
        for row in summary["training_shift"]:
            first, second = row["first"], row["second"]
            moved = [f"{_num(first['reward'], '+.2f')} → {_num(second['reward'], '+.2f')}"]
            moved += [f"{_pct(first['shares'][k])} → {_pct(second['shares'][k])}"
                      for k in ("pass", "fail", "runtime", "compile")]
            moved.append(f"{first['tokens_per_program']:.0f} → {second['tokens_per_program']:.0f}")
            moved.append(f"{_num(first['entropy'], '.2f')} → {_num(second['entropy'], '.2f')}")
            run = row["per_run"]
            lines.append(f"| {row['arm']} | {' | '.join(moved)} | {_num(row['importance_ratio_mean'], '.3f')} | "
                         f"{_num(row['kl_behaviour_current'], '.4f')} | {run['groups_with_pass']:.1f} of "
                         f"{run['groups']:.0f} ({run['passing_programs']:.1f} passing programs) |")
    if any(any(seeds.values()) for seeds in summary.get("twins_sampled", {}).values()):
        lines += ["", "Held-out problems whose MBPP-train twin a run's rollouts sampled (`not recorded`: the run kept "
                  "no samples file). A warm start trained on its split's references trained on every twin that split "
                  "holds.", "", "| arm | per seed |", "|---|---|"]
        for arm, seeds in summary["twins_sampled"].items():
            lines.append(f"| {arm} | " + "; ".join(
                f"seed {seed}: {'not recorded' if found is None else ', '.join(found) or '–'}"
                for seed, found in seeds.items()) + " |")
    return "\n".join(lines) + "\n"


def primary_table(summary: dict[str, Any]) -> list[str]:
    """The comparisons the spec was run for: the clustered test, the seed-level view, the smallest
    difference the design detects at 80 % power, and the same test without the test problems
    that have a twin in MBPP train."""
    if not summary.get("primary"):
        return []
    lines = ["Primary comparisons (the spec's `primary`: what the ablation was run to decide; not adjusted). "
             "Power: the smallest true difference this design detects at 80 % power with a two-sided 5 % test, "
             "from the observed spread of the per-problem differences. Per seed: A − B on each seed with a "
             "t-interval over seeds. "
             "The naive p treats every (problem, seed) pair as an independent problem; it is shown only to say how "
             "much that overstates significance. Without twins: the same test with the test problems that have a "
             "twin in MBPP train left out.", "",
             "| A − B | eval | difference (95 % CI) | sign test p | Wilcoxon p | better / worse problems | "
             "detectable at 80 % | per seed (t 95 % CI) | naive p | without twins |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in summary["primary"]:
        seeds = ", ".join(f"{100 * x:+.1f}" for x in c["per_seed"])
        seed_ci = "" if c["seed_ci95"] is None else f" ({100 * c['seed_ci95'][0]:+.1f}, {100 * c['seed_ci95'][1]:+.1f})"
        clean = c.get("without_twins")
        twin_free = "–" if not clean else f"{_points(clean['diff'], clean['ci95'])}, p {clean['p_sign']:.3g} " \
            f"({clean['problems']} problems)"
        lines.append(f"| {c['a']} − {c['b']} | {c['dataset']} | {_points(c['diff'], c['ci95'])} | {c['p_sign']:.3g} | "
                     f"{c['p_wilcoxon']:.3g} | {c['better']} / {c['worse']} | {100 * c['detectable']:.1f} points | "
                     f"{seeds}{seed_ci} | {c['naive_p_sign']:.3g} | {twin_free} |")
    return lines


def added_steps_table(summary: dict[str, Any]) -> list[str]:
    """Each run against the same arm and seed of the ablation this one continues (``continues``)."""
    lines = ["Added steps: each run against the same arm, seed and settings of the shorter ablation it continues, "
             "paired by problem as above. Unless resumed from it, the shorter run is a sibling, not this run's "
             "earlier steps, so the difference holds run-to-run spread as well as the added steps.", "",
             "| arm | eval | seeds | steps | pass@1 | added steps (95 % CI) | sign test p | better / worse |",
             "|---|---|---|---|---|---|---|---|"]
    for row in summary["added_steps"]:
        lines.append(f"| {row['arm']} | {row['dataset']} ({row['problems']}) | {', '.join(map(str, row['seeds']))} | "
                     f"{row['steps'][0]} → {row['steps'][1]} | {_pct(row['pass@1'][0])} → {_pct(row['pass@1'][1])} | "
                     f"{_points(row['diff'], row['ci95'])} | {row['p_sign']:.3g} | {row['better']} / {row['worse']} |")
    return lines


def headline(summary: dict[str, Any]) -> list[str]:
    """The table at a glance: one line per arm, its pass@1 and paired difference on every target, then what
    one run cost (mean over seeds). The README quotes it verbatim, so a reader can re-derive it."""
    datasets = list(dict.fromkeys(r["dataset"] for r in summary["rows"]))
    by_arm: dict[str, dict[str, dict[str, Any]]] = {}
    for row in summary["rows"]:
        by_arm.setdefault(row["arm"], {})[row["dataset"]] = row
    head = "".join(f" {d} ({by_arm[summary['reference']][d]['problems']}) | vs {summary['reference']} (95 % CI) |"
                   for d in datasets)
    lines = [f"| arm | seeds |{head} programs sampled | tokens trained | minutes |",
             "|---|---|" + "---|---|" * len(datasets) + "---|---|---|"]
    for arm, rows in by_arm.items():
        cells = []
        for d in datasets:
            vs = rows[d]["vs_reference"]
            cells += [_pct(rows[d]["pass@1"]), "–" if arm == summary["reference"] else _points(vs["diff"], vs["ci95"])]
        spent = rows[datasets[0]]["compute_per_run"]
        cells += [f"{spent['samples']:,.0f}", f"{spent['train_tokens']:,.0f}", f"{spent['wall_s'] / 60:.0f}"]
        lines.append(f"| {arm} | {', '.join(rows[datasets[0]]['runs'])} | {' | '.join(cells)} |")
    return lines


def _num(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def plot(summary: dict[str, Any], path: Path) -> None:
    """pass@1 per arm and target with its interval, then one panel per training curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(r["arm"] for r in summary["rows"]))
    datasets = list(dict.fromkeys(r["dataset"] for r in summary["rows"]))
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    bars, panels = axes.flat[0], axes.flat[1:]
    width = 0.8 / len(datasets)
    for d, dataset in enumerate(datasets):
        rows = {r["arm"]: r for r in summary["rows"] if r["dataset"] == dataset}
        means = [100 * rows[a]["pass@1"] for a in arms]
        errors = [[m - 100 * rows[a]["ci95"][0] for m, a in zip(means, arms, strict=True)],
                  [100 * rows[a]["ci95"][1] - m for m, a in zip(means, arms, strict=True)]]
        bars.bar([i + d * width for i in range(len(arms))], means, width, yerr=errors, capsize=3, label=dataset)
    bars.set_xticks([i + width * (len(datasets) - 1) / 2 for i in range(len(arms))], arms, rotation=30, ha="right")
    bars.set_ylabel("pass@1 (%)")
    bars.legend(fontsize=7)
    for axis, (key, label) in zip(panels, CURVES.items(), strict=True):
        for arm, curve in summary["curves"][key].items():
            points = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
            if points:
                axis.plot(*zip(*points, strict=True), marker=".", markersize=3, label=arm)
        axis.set_xlabel("optimizer step")
        axis.set_ylabel(f"{label} (mean over seeds)")
    if panels[0].lines:
        panels[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    (out / "ablation.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "ablation.md").write_text(markdown(summary))
    plot(summary, out / "ablation.png")
