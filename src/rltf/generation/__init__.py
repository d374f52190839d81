"""Sampling completions: one :class:`Engine` protocol, the ``hf`` reference engine and the fast ``ct2`` one.

``make_engine(policy, EngineConfig(name="auto"))`` picks CTranslate2 where it is installed and the
model is decoder-only, else transformers. Engines serve the weights of their last ``sync``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rltf.generation import ct2
from rltf.generation.base import (
    Completion,
    Engine,
    FinishReason,
    Generation,
    OnComplete,
    SamplingParams,
    TextStream,
    length_batches,
)
from rltf.generation.hf import HFEngine
from rltf.models import Policy

__all__ = ["Completion", "Engine", "EngineConfig", "FinishReason", "Generation", "HFEngine", "OnComplete",
           "SamplingParams", "TextStream", "length_batches", "make_engine", "resolve_engine"]


@dataclass
class EngineConfig:
    """Which engine samples, and how.

    ``compute_type`` (ct2): ``float32`` (the default) reproduces HF float32's greedy output; ``int8``
    is faster but changes the model (greedy pass@1 on MBPP test fell from 3.6 % to about 1.6 %; see
    the README's generation section). ``workers`` parallel generations of
    ``threads`` threads each: on a CPU, one single-thread worker per free core. ``sync_every``: the
    engine takes the learner's weights every N optimizer steps (the hf engine always has them).
    """

    name: Literal["auto", "hf", "ct2"] = "auto"
    compute_type: str = "float32"
    workers: int = 2
    threads: int = 1
    batch_size: int = 20
    """Sequences per batch (prompts x samples)."""
    sync_every: int = 1


def resolve_engine(name: str, policy: Policy | None = None) -> str:
    """``auto`` -> ``ct2`` when CTranslate2 is importable (and the model is decoder-only), else ``hf``."""
    if name != "auto":
        return name
    if ct2.available() and (policy is None or not policy.is_encoder_decoder):
        return "ct2"
    return "hf"


def make_engine(policy: Policy, config: EngineConfig, version: int = 0) -> Engine:
    """The configured engine, serving ``policy``'s current weights as ``version``."""
    name = resolve_engine(config.name, policy)
    if name == "hf":
        engine: Engine = HFEngine(policy, batch_size=config.batch_size)
        engine.sync(version)
        return engine
    if name == "ct2":
        if not ct2.available():
            raise ValueError("engine.name=ct2 needs CTranslate2: pip install ctranslate2 (or make install)")
        device = "cuda" if str(policy.model.device).startswith("cuda") else "cpu"
        return ct2.CT2Engine(policy, config.compute_type, config.workers, config.threads, config.batch_size, device,
                             version)
    raise ValueError(f"unknown engine {name!r} (auto, hf or ct2)")
