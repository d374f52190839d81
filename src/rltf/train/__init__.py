"""Online RLTF training, one module per job: ``losses`` (the loss math; read it first), ``rollout``
(sampling, judging, groups and baselines), ``checkpoint`` (atomic save and resume), ``trainer``
(the loop) and ``report`` (reading a run back, plots)."""

from rltf.train.checkpoint import CONFIG, METRICS, SAMPLES
from rltf.train.report import read_evals, read_metrics, read_samples, render_report
from rltf.train.trainer import Trainer, load_problem_set

__all__ = ["CONFIG", "METRICS", "SAMPLES", "Trainer", "load_problem_set", "read_evals", "read_metrics", "read_samples",
           "render_report"]
