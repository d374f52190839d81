"""Running an ablation: the warm start, then every unfinished (arm, seed) in a child process pinned
to its own cores; ``python -m rltf.ablation SPEC OUT ARM SEED`` is the child."""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rltf.ablation.report import summarize, write_outputs
from rltf.ablation.spec import (
    EVAL_DIR,
    LOG,
    RESULT,
    SPEC_COPY,
    WARM_START,
    AblationSpec,
    finished_runs,
    load_spec,
    run_dir,
    same_warm_start,
    warm_start_evaluated,
    warm_start_losses,
    warm_start_model,
)
from rltf.config import ConfigError, TrainConfig, differing_keys, load_config
from rltf.train import CONFIG
from rltf.train.checkpoint import latest_checkpoint


def cpu_slots(spec: AblationSpec) -> list[tuple[int, ...]]:
    """Disjoint core sets, ``threads`` cores each, one per run that may go at once."""
    cpus = sorted(os.sched_getaffinity(0))
    count = min(spec.parallel or len(cpus) // spec.threads, len(cpus) // spec.threads)
    if count < 1:
        raise ConfigError(f"threads={spec.threads} needs more cores than the {len(cpus)} this process may use")
    return [tuple(cpus[i * spec.threads:(i + 1) * spec.threads]) for i in range(count)]


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def pin_to(cpus: tuple[int, ...]) -> None:
    """In a child before it execs: run on ``cpus`` only, and die with the parent (SIGKILL), so an
    ablation killed by any signal leaves no run behind that a resumed one would train beside."""
    os.sched_setaffinity(0, cpus)
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


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
                                preexec_fn=lambda: pin_to(cpus))


def run_ablation(spec_path: str | Path, out: str | Path, echo: Any = print,
                 report_only: bool = False) -> dict[str, Any]:
    """Run every unfinished (arm, seed) of the spec, ``parallel`` at a time on their own cores, then
    write ``ablation.json``, ``ablation.md`` and ``ablation.png``. Returns the summary.

    ``report_only`` runs nothing and writes the outputs from the runs finished so far."""
    spec, out = load_spec(spec_path), Path(out)
    if report_only:
        summary = summarize(spec, out)
        write_outputs(summary, out)
        return summary
    out.mkdir(parents=True, exist_ok=True)
    (out / SPEC_COPY).write_text(Path(spec_path).read_text(encoding="utf-8"), encoding="utf-8")
    configs = {(arm, seed): spec.config(arm, seed, out) for arm, seed in spec.runs()}
    if spec.warm_start:
        configs[WARM_START, 0] = spec.warm_start.config()
    for (arm, seed), config in configs.items():  # config errors before any run starts, and no resume elsewise
        saved = run_dir(out, arm, seed) / CONFIG
        if saved.is_file() and (differ := differing_keys(load_config(str(saved)), config)):
            raise ConfigError(f"{saved.parent} was started with other settings ({', '.join(differ)})")
    pending = _pending(spec, out)
    if pending and spec.warm_start and not warm_start_model(spec, out).is_dir():
        before = warm_start_losses(spec, out)
        echo(f"training the warm start in {out / WARM_START} ({spec.warm_start.base}) first, on every core")
        _train_apart(configs[WARM_START, 0], out / WARM_START)
        after = warm_start_losses(spec, out)
        if before is not None and after is not None and not same_warm_start(after, before):
            worst = max(abs(x - y) / abs(y) for x, y in zip(after, before))
            echo(f"this warm start is another model than the one the finished runs started from (losses up to "
                 f"{worst:.1e} apart): they run again from it")
        pending = _pending(spec, out)
    free, failed = cpu_slots(spec), []
    running: dict[subprocess.Popen, tuple[str, int, tuple[int, ...]]] = {}
    echo(f"{len(finished_runs(spec, out))} runs finished, {len(pending)} to go, "
         f"{len(free)} at a time on cores {free}")
    try:
        while pending or running:
            while pending and free:
                arm, seed = pending.pop(0)
                share_pass_rates(out, (arm, seed), configs, finished_runs(spec, out))
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
    finally:  # an interrupted ablation leaves no runs behind (they resume next time); see pin_to for kills
        for child in running:
            child.kill()
    if failed:
        raise RuntimeError("ablation runs failed: " + "; ".join(failed))
    summary = summarize(spec, out)
    write_outputs(summary, out)
    return summary


def share_pass_rates(out: Path, run: tuple[str, int], configs: dict[tuple[str, int], TrainConfig],
                     finished: set[tuple[str, int]]) -> None:
    """Give ``run`` the learnable curriculum's pre-pass estimates of a finished run that sampled them
    the same way (same model, problems, engine and sampling). The warm start, retrained on a fresh
    machine (a fresh clone holds the finished runs, not the caches), is the model they were
    estimated on (:func:`rltf.ablation.spec.finished_runs` compared its losses); the pre-pass's
    seed is every run's. So a new machine samples them once less: 298 x 16 programs, 31 minutes on
    2 cores for the MBPP warm start."""
    from rltf.train.curriculum import PASS_RATES

    def pre_pass(config: TrainConfig) -> tuple[Any, ...]:
        r = config.rollout
        return (config.model, config.data, config.engine, r.selection_samples, r.temperature, r.top_p,
                r.max_new_tokens)

    wanted = run_dir(out, *run) / PASS_RATES
    if configs[run].rollout.selection != "learnable" or not configs[run].rollout.enabled or wanted.is_file():
        return
    for other in sorted(finished):
        given = run_dir(out, *other) / PASS_RATES
        if configs[other].rollout.selection == "learnable" and pre_pass(configs[other]) == pre_pass(configs[run]) \
                and given.is_file():
            wanted.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(given, wanted)
            return


def _pending(spec: AblationSpec, out: Path) -> list[tuple[str, int]]:
    """The unfinished runs in :meth:`AblationSpec.runs` order; the warm start's own evaluation
    (``WARM_START``) goes first."""
    done = finished_runs(spec, out)
    first = [] if spec.warm_start is None or warm_start_evaluated(spec, out) else \
        [(WARM_START, spec.warm_start.config().seed)]
    return first + [run for run in spec.runs() if run not in done]


def run_one(spec: AblationSpec, out: Path, arm: str, seed: int) -> None:
    """The child's job: train (or resume) one run, then evaluate its last checkpoint on every target.

    The warm start (``arm == WARM_START``, trained before any run) is only evaluated, with the
    reference arm's engine and evaluation settings, so its row is the step 0 that every arm moves from."""
    from rltf.datasets import load_problem_set
    from rltf.evaluation import RUN, EvalSettings, evaluate
    from rltf.generation import make_engine
    from rltf.judge import Judge
    from rltf.models import Policy

    directory = run_dir(out, arm, seed)
    if arm == WARM_START:
        assert spec.warm_start is not None
        config, steps = spec.config(spec.reference, seed, out), spec.warm_start.config().steps
    else:
        config, steps = spec.config(arm, seed, out), spec.steps
        if spec.warm_start and (directory / CONFIG).is_file() and \
                (directory / CONFIG).stat().st_mtime < _newest(warm_start_model(spec, out)):
            for entry in directory.iterdir():  # begun from an earlier warm start (a fresh clone's files): start anew
                if entry.name != LOG:
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        _train(config, directory)
    checkpoint = latest_checkpoint(directory)
    assert checkpoint is not None and checkpoint.name == f"step-{steps:06d}", checkpoint
    weights_time = _newest(checkpoint / "model")
    for target in spec.eval:  # a retrained run (a fresh clone has the evals, not the checkpoints) evaluates anew
        started = directory / EVAL_DIR / target.name / RUN
        if started.is_file() and started.stat().st_mtime < weights_time:
            shutil.rmtree(started.parent)
    policy = Policy.load(str(checkpoint / "model"), style=config.model.style, dtype=config.model.dtype)
    engine = make_engine(policy, config.engine, version=steps)
    evals = {}
    with Judge(config.judge) as judge:
        for target in spec.eval:
            problems = load_problem_set(target.dataset, target.split, None, target.limit)
            settings = EvalSettings(target.dataset, target.split, f"{arm}/seed-{seed}@step-{steps}",
                                    policy.style, n=target.n, temperature=target.temperature, top_p=target.top_p,
                                    max_new_tokens=config.eval.max_new_tokens, seed=seed,
                                    batch_size=config.eval.batch_size, engine=engine.label)
            summary = evaluate(engine, policy, problems, judge, directory / EVAL_DIR / target.name, settings,
                               ks=[k for k in (1, 10) if k <= target.n], show_progress=False)
            evals[target.name] = summary["pass_at_k"]["1"]
    result = {"arm": arm, "seed": seed, "steps": steps, "cpus": sorted(os.sched_getaffinity(0)),
              "torch_threads": _torch_threads(), "evals": evals, "warm_start_loss": warm_start_losses(spec, out)}
    (directory / (RESULT + ".tmp")).write_text(json.dumps(result, indent=1) + "\n")
    (directory / (RESULT + ".tmp")).replace(directory / RESULT)


def _newest(model: Path) -> float:
    """When a saved model's files were last written."""
    return max(f.stat().st_mtime for f in model.iterdir())


def _train(config: TrainConfig, directory: Path) -> None:
    """Train (or resume) one run to its last step."""
    from transformers.utils import logging as hf_logging

    from rltf.evaluation import train_evaluator
    from rltf.train import Trainer

    hf_logging.disable_progress_bar()
    Trainer(config, directory, resume=True, evaluator=train_evaluator(config), show_progress=False).run()


def _train_apart(config: TrainConfig, directory: Path) -> None:
    """:func:`_train` in a child process on every core, waited for. Training leaves gigabytes with the
    allocator after it returns; in this process they would stay beside every run's child for the whole
    ablation (on a 24 GiB machine an evaluation was OOM-killed so)."""
    child = multiprocessing.get_context("spawn").Process(
        target=_train_pinned, args=(config, directory, tuple(sorted(os.sched_getaffinity(0)))))
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"training {directory} failed (exit {child.exitcode})")


def _train_pinned(config: TrainConfig, directory: Path, cpus: tuple[int, ...]) -> None:
    pin_to(cpus)
    _train(config, directory)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
