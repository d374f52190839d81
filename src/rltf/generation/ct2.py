"""The ``ct2`` engine: CTranslate2 (PyPI wheels for CPU and CUDA), fed the learner's weights in memory.

Why it is fast here: float32 (or int8) kernels without autograd or Python in the decode loop, several
single-thread workers generating in parallel (one OpenMP pool across both cores is slower and
collapses when the judge takes a core), and **prefix sharing** -- a prompt is prefilled once and its
KV cache copied to the problem's K samples (``num_hypotheses``), instead of K prefills.

Weight sync converts the learner's in-memory modules to a CTranslate2 model through CTranslate2's
own Transformers loaders and loads it (about a second for 135M parameters; no checkpoint on disk).
Token log-probs are CTranslate2's scores: ``log_softmax`` of the untempered logits at the sampled token.
Sampling applies temperature, then top-p, as transformers does; it is seeded but, with several
workers, not bit-reproducible from run to run (which worker takes which batch varies).
"""

from __future__ import annotations

import tempfile
import time
import types
from collections.abc import Sequence
from typing import Any
from unittest import mock

from rltf.generation.base import (
    Completion,
    Generation,
    OnComplete,
    Row,
    SamplingParams,
    TextStream,
    length_batches,
    scratch_dir,
)
from rltf.models import Policy, merged
from rltf.prompts import Prompt

COMPUTE_TYPES = ("int8", "int8_float32", "float32", "int8_float16", "int8_bfloat16", "float16", "bfloat16")


def available() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


class _Detached:
    """A read-only view of a torch module tree for CTranslate2's loaders, which ``delattr`` the layers
    they have converted (to free memory when converting from disk) and would strip the learner."""

    def __init__(self, module: Any) -> None:
        object.__setattr__(self, "_module", module)

    def __getattr__(self, name: str) -> Any:
        import torch

        value = getattr(self._module, name)
        if isinstance(value, torch.Tensor):
            return value.detach().clone()  # the loaders quantize some tensors in place
        if isinstance(value, torch.nn.ModuleList):
            return [_Detached(m) for m in value]
        if isinstance(value, torch.nn.Module):
            return _Detached(value)
        return value

    def __delattr__(self, name: str) -> None:
        pass


def convert(model: Any, tokenizer: Any, compute_type: str, out_dir: str) -> None:
    """Write ``model`` (a transformers causal LM in memory, LoRA merged or not) as a CTranslate2 model."""
    import torch
    from ctranslate2.converters import transformers as ct2_transformers

    model = merged(model)  # serve base + adapter as one model, without touching the learner
    loader = ct2_transformers._MODEL_LOADERS.get(type(model.config).__name__)
    if loader is None:
        raise ValueError(f"CTranslate2 cannot convert {type(model.config).__name__}; use engine.name=hf")
    # The loaders call gc.collect() once per layer (seconds on a large heap); nothing is freed here.
    with mock.patch.object(ct2_transformers, "gc", types.SimpleNamespace(collect=lambda: 0)), torch.no_grad():
        spec = loader(_Detached(model), tokenizer)
    spec.validate()
    spec.optimize(quantization=compute_type)
    spec.save(out_dir)


class CT2Engine:
    """Batches of at most ``batch_size`` sequences, length-sorted, spread over ``workers`` threads."""

    name = "ct2"
    shares_weights = False
    pads_prompts = True

    def __init__(self, policy: Policy, compute_type: str = "float32", workers: int = 2, threads: int = 1,
                 batch_size: int = 16, device: str = "cpu", version: int = 0) -> None:
        if policy.is_encoder_decoder:
            raise ValueError("the ct2 engine serves decoder-only models; use engine.name=hf")
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"unknown compute type {compute_type!r} (one of {', '.join(COMPUTE_TYPES)})")
        self.policy, self.compute_type, self.workers, self.threads = policy, compute_type, workers, threads
        self.batch_size, self.device = batch_size, device
        self.label = f"ct2/{compute_type}"
        self.policy_version = -1
        self._generator: Any = None
        self.sync(version)

    def sync(self, version: int) -> float:
        import ctranslate2

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rltf-ct2-", dir=scratch_dir()) as out:
            convert(self.policy.model, self.policy.tokenizer, self.compute_type, out)
            kind, _, index = self.device.partition(":")
            self._generator = ctranslate2.Generator(out, device=kind, device_index=int(index or 0),
                                                    compute_type=self.compute_type,
                                                    inter_threads=self.workers, intra_threads=self.threads)
        self.policy_version = version
        return time.perf_counter() - started

    def close(self) -> None:
        self._generator = None

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                 on_complete: OnComplete | None = None) -> Generation:
        import ctranslate2

        started = time.perf_counter()
        tokenizer = self.policy.tokenizer
        ids = self.policy.prompt_ids(prompts)
        tokens = [tokenizer.convert_ids_to_tokens(x) for x in ids]
        eos = self.policy.eos_ids()
        version = self.policy_version
        greedy_rows = 1 if params.greedy else int(params.greedy_first)
        sampled = 0 if params.greedy else params.n - greedy_rows
        rows: dict[tuple[int, int], Row] = {}

        def callback(batch: list[int], first: int) -> Any:
            """Feeds CTranslate2's per-token results to the batch's rows; True stops a row."""

            def step(result: Any) -> bool:
                key = (batch[result.batch_id], first + result.hypothesis_id)
                row = rows[key]
                finished = row.add(result.token_id, result.log_prob, eos) or result.is_last
                if finished and on_complete is not None:
                    on_complete(*key, row.completion(version))
                return finished

            return step

        if params.seed is not None:
            ctranslate2.set_random_seed(params.seed)
        common = {"max_length": params.max_new_tokens, "include_prompt_in_result": False, "return_scores": True,
                  "end_token": sorted(eos), "asynchronous": True}
        pending = []
        for draws, first, options in ((greedy_rows, 0, {"sampling_topk": 1}),
                                      (sampled, greedy_rows, {"sampling_topk": 0, "sampling_topp": params.top_p,
                                                              "sampling_temperature": params.temperature})):
            if not draws:
                continue
            # never fewer batches than workers: a second worker with nothing to do halves throughput
            size = max(draws, min(self.batch_size, -(-len(prompts) * draws // self.workers)))
            for batch in length_batches([len(x) for x in ids], draws, size):
                for i in batch:
                    for j in range(first, first + draws):
                        rows[(i, j)] = Row(prompts[i], TextStream(tokenizer))
                pending += self._generator.generate_batch(
                    [tokens[i] for i in batch], num_hypotheses=draws, callback=callback(batch, first),
                    **common, **options)
        for result in pending:
            result.result()
        new_tokens = sum(len(row.stream.ids) for row in rows.values())
        per_prompt = greedy_rows + sampled
        completions: list[list[Completion]] = []
        for i in range(len(prompts)):
            samples = [rows[(i, j)].completion(version) for j in range(per_prompt)]
            completions.append(samples * params.n if params.greedy else samples)
        return Generation(completions, time.perf_counter() - started, new_tokens)
