"""Factories the test files share: the tiny training config and a saved model's weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from rltf.config import TrainConfig, load_config


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., TrainConfig]:
    """``tiny_config(*overrides)``: ``tiny-smoke`` (a random two-layer Llama with the embedded tokenizer, six
    MBPP train problems, seconds a step) with no trackers, then the overrides."""
    return lambda *overrides: load_config("tiny-smoke", ["log.report_to=[]", *overrides])


@pytest.fixture(scope="session")
def model_weights() -> Callable[[Path], dict[str, torch.Tensor]]:
    """``model_weights(folder)``: the tensors of ``folder/model.safetensors`` (a checkpoint's ``model``,
    a run's ``init-model``) by name."""
    from safetensors.torch import load_file

    return lambda folder: load_file(str(Path(folder) / "model.safetensors"))
