"""A run's records: metrics while it runs (the experiment trackers, progress text, the learner's
recorded micro-batches) and reading it back (metrics, eval summaries, plots)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rltf._io import read_jsonl
from rltf.config import TrainConfig, to_dict
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


_REWARD_TERMS = ("coarse", "binary", "adaptive", "fine", "static", "overlong", "baseline", "advantage")

TRACKER_NAMES: dict[str, str] = {
    # TRL's names (GRPOTrainer's logs) where the quantity is the same
    "reward_mean": "reward",
    **{f"reward_{term}": f"rewards/{term}/mean" for term in _REWARD_TERMS},
    "frac_reward_zero_std": "frac_reward_zero_std",
    "completion_length_mean": "completions/mean_length",
    "completion_truncated_frac": "completions/clipped_ratio",
    "entropy": "entropy",
    "kl_start": "kl",
    "loss": "loss",
    "grad_norm": "grad_norm",
    "lr": "learning_rate",
    "logprob_gap": "sampling/sampling_logp_difference/mean",
    "logprob_gap_max": "sampling/sampling_logp_difference/max",
    # rltf's own, grouped the same way
    "return_mean": "returns/mean",
    "sample_pass_rate": "pass_rate/samples",
    "greedy_pass_rate": "pass_rate/greedy",
    "samples_masked_overlong": "completions/masked_overlong",
    "gen_tokens": "completions/tokens",
    "importance_ratio_mean": "sampling/importance_ratio/mean",
    "importance_clip_frac": "sampling/importance_ratio/clipped_frac",
    "kl_behaviour_current": "sampling/kl_behaviour_current",
    "loss_rl": "losses/rl",
    "loss_sl": "losses/sl",
    "loss_kl": "losses/kl",
    "samples_new": "samples/new",
    "samples_dropped_infra": "samples/dropped_infra",
    "samples_skipped_zero_weight": "samples/skipped_zero_weight",
    "samples_skipped_frac": "samples/skipped_frac",
    "samples_trained_frac": "samples/trained_frac",
    "samples_dropped_unused": "samples/dropped_unused",
    "sample_uses_mean": "samples/uses_mean",
    "groups": "groups/total",
    "groups_without_signal": "groups/without_signal",
    "groups_with_pass": "groups/with_pass",
    "buffer_size": "buffer/size",
    "buffer_pending": "buffer/pending",
    "buffer_added": "buffer/added",
    "buffer_dropped": "buffer/dropped",
    "buffer_dropped_stale": "buffer/dropped_stale",
    "staleness_mean": "staleness/mean",
    "staleness_max": "staleness/max",
    "train_samples": "learner/samples",
    "train_references": "learner/references",
    "train_tokens": "learner/tokens",
    "train_forwards": "learner/forwards",
    "engine_version": "engine/policy_version",
    "tokens_per_s_gen": "throughput/gen_tokens_per_s",
    "tokens_per_s_train": "throughput/train_tokens_per_s",
    **{f"time_{part}_s": f"time/{part}_s"
       for part in ("gen", "judge", "judge_busy", "logprob_gap", "train", "sync", "checkpoint", "step")},
}
"""``metrics.jsonl`` key -> the name the trackers show. A key not listed goes by its own name;
``verdicts`` become ``verdicts/<category>`` shares and ``static_findings`` ``static_findings/<rule>``
counts (:func:`tracker_metrics`). Every name is one MLflow accepts (no ``@``)."""


def tracker_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` line as tracker scalars, named by :data:`TRACKER_NAMES`; text (the engine,
    the learner's dtype) and metrics the step did not have (None) left out."""
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key == "verdicts":
            total = sum(value.values()) or 1
            scalars.update({f"verdicts/{name}": count / total for name, count in value.items()})
        elif key == "static_findings":
            scalars.update({f"static_findings/{rule}": count for rule, count in value.items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            scalars[TRACKER_NAMES.get(key, key)] = value
    return scalars


def hyperparameters(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A config as flat ``section.key`` hyperparameters (lists as text): the one shape every tracker
    takes (TensorBoard's hparams refuse nesting and lists)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(hyperparameters(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value) if isinstance(value, (list, tuple)) else value
    return flat


TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


@dataclass
class Trackers:
    """The run's experiment trackers (``log.report_to``): accelerate's tracker classes, started,
    fed and finished the way ``Accelerator(log_with=...)`` does. Not through the trainer's
    Accelerator: it belongs to the ranks, was built before the run directory is known, and its
    ``end_training`` would destroy their process group. Rank 0 only; no trackers, no-ops."""

    trackers: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, config: TrainConfig, run_dir: str | Path, step: int = 0) -> Trackers:
        """Start ``config.log.report_to`` for the run in ``run_dir`` at ``step`` (0, or the step a
        resume starts from), ``config`` logged as its hyperparameters."""
        from accelerate import PartialState
        from accelerate.tracking import get_available_trackers

        PartialState()  # accelerate's trackers log through its state (the trainer's Accelerator made it)
        names, run_dir = list(dict.fromkeys(config.log.report_to)), Path(run_dir).resolve()
        available = {str(t) for t in get_available_trackers()}
        if missing := [n for n in names if n not in available]:
            raise ImportError(f"log.report_to names {', '.join(missing)}, not installed: "
                              f"pip install {' '.join(TRACKER_PACKAGES[n] for n in missing)}")
        trackers = cls([_tracker(name, run_dir, config.log.project, step) for name in names])
        for tracker in trackers.trackers:
            tracker.start()
            tracker.store_init_configuration(hyperparameters(to_dict(config)))
        return trackers

    def log(self, record: dict[str, Any]) -> None:
        """A step's ``metrics.jsonl`` line, named for the trackers (:func:`tracker_metrics`)."""
        self._log(tracker_metrics(record), record["step"])

    def log_eval(self, step: int, summary: dict[str, Any]) -> None:
        self._log({f"eval/pass_at_{k}": v for k, v in summary.get("pass_at_k", {}).items()}, step)

    def finish(self) -> None:
        for tracker in self.trackers:
            tracker.finish()

    def _log(self, scalars: dict[str, float], step: int) -> None:
        for tracker in self.trackers:
            tracker.log(scalars, step=step)


def _tracker(name: str, run_dir: Path, project: str, step: int) -> Any:
    """One tracker, local unless the environment names a server: TensorBoard in ``tb/`` (what a
    resume redoes purged), wandb offline under the run unless ``WANDB_MODE`` / ``WANDB_DIR`` say
    otherwise, MLflow in ``mlflow.db`` under the run unless ``MLFLOW_TRACKING_URI`` is set (its file
    store is retired), trackio in its local store, a resume continuing its run."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, TrackioTracker, WandBTracker

    if name == "tensorboard":
        return TensorBoardTracker("tb", run_dir, purge_step=step + 1)
    if name == "wandb":
        local = {"WANDB_MODE": ("mode", "offline"), "WANDB_DIR": ("dir", str(run_dir))}
        return WandBTracker(project, name=run_dir.name, **dict(v for k, v in local.items() if k not in os.environ))
    if name == "mlflow":
        if "MLFLOW_TRACKING_URI" in os.environ:
            return MLflowTracker(project, run_name=run_dir.name)
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{run_dir / 'mlflow.db'}")
        return MLflowTracker(project, logging_dir=str(run_dir / "mlartifacts"), run_name=run_dir.name)
    if name == "trackio":
        return TrackioTracker(project, name=run_dir.name, resume="allow" if step else "never")
    raise ValueError(f"unknown tracker {name!r} (known: {', '.join(TRACKER_PACKAGES)})")


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


