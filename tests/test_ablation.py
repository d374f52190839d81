from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rltf.ablation import (
    RESULT,
    AblationSpec,
    EvalTarget,
    bootstrap_mean,
    cpu_slots,
    load_spec,
    run_ablation,
    runner,
    sign_test,
)
from rltf.ablation.report import sampled_groups
from rltf.ablation.runner import share_pass_rates
from rltf.ablation.spec import WARM_START_TOLERANCE, run_finished
from rltf.config import ConfigError, load_config
from rltf.train import CONFIG, SAMPLES, read_metrics
from rltf.train.checkpoint import latest_checkpoint


def test_bootstrap_interval_matches_the_binomial_standard_error() -> None:
    rng = np.random.default_rng(1)
    matrix = (rng.random((1, 400)) < 0.25).astype(float)  # one seed, 400 problems, ~25 % pass
    low, high = bootstrap_mean(matrix, draws=4000)
    mean = matrix.mean()
    half = 1.96 * math.sqrt(mean * (1 - mean) / 400)
    assert low < mean < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_mean(np.full((3, 50), 0.5), draws=500) == (0.5, 0.5)  # no spread, no interval


def test_bootstrap_resamples_problems_with_their_seeds() -> None:
    # every problem passes on one seed of two: each problem's mean is 0.5, so no draw of problems moves it
    assert bootstrap_mean(np.array([[0.0] * 20, [1.0] * 20]), draws=2000) == (0.5, 0.5)
    # the resampling seed is fixed: the same interval every time, another seed another interval
    values = np.random.default_rng(3).random(60)
    assert bootstrap_mean(values) == bootstrap_mean(values)
    assert bootstrap_mean(values) != bootstrap_mean(values, seed=1)


def test_sign_test_by_hand() -> None:
    # 8 better, 2 worse, 5 ties: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10
    diffs = np.array([1] * 8 + [-1] * 2 + [0] * 5)
    assert sign_test(diffs) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert sign_test(np.zeros(7)) == 1.0
    assert sign_test(np.array([1, -1])) == 1.0
    assert sign_test(np.array([0.5] * 6)) == pytest.approx(2 / 64)  # fractions count by their sign


def test_sampled_groups_count_the_passing_groups(tmp_path: Path) -> None:
    def sample(step: int, problem: str, status: str, greedy: bool = False) -> str:
        return json.dumps({"step": step, "problem_id": problem, "greedy": greedy, "status": status})

    lines = [sample(1, "a", "pass"), sample(1, "a", "pass"), sample(1, "a", "fail"), sample(1, "b", "error"),
             sample(1, "b", "pass", greedy=True),  # a greedy baseline is not a sample
             sample(2, "a", "fail"), sample(2, "c", "pass")]
    (tmp_path / SAMPLES).write_text("\n".join(lines) + "\n")
    assert sampled_groups(tmp_path) == (4, 2, 3)  # (1,a) (1,b) (2,a) (2,c); (1,a) and (2,c) pass


def _spec(tmp_path: Path, arms: dict[str, list[str]], **extra: object) -> Path:
    spec = {"base": "tiny-smoke", "overrides": ["data.limit=4"], "arms": arms, "seeds": [0], "steps": 2,
            "reference": next(iter(arms)),
            "eval": [{"dataset": "mbpp", "split": "validation", "limit": 45},  # mbpp/511..555
                     {"dataset": "mbpp-plus", "split": "validation", "limit": 2,  # mbpp-plus/554, 555, 10 samples each
                      "n": 10, "temperature": 0.1, "top_p": 0.95}],
            "threads": 1, **extra}
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def test_spec_errors_are_caught_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="reference"):
        load_spec(_spec(tmp_path, {"a": []}, reference="b"))
    with pytest.raises(ConfigError, match="unknown keys"):
        load_spec(_spec(tmp_path, {"a": []}, arm=["x"]))
    with pytest.raises(ConfigError, match="no_such_key"):
        run_ablation(_spec(tmp_path, {"a": ["optim.no_such_key=1"]}), tmp_path / "out")
    assert not (tmp_path / "out" / "a").exists()


def test_a_fresh_machine_reuses_the_pre_pass_of_a_run_sampled_the_same_way(tmp_path: Path) -> None:
    learnable = "rollout.selection=learnable"
    arms = {"full": [learnable], "coarse": [learnable, "feedback.adaptive=false"],
            "hot": [learnable, "rollout.temperature=1.0"],
            "sl": [learnable, "rollout.enabled=false", "optim.rl_weight=0"], "plain": []}
    spec, out = load_spec(_spec(tmp_path, arms, seeds=[0, 1])), tmp_path / "out"
    configs = {run: spec.config(*run, out) for run in spec.runs()}
    given = out / "full" / "seed-0" / "pass_rates.json"
    given.parent.mkdir(parents=True)
    given.write_text(json.dumps({"rates": {"mbpp/601": 0.25}}))
    for run in configs:
        share_pass_rates(out, run, configs, {("full", 0)})
    # the other seed and the arm with other rewards sample the pre-pass as "full" did; a hotter
    # pre-pass, or none (uniform draws, or nothing sampled), takes nothing
    assert sorted(p.parent.parent.name + "/" + p.parent.name for p in out.rglob("pass_rates.json")) == [
        "coarse/seed-0", "coarse/seed-1", "full/seed-0", "full/seed-1"]
    assert (out / "coarse" / "seed-1" / "pass_rates.json").read_text() == given.read_text()
    (out / "full" / "seed-1" / "pass_rates.json").unlink()
    share_pass_rates(out, ("full", 1), configs, set())  # only a finished run's
    assert not (out / "full" / "seed-1" / "pass_rates.json").exists()


def test_runs_go_seed_major_and_arms_on_a_budget_run_only_their_seeds(tmp_path: Path) -> None:
    arms = {"ref": [], "main": [], "side": []}
    spec = load_spec(_spec(tmp_path, arms, seeds=[0, 1, 2], arm_seeds={"side": [0]}))
    assert spec.runs() == [("ref", 0), ("main", 0), ("side", 0), ("ref", 1), ("main", 1), ("ref", 2), ("main", 2)]
    for wrong in ({"ref": [0]}, {"side": [3]}, {"side": []}, {"other": [0]}):  # the reference runs every seed
        with pytest.raises(ConfigError, match="arm_seeds"):
            load_spec(_spec(tmp_path, arms, seeds=[0, 1, 2], arm_seeds=wrong))


def test_cpu_slots_are_disjoint_and_sized_by_threads() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    spec = AblationSpec("tiny-smoke", {"a": []}, [0], 1, "a", [EvalTarget("mbpp")], threads=1)
    slots = cpu_slots(spec)
    assert len(slots) == len(cpus) and sorted(c for s in slots for c in s) == cpus
    assert cpu_slots(AblationSpec("tiny-smoke", {"a": []}, [0], 1, "a", [EvalTarget("mbpp")], parallel=1)) == [
        (cpus[0],)]
    with pytest.raises(ConfigError, match="cores"):
        cpu_slots(AblationSpec("tiny-smoke", {"a": []}, [0], 1, "a", [EvalTarget("mbpp")], threads=len(cpus) + 1))


def test_a_killed_ablation_takes_its_runs_with_it() -> None:
    """SIGKILL of the ablation leaves no run training on: a resumed ablation would train beside it."""
    cpu = min(os.sched_getaffinity(0))
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\nfrom rltf.ablation.runner import pin_to\n"
        f"child = subprocess.Popen(['sleep', '300'], preexec_fn=lambda: pin_to(({cpu},)))\n"
        "print(child.pid, flush=True)\ntime.sleep(300)\n")], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert os.sched_getaffinity(child) == {cpu}
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running (a killed process that nobody has reaped yet is a zombie: not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_two_arms_from_a_warm_start_run_pinned_evaluate_and_resume(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"

    def in_this_process(*_):
        raise AssertionError("the warm start trained in the ablation's own process")

    monkeypatch.setattr(runner, "_train", in_this_process)  # a child process imports the real one
    warm = {"base": "tiny-smoke", "overrides": ["steps=1", "rollout.enabled=false", "optim.rl_weight=0",
                                                 "data.limit=4", "log.tensorboard=false"]}
    spec = _spec(tmp_path, {"coarse": ["feedback.adaptive=false", "feedback.fine_grained=false"], "full": []},
                 warm_start=warm, overrides=["data.limit=4", "model.random_init=null", "log.tensorboard=false"],
                 primary=[["full", "coarse"]])
    summary = run_ablation(spec, out, echo=lambda _: None)
    warm_model = out / "warm-start" / "checkpoints" / "step-000001" / "model"
    assert (warm_model / "model.safetensors").is_file()
    for arm in ("coarse", "full"):  # both arms start from the warm start's weights (random_init is off)
        assert load_config(str(out / arm / "seed-0" / CONFIG)).model.name == str(warm_model)
    rows = summary["rows"]
    assert [(r["arm"], r["dataset"]) for r in rows] == [
        (arm, dataset) for dataset in ("mbpp-validation-first45", "mbpp-plus-validation-first2-t0.1-n10")
        for arm in ("warm-start", "coarse", "full")]
    # the warm start itself, scored once with the reference's settings: step 0, paired with the reference's seed
    warm_rows, rows = [r for r in rows if r["arm"] == "warm-start"], [r for r in rows if r["arm"] != "warm-start"]
    warm_result = json.loads((out / "warm-start" / RESULT).read_text())
    assert warm_result["steps"] == 1 and set(warm_result["evals"]) == {r["dataset"] for r in warm_rows}
    for warm_row, coarse_row in zip(warm_rows, rows[::2], strict=True):
        assert list(warm_row["runs"]) == ["0"] and warm_row["compute_per_run"]["samples"] == 0
        assert warm_row["compute_per_run"]["steps"] == 1
        assert warm_row["vs_reference"]["diff"] == pytest.approx(warm_row["pass@1"] - coarse_row["pass@1"])
    gap = summary["mbpp_plus_gap"]  # on the tasks both evaluated
    assert [(g["arm"], g["problems"]) for g in gap] == [("warm-start", 2), ("coarse", 2), ("full", 2)]
    assert gap[0]["train_sample_pass"] is None  # the warm start samples nothing
    assert all(g["gap"] == g["mbpp"] - g["mbpp_plus"] and 0 <= g["train_sample_pass"] <= 1 for g in gap[1:])
    shift = summary["training_shift"]  # both arms sample: 1 step per half, 4 programs each
    assert [s["arm"] for s in shift] == ["coarse", "full"]
    for arm_shift in shift:
        for half in ("first", "second"):
            assert sum(arm_shift[half]["shares"].values()) <= 1 + 1e-9 and arm_shift[half]["tokens_per_program"] > 0
            assert arm_shift[half]["entropy"] > 0
        run = arm_shift["per_run"]  # 2 steps x 2 problems, 2 programs each
        assert run["groups"] == 4 and 0 <= run["groups_with_pass"] <= run["passing_programs"] <= 8
    for row in rows:
        size, n = (45, 1) if row["dataset"].startswith("mbpp-validation") else (2, 10)
        assert row["problems"] == size and sum(row["verdicts"].values()) == size * n
        assert 0 <= row["cut_at_limit"] <= size * n
        assert 0 <= row["pass@1"] <= 1 and row["ci95"][0] <= row["pass@1"] <= row["ci95"][1]
        assert row["compute_per_run"]["steps"] == 2 and row["compute_per_run"]["samples"] == 8  # 2 steps x 2 x 2
        if n == 10:  # pass@10 beside pass@1 (from the same samples: at least pass@1), paired the same way
            at10 = row["pass@10"]
            assert row["pass@1"] <= at10["mean"] <= 1 and at10["ci95"][0] <= at10["mean"] <= at10["ci95"][1]
            assert at10["vs_reference"]["problems"] == 2
        else:
            assert "pass@10" not in row
    assert rows[0]["vs_reference"]["diff"] == 0 and rows[0]["vs_reference"]["p_sign"] == 1.0
    # the primary comparison reaches the report on every target, clustered by problem, with its power
    primary = summary["primary"]
    assert [(c["a"], c["b"], c["dataset"]) for c in primary] == [
        ("full", "coarse", row["dataset"]) for row in rows if row["arm"] == "full"]
    for comparison, full_row in zip(primary, [r for r in rows if r["arm"] == "full"], strict=True):
        assert comparison["diff"] == pytest.approx(full_row["vs_reference"]["diff"])
        assert comparison["problems"] == full_row["problems"] and comparison["detectable"] >= 0
    assert all(r["vs_reference"]["p_holm"] is None for r in rows)  # the only comparison is primary
    results = [json.loads((out / arm / "seed-0" / RESULT).read_text()) for arm in ("coarse", "full")]
    for result in results:  # each child on one core of its own, with one torch thread
        assert len(result["cpus"]) == 1 and result["torch_threads"] == 1
    if len(os.sched_getaffinity(0)) >= 2:
        assert results[0]["cpus"] != results[1]["cpus"]
    for name in ("ablation.json", "ablation.md", "ablation.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "ablation.md").read_text()
    assert "| full | mbpp-validation-first45 (45) |" in table and "| full | 2 |" in table  # and the MBPP+ gap
    assert "| warm-start | mbpp-validation-first45 (45) |" in table
    headline = [line for line in table.splitlines() if line.startswith("| arm | seeds |")]  # one line per arm
    assert headline == ["| arm | seeds | mbpp-validation-first45 (45) | vs coarse (95 % CI) | "
                        "mbpp-plus-validation-first2-t0.1-n10 (2) | vs coarse (95 % CI) | "
                        "programs sampled | tokens trained | minutes |"]
    assert "| full − coarse | mbpp-validation-first45 |" in table  # the primary comparisons' table
    assert "| full | mbpp-plus-validation-first2-t0.1-n10 (2) | 10 | " in table.split("pass@k (unbiased")[1]
    arm_lines = ("| warm-start | 0 |", "| coarse | 0 |", "| full | 0 |")
    assert sum(line.startswith(arm_lines) for line in table.splitlines()) == 3
    full_line = next(line for line in table.splitlines() if line.startswith("| full | 0 |"))
    assert full_line.split(" | ")[-3] == "8"  # the headline's compute: programs sampled per run
    assert "Training shift" in table and table.count(" → ") >= 12  # 6 moved quantities per arm
    assert summary["added_steps"] is None and "Added steps" not in table

    # an ablation that continues this one (its runs trained on to 3 steps) pairs each run with the shorter one
    (tmp_path / "long").mkdir()
    long_spec = _spec(tmp_path / "long", {"coarse": ["feedback.adaptive=false", "feedback.fine_grained=false"],
                                          "full": []}, warm_start=warm, steps=3, continues="../out",
                      overrides=["data.limit=4", "model.random_init=null", "log.tensorboard=false"])
    long_out = tmp_path / "long" / "out"
    shutil.copytree(out, long_out, ignore=shutil.ignore_patterns("checkpoints"))
    for arm in ("coarse", "full"):
        run = long_out / arm / "seed-0"
        (run / RESULT).write_text(json.dumps({**json.loads((run / RESULT).read_text()), "steps": 3}))
        (run / CONFIG).write_text((run / CONFIG).read_text().replace("steps: 2\n", "steps: 3\n"))
    evaluated = long_out / "full" / "seed-0" / "ablate-eval" / "mbpp-validation-first45" / "samples.jsonl"
    records = [json.loads(line) for line in evaluated.read_text().splitlines()]
    flipped = next(r for r in records if r["verdict"]["status"] != "pass")
    flipped["verdict"]["status"] = "pass"  # the longer full run solves one more problem
    evaluated.write_text("".join(json.dumps(r) + "\n" for r in records))
    added = run_ablation(long_spec, long_out, report_only=True)["added_steps"]
    assert [(r["arm"], r["dataset"], r["seeds"], r["steps"]) for r in added] == [
        (arm, dataset, [0], [2, 3]) for arm in ("coarse", "full")
        for dataset in ("mbpp-validation-first45", "mbpp-plus-validation-first2-t0.1-n10")]
    assert [(r["diff"], r["better"], r["worse"]) for r in added] == [(0, 0, 0), (0, 0, 0), (1 / 45, 1, 0), (0, 0, 0)]
    assert added[2]["pass@1"][1] - added[2]["pass@1"][0] == pytest.approx(1 / 45)
    assert "| full | mbpp-validation-first45 (45) | 0 | 2 → 3 |" in (long_out / "ablation.md").read_text()
    coarse_config = long_out / "coarse" / "seed-0" / CONFIG
    coarse_config.write_text(coarse_config.read_text().replace("lr: ", "lr: 1", 1))
    with pytest.raises(ConfigError, match=r"is not .*coarse/seed-0 with fewer steps: optim.lr differ"):
        run_ablation(long_spec, long_out, report_only=True)
    coarse_config.write_text(coarse_config.read_text().replace("lr: 1", "lr: ", 1))
    warm_metrics = [{**r, "loss": r["loss"] * 1.01} for r in read_metrics(long_out / "warm-start")]
    (long_out / "warm-start" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in warm_metrics))
    for path in long_out.rglob(RESULT):  # a warm start 1 % off, that the runs here recorded: another model
        result = json.loads(path.read_text())
        path.write_text(json.dumps({**result, "warm_start_loss": [x * 1.01 for x in result["warm_start_loss"]]}))
    with pytest.raises(ConfigError, match="trained from another warm start than"):
        run_ablation(long_spec, long_out, report_only=True)

    # finished only from the warm start it recorded: a retraining within rounding is the same model
    loaded, path = load_spec(spec), out / "coarse" / "seed-0" / RESULT
    result = json.loads(path.read_text())
    assert result["warm_start_loss"] == [r["loss"] for r in read_metrics(out / "warm-start")]
    for factor, finished in ((1 + WARM_START_TOLERANCE / 10, True), (1 + WARM_START_TOLERANCE * 10, False)):
        path.write_text(json.dumps({**result, "warm_start_loss": [x * factor for x in result["warm_start_loss"]]}))
        assert run_finished(loaded, out, "coarse", 0) is finished
    path.write_text(json.dumps(result))

    # half finished: "full" was killed while evaluating; "coarse" is done and must not run again
    (out / "full" / "seed-0" / RESULT).unlink()
    done = (out / "coarse" / "seed-0" / "metrics.jsonl").stat().st_mtime_ns
    messages: list[str] = []
    again = run_ablation(spec, out, echo=messages.append)
    assert messages[0].startswith("1 runs finished, 1 to go")
    assert (out / "coarse" / "seed-0" / "metrics.jsonl").stat().st_mtime_ns == done
    assert [r["step"] for r in read_metrics(out / "full" / "seed-0")] == [1, 2]  # resumed, not retrained
    for before, after in zip(summary["rows"], again["rows"], strict=True):  # the same samples, scored again
        assert {k: v for k, v in after.items() if k != "compute_per_run"} == {
            k: v for k, v in before.items() if k != "compute_per_run"}
        assert after["compute_per_run"]["wall_s"] >= before["compute_per_run"]["wall_s"]

    # retrained since its evaluation began (a fresh clone holds the evaluations but no checkpoint): evaluated anew
    evaluated = out / "full" / "seed-0" / "ablate-eval" / "mbpp-validation-first45" / "samples.jsonl"
    before_eval = evaluated.stat().st_mtime_ns
    for weights in (latest_checkpoint(out / "full" / "seed-0") / "model").iterdir():
        os.utime(weights, ns=(before_eval + 10**9, before_eval + 10**9))
    (out / "full" / "seed-0" / RESULT).unlink()
    run_ablation(spec, out, echo=lambda _: None)
    assert evaluated.stat().st_mtime_ns > before_eval and len(evaluated.read_text().splitlines()) == 45

    # a fresh clone on another CPU, with "full" unfinished, retrains the warm start into another model
    # than the one "coarse" finished from (as if both had been trained elsewhere, 1 % off at every
    # step): both runs go again from it
    shutil.rmtree(out / "warm-start" / "checkpoints")
    metrics = out / "warm-start" / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({**r, "loss": r["loss"] * 1.01}) + "\n"
                               for r in read_metrics(out / "warm-start")))
    for path in (out / "coarse" / "seed-0" / RESULT, out / "warm-start" / RESULT):
        result = json.loads(path.read_text())
        path.write_text(json.dumps({**result, "warm_start_loss": [x * 1.01 for x in result["warm_start_loss"]]}))
    (out / "full" / "seed-0" / RESULT).unlink()
    messages = []
    run_ablation(spec, out, echo=messages.append)
    assert any("another model than the one the finished runs started from" in m for m in messages)
    assert sorted(m for m in messages if m.startswith("finished")) == [
        "finished coarse seed 0", "finished full seed 0", "finished warm-start seed 0"]  # the warm start's eval too
    for arm in ("coarse", "full"):  # trained anew from the new warm start, not resumed from the old one's checkpoints
        trained = latest_checkpoint(out / arm / "seed-0") / "model" / "model.safetensors"
        assert trained.stat().st_mtime > (warm_model / "model.safetensors").stat().st_mtime

    (out / "full" / "seed-0" / RESULT).unlink()  # a partial table: the reference and what has finished
    partial = run_ablation(spec, out, report_only=True)
    assert (partial["runs_finished"], partial["runs_total"]) == (1, 2)
    assert {r["arm"] for r in partial["rows"]} == {"warm-start", "coarse"}
    assert all(set(by_arm) == {"coarse"} for by_arm in partial["curves"].values())
    assert len(partial["curves"]["reward_mean"]["coarse"]) == 2 and None not in partial["curves"]["entropy"]["coarse"]
    assert not (out / "full" / "seed-0" / RESULT).exists()  # nothing ran
    assert "**Partial: 1 of 2 runs finished**" in (out / "ablation.md").read_text()
    (out / "coarse" / "seed-0" / RESULT).unlink()
    with pytest.raises(ValueError, match="reference arm 'coarse' has no finished run"):
        run_ablation(spec, out, report_only=True)

    changed = _spec(tmp_path, {"coarse": ["feedback.adaptive=false", "feedback.fine_grained=false"],
                               "full": ["optim.lr=0.5"]}, warm_start=warm,
                    overrides=["data.limit=4", "model.random_init=null", "log.tensorboard=false"])
    with pytest.raises(ConfigError, match=r"full/seed-0 was started with other settings \(optim.lr\)"):
        run_ablation(changed, out)


def test_the_scaled_ablation_spends_what_its_spec_promises(tmp_path: Path) -> None:
    """experiments/ablation-scaled: >= 2,560 programs sampled per run, each trained on once by the online
    RL arms, one supervised budget for every arm, and the two primary comparisons named before it runs."""
    from rltf.datasets import drop_mbpp_leaks, load_problem_set

    spec = load_spec(Path(__file__).parents[1] / "experiments" / "ablation-scaled" / "spec.yaml")
    assert spec.primary == [("full+sl", "sl-continued"), ("full+sl", "rft")] and spec.reference == "full+sl"
    assert len(spec.seeds) >= 3 and spec.eval[0].name == "mbpp-test-t0.1-n5"
    main_arms = ("full+sl", "sl-continued", "rft", "coarse+sl")  # every seed; the secondary arms at least one
    assert spec.runs()[:4] == [(arm, spec.seeds[0]) for arm in main_arms]
    assert {(arm, seed) for arm in main_arms for seed in spec.seeds} <= set(spec.runs())
    assert {arm for arm, _ in spec.runs()} == set(spec.arms)
    problems = len(drop_mbpp_leaks(load_problem_set("mbpp", "train", None, None)))
    sampled, supervised = {}, set()
    for arm in spec.arms:
        config = spec.config(arm, 0, tmp_path)
        rollout, opt = config.rollout, config.optim
        assert config.data.drop_leaks and config.steps == 80
        per_step = rollout.problems_per_step * rollout.samples_per_problem
        sampled[arm] = 0 if not rollout.enabled else (
            config.steps * per_step if rollout.online else problems * rollout.samples_per_problem)
        supervised.add(config.steps * opt.sl_micro_batch * opt.grad_accum if opt.sl_weight else 0)
        if opt.rl_weight and rollout.online:  # every program drawn once: a step draws as many as a step samples
            assert config.buffer.mode == "refresh" and opt.micro_batch * opt.grad_accum == per_step
    assert supervised == {640}
    assert sampled["sl-continued"] == 0 and sampled["full+sl"] == sampled["rft"] == sampled["coarse+sl"] == 2560
    assert sampled["full+sl-paper"] == 2560 and 2300 < sampled["full-offline+sl"] <= 2560
    assert spec.config("rft", 0, tmp_path).optim.sl_source == "both"
    assert spec.config("full+sl", 0, tmp_path).rollout.selection == "learnable"
    paper = spec.config("full+sl-paper", 0, tmp_path)  # the paper's combination, against the recipe's
    assert (paper.optim.rl_weight, paper.optim.loss_aggregation, paper.feedback.baseline) == (1, "token_mean", "greedy")
    assert spec.config("full+sl", 0, tmp_path).optim.rl_weight > 1
