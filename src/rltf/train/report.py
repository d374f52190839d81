"""A run's records: metrics while it runs (TensorBoard scalars, progress text, the learner's recorded
micro-batches) and reading it back (metrics, eval summaries, plots)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rltf._io import read_jsonl
from rltf.judge.verdict import VERDICT_KEYS
from rltf.train.checkpoint import EVAL_DIR, METRICS, SAMPLES

LEARNER_BATCHES = "learner_batches.jsonl"


def mean_or_none(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def append_learner_batches(run_dir: Path, step: int, optim: dict[str, Any], rl: Sequence[Sequence[Any]],
                           sl: Sequence[Sequence[Any]]) -> None:
    """Append a step's micro-batches (RL: buffer samples; SL: reference items) to ``learner_batches.jsonl``
    (``log.learner_batches``): what ``benchmarks/learner_throughput.py`` replays."""
    record = {"step": step, "optim": optim,
              "rl": [[{"prompt_ids": list(s.prompt_ids), "target_ids": list(s.completion_ids),
                       "weights": list(s.returns), "behaviour": list(s.logprobs)} for s in samples] for samples in rl],
              "sl": [[{"prompt_ids": list(it.prompt_ids), "target_ids": list(it.target_ids)} for it in items]
                     for items in sl]}
    with (run_dir / LEARNER_BATCHES).open("a", encoding="utf-8") as sink:
        sink.write(json.dumps(record) + "\n")


def log_scalars(writer: Any, record: dict[str, Any]) -> None:
    step = record["step"]
    for key, value in record.items():
        if key == "verdicts":
            total = sum(value.values()) or 1
            for name, count in value.items():
                writer.add_scalar(f"verdicts/{name}", count / total, step)
        elif isinstance(value, (int, float)) and key != "step":
            group = "time" if key.startswith("time_") else "train"
            writer.add_scalar(f"{group}/{key}", value, step)
    writer.flush()


def progress_text(record: dict[str, Any]) -> str:
    def fmt(key: str, spec: str) -> str:
        value = record.get(key)
        return "-" if value is None else format(value, spec)

    return (f"loss {fmt('loss', '.3f')} reward {fmt('reward_mean', '+.2f')} pass {fmt('sample_pass_rate', '.0%')}"
            f" | gen {fmt('time_gen_s', '.0f')}s judge {fmt('time_judge_s', '.1f')}s"
            f" train {fmt('time_train_s', '.0f')}s")


# --------------------------------------------------------------------------- reading a run back


def read_metrics(run_dir: str | Path, name: str = METRICS) -> list[dict[str, Any]]:
    """The run's ``metrics.jsonl`` lines (or another of its JSONL files, or their ``.gz`` copies), a torn
    line left out."""
    return read_jsonl(Path(run_dir) / name)


def read_samples(run_dir: str | Path) -> list[dict[str, Any]]:
    """The judged programs of a run's rollouts (``log.samples``), one record each, in step order."""
    return read_metrics(run_dir, SAMPLES)


def read_evals(run_dir: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """``(step, summary)`` of every finished evaluation, in step order."""
    found = []
    for path in sorted((Path(run_dir) / EVAL_DIR).glob("step-*/summary.json")):
        found.append((int(path.parent.name.split("-")[1]), json.loads(path.read_text())))
    return found


def _series(records: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _smooth(values: Sequence[float]) -> np.ndarray:
    """Trailing mean over 5% of the run (same length; the first points average what exists)."""
    window = max(1, len(values) // 20)
    total = np.concatenate([[0.0], np.cumsum(np.asarray(values, dtype=float))])
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (total[end] - total[start]) / (end - start)


def render_report(run_dir: str | Path) -> list[Path]:
    """PNG plots of a run into ``run_dir``: rewards and pass rates, the verdict mix over time,
    losses and the time split per step, and eval pass@1; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    evals = read_evals(run_dir)
    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        written.append(run_dir / name)

    def curve(ax: Any, key: str, label: str) -> None:
        steps, values = _series(records, key)
        if not values:
            return
        line, = ax.plot(steps, values, alpha=0.35)
        ax.plot(steps, _smooth(values), color=line.get_color(), label=label)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in [("reward_mean", "reward R(W)"), ("return_mean", "token return r_t")]:
        curve(top, key, label)
    top.axhline(0, color="grey", lw=0.5)
    top.set_ylabel("reward")
    top.legend(fontsize=8)
    for key, label in [("sample_pass_rate", "sampled programs"), ("greedy_pass_rate", "greedy baseline")]:
        curve(bottom, key, label)
    bottom.set_ylabel("pass rate (train problems)")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=8)
    save(fig, "plot_rewards.png")

    mixed = [r for r in records if r.get("verdicts") and sum(r["verdicts"].values())]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if mixed:
        keys = [k for k in VERDICT_KEYS if any(r["verdicts"].get(k) for r in mixed)]
        shares = np.array([[r["verdicts"].get(k, 0) / sum(r["verdicts"].values()) for r in mixed] for k in keys])
        ax.stackplot([r["step"] for r in mixed], [_smooth(s) for s in shares], labels=keys, alpha=0.85)
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("share of sampled programs")
    ax.set_title("verdict mix", fontsize=10)
    save(fig, "plot_verdicts.png")

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in [("loss", "total"), ("loss_rl", "RL (policy gradient)"), ("loss_sl", "SL (cross-entropy)")]:
        curve(top, key, label)
    top.set_ylabel("loss")
    top.legend(fontsize=8)
    parts = [("time_gen_s", "generate"), ("time_judge_s", "judge (not overlapped)"), ("time_train_s", "train"),
             ("time_checkpoint_s", "checkpoint")]
    steps = [r["step"] for r in records]
    base = np.zeros(len(records))
    for key, label in parts:
        values = np.array([r.get(key) or 0.0 for r in records])
        bottom.bar(steps, values, bottom=base, label=label, width=0.9)
        base += values
    bottom.set_ylabel("seconds per step")
    bottom.set_xlabel("optimizer step")
    bottom.legend(fontsize=8)
    save(fig, "plot_loss_time.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    if evals:
        steps = [s for s, _ in evals]
        ax.plot(steps, [100 * e["pass_at_k"].get("1", float("nan")) for _, e in evals], marker="o")
        for s, e in evals:
            ax.annotate(f"{100 * e['pass_at_k'].get('1', float('nan')):.1f}", (s, 100 * e["pass_at_k"].get("1", 0)),
                        textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        settings = evals[0][1].get("settings", {})
        ax.set_title(f"greedy pass@1 on {settings.get('dataset', '?')} {settings.get('split') or ''} "
                     f"({evals[0][1].get('problems', '?')} problems)", fontsize=10)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("pass@1 (%)")
    save(fig, "plot_eval.png")
    return written


