"""Online RLTF training, one module per job: ``losses`` (the loss math; read it first), ``rollout``
(sampling, judging, groups and baselines), ``checkpoint`` (atomic save and resume), ``trainer``
(the loop) and ``report`` (reading a run back, plots)."""

from rltf.train.checkpoint import CONFIG, METRICS
from rltf.train.report import read_evals, read_metrics, render_report
from rltf.train.trainer import Trainer, load_problem_set

__all__ = ["CONFIG", "METRICS", "Trainer", "load_problem_set", "read_evals", "read_metrics", "render_report"]
