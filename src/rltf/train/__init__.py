"""Online RLTF training, one module per job: ``losses`` (the loss math; read it first) and ``packing``
(micro-batches by token budget), ``rollout`` (sampling and judging), ``rewards`` (groups into buffer
samples), ``curriculum`` (which problems), ``distributed`` (DDP / FSDP2), ``checkpoint`` (atomic save
and resume), ``trainer`` (the loop) and ``report`` (reading a run back, plots)."""

from rltf.train.checkpoint import CONFIG, METRICS, SAMPLES
from rltf.train.report import read_evals, read_metrics, read_samples, render_report
from rltf.train.trainer import Trainer

__all__ = ["CONFIG", "METRICS", "SAMPLES", "Trainer", "read_evals", "read_metrics", "read_samples", "render_report"]
