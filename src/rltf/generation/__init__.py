"""Sampling completions: one :class:`Engine` protocol, the ``hf`` reference engine and two fast ones,
``llamacpp`` (llama.cpp, the fastest measured on CPU) and ``ct2`` (CTranslate2).

``make_engine(policy, EngineConfig(name="auto"))`` picks the fastest engine that is installed and
serves the model: llamacpp for llama/qwen2 models, else ct2 for other decoder-only ones, else
transformers. Engines serve the weights of their last ``sync``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rltf.generation import ct2, llamacpp
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

__all__ = ["ENGINES", "Completion", "Engine", "EngineConfig", "FinishReason", "Generation", "HFEngine", "OnComplete",
           "SamplingParams", "TextStream", "length_batches", "make_engine", "resolve_engine"]


@dataclass
class EngineConfig:
    """Which engine samples, and how.

    ``compute_type``: ``auto`` is each engine's default -- llamacpp ``bfloat16`` on CPUs with
    AVX512-BF16, else ``float16`` (greedy pass@1 inside HF float32's confidence interval either way;
    ``float32`` is the exact mode; :func:`rltf.generation.llamacpp.default_compute_type`), ct2
    ``float32`` (its ``int8`` halves MBPP greedy pass@1; see ``docs/evaluation.md``); the
    hf engine runs the learner's own dtype. ``workers`` parallel generations of ``threads`` threads
    each: on a CPU, one single-thread worker per free core. ``sync_every``: the engine takes the
    learner's weights every N optimizer steps (the hf engine always has them).
    """

    name: Literal["auto", "hf", "ct2", "llamacpp"] = "auto"
    compute_type: str = "auto"
    workers: int = 2
    threads: int = 1
    batch_size: int = 25
    """hf and ct2: sequences per batch (prompts x samples); llamacpp: sequences each worker decodes
    together (continuous batching: a finished row's slot takes the next problem's rows)."""
    sync_every: int = 1


ENGINES = ("auto", "hf", "ct2", "llamacpp")


def resolve_engine(name: str, policy: Policy | None = None) -> str:
    """``auto`` -> ``llamacpp`` where llama-cpp-python is importable and serves the model, else ``ct2``
    where CTranslate2 is (decoder-only models), else ``hf``."""
    if name != "auto":
        return name
    if llamacpp.available() and (policy is None or llamacpp.supports(policy)):
        return "llamacpp"
    if ct2.available() and (policy is None or not policy.is_encoder_decoder):
        return "ct2"
    return "hf"


def make_engine(policy: Policy, config: EngineConfig, version: int = 0, device: str | None = None) -> Engine:
    """The configured engine, serving ``policy``'s current weights as ``version`` on ``device``
    (default: where the policy's model is; a sharded learner's whole copy stays on the CPU while its
    rank generates on the GPU)."""
    name = resolve_engine(config.name, policy)
    if name == "hf":
        engine: Engine = HFEngine(policy, batch_size=config.batch_size)
        engine.sync(version)
        return engine
    # "cuda:K" on the learner's GPU: a data-parallel rank generates on its own device
    device = device or str(policy.model.device)
    device = device if device.startswith("cuda") else "cpu"
    if name == "llamacpp":
        if not llamacpp.available():
            raise ValueError("engine.name=llamacpp needs llama-cpp-python: pip install 'rltf[llamacpp]' "
                             "(a source build; or make install)")
        compute_type = llamacpp.default_compute_type(device) if config.compute_type == "auto" \
            else config.compute_type
        return llamacpp.LlamaCppEngine(policy, compute_type, config.workers, config.threads, config.batch_size,
                                       device, version)
    if name == "ct2":
        if not ct2.available():
            raise ValueError("engine.name=ct2 needs CTranslate2: pip install 'rltf[ct2]' (or make install)")
        compute_type = "float32" if config.compute_type == "auto" else config.compute_type
        return ct2.CT2Engine(policy, compute_type, config.workers, config.threads, config.batch_size, device, version)
    raise ValueError(f"unknown engine {name!r} ({', '.join(ENGINES)})")
