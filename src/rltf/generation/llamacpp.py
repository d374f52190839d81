"""The ``llamacpp`` engine: llama.cpp (``llama-cpp-python``) with continuous batching and prefix sharing.

Why it is the fastest CPU engine measured here: half-precision weights (half float32's memory
traffic; bfloat16 runs on AVX512-BF16 where the CPU has it), and rltf drives llama.cpp's batch API
directly, so that

- **continuous batching** refills a finished row's slot with the next problem at once (a static batch
  runs at the speed of its longest row, and MBPP completions range from 30 to 256 tokens);
- **prefix sharing**: a problem's prompt is prefilled once, for its first row, and its KV cache is
  copied to the problem's other rows (greedy baseline and K samples);
- several single-thread **workers** (one llama.cpp context each, sharing the weights) decode in
  parallel: ctypes releases the GIL, and one 2-thread pool collapses when the judge takes a core.
  A worker whose share of the rows is done lends its threads to those still decoding (a call ends
  with its longest rows, often on one worker).

Sampling is rltf's own, vectorised over rows, with transformers' semantics: temperature, then top-p
(llama.cpp's stock sampler chain applies min-p 0.05 by default). A row's log-prob is the log-softmax of
the untempered logits at its token, as in the ``hf`` and ``ct2`` engines. Each row draws from its own
generator, seeded by (seed, problem, row): a seeded call gives the same samples whatever the number of
workers or slots (up to the kernels' rounding, which depends on how many rows share a micro-batch).

Weight sync writes the learner's weights as a GGUF file in memory (``/dev/shm``) and reloads it; the
tokenizer stays rltf's (llama.cpp only ever sees token ids). Llama and Qwen2 architectures.
"""

from __future__ import annotations

import ctypes
import heapq
import json
import math
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rltf.generation.base import Completion, Generation, OnComplete, Row, SamplingParams, TextStream, scratch_dir
from rltf.models import Policy, merged
from rltf.prompts import Prompt

COMPUTE_TYPES = ("float32", "float16", "bfloat16")
"""GGUF weight types. ``float32`` reproduces HF float32's greedy output most closely; ``bfloat16`` is
the fastest where the CPU computes it natively, ``float16`` elsewhere (see :func:`default_compute_type`)."""

_ARCHS = {"llama": ("llama", True), "qwen2": ("qwen2", False)}
"""transformers ``model_type`` -> (GGUF architecture, whether q/k rows are permuted for llama.cpp's rope)."""

_TOP_CANDIDATES = 64
"""Tokens sorted per row for top-p; a row whose top candidates hold less than ``top_p`` is sorted in full."""


def available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def default_compute_type(device: str = "cpu") -> str:
    """``bfloat16`` on a CPU with AVX512-BF16 (about 1.3x float16's speed here), else ``float16``
    (without it llama.cpp emulates bfloat16 slowly; on GPUs float16 is the widely supported type).
    Both keep greedy pass@1 inside HF float32's confidence interval (``docs/evaluation.md``)."""
    if device != "cpu":
        return "float16"
    import llama_cpp

    return "bfloat16" if "AVX512_BF16 = 1" in llama_cpp.llama_print_system_info().decode() else "float16"


def supports(policy: Policy) -> bool:
    """Llama/Qwen2 decoder-only models; on a GPU only where llama.cpp was built with GPU offload."""
    if policy.is_encoder_decoder or policy.model.config.model_type not in _ARCHS:
        return False
    if str(policy.model.device).startswith("cuda"):
        import llama_cpp

        return bool(llama_cpp.llama_supports_gpu_offload())
    return True


def _rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half q/k layout -> llama.cpp's interleaved one (as llama.cpp's own converter does)."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape)


def write_gguf(model: Any, tokenizer: Any, path: str, compute_type: str = "float16") -> None:
    """Write a transformers causal LM (in memory; LoRA merged or not) as a GGUF file llama.cpp can load."""
    import gguf
    import torch

    if compute_type not in COMPUTE_TYPES:
        raise ValueError(f"unknown llamacpp compute type {compute_type!r} (one of {', '.join(COMPUTE_TYPES)})")
    model = merged(model)
    config = model.config
    if config.model_type not in _ARCHS:
        raise ValueError(f"the llamacpp engine serves llama and qwen2 models, not {config.model_type!r}")
    arch, permute = _ARCHS[config.model_type]
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise ValueError("the llamacpp engine needs a byte-level BPE tokenizer")
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"the llamacpp engine does not map rope scaling {rope['rope_type']!r}")

    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type({"float32": gguf.LlamaFileType.ALL_F32, "float16": gguf.LlamaFileType.MOSTLY_F16,
                          "bfloat16": gguf.LlamaFileType.MOSTLY_BF16}[compute_type])
    # llama.cpp only ever sees token ids; the vocabulary is there because its loader requires one.
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    tokens += [f"[PAD{i}]" for i in range(len(tokens), config.vocab_size)]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    if tokenizer.eos_token_id is not None:
        writer.add_eos_token_id(tokenizer.eos_token_id)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], config.num_hidden_layers)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue  # llama.cpp reuses token_embd
            target = names.get_name(name, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise ValueError(f"no GGUF name for {name}")
            weight = tensor.detach().float().cpu().numpy()
            if permute and name.endswith(("q_proj.weight", "k_proj.weight")):
                weight = _rope_permute(weight, heads if "q_proj" in name else kv_heads)
            if weight.ndim == 1 or compute_type == "float32":
                writer.add_tensor(target, np.ascontiguousarray(weight, dtype=np.float32))
            elif compute_type == "float16":
                writer.add_tensor(target, weight.astype(np.float16))
            else:
                raw = torch.from_numpy(np.ascontiguousarray(weight)).to(torch.bfloat16).view(torch.int16).numpy()
                writer.add_tensor(target, raw, raw_dtype=gguf.GGMLQuantizationType.BF16)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _silence_llama() -> None:
    """llama.cpp logs every load and context to stderr; rltf reports its own timings."""
    import llama_cpp

    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        _LOG_CALLBACK = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


_LOG_CALLBACK: Any = None


@dataclass
class _Group:
    """One prompt: prefilled once, then copied to each of its rows' sequences."""

    prompt: int
    tokens: list[int]


class _Cores:
    """The call's thread budget, split among the workers that still decode."""

    def __init__(self, workers: int, threads: int) -> None:
        self.busy, self.total, self._lock = workers, workers * threads, threading.Lock()

    def retire(self) -> None:
        with self._lock:
            self.busy -= 1

    def share(self) -> int:
        return self.total // max(self.busy, 1)


@dataclass
class _Active:
    key: tuple[int, int]
    row: Row
    greedy: bool
    pos: int
    rng: np.random.Generator
    last: int = -1


@dataclass
class _Batch:
    """A reusable ``llama_batch`` filled token by token."""

    capacity: int
    raw: Any = None
    outputs: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        import llama_cpp

        self.raw = llama_cpp.llama_batch_init(self.capacity, 0, 1)

    def clear(self) -> None:
        self.raw.n_tokens, self.outputs = 0, []

    def add(self, token: int, pos: int, seq: int, logits: bool) -> None:
        i = self.raw.n_tokens
        self.raw.token[i], self.raw.pos[i], self.raw.n_seq_id[i] = token, pos, 1
        self.raw.seq_id[i][0], self.raw.logits[i] = seq, int(logits)
        if logits:
            self.outputs.append(i)
        self.raw.n_tokens = i + 1

    def free(self) -> None:
        import llama_cpp

        llama_cpp.llama_batch_free(self.raw)


class _Worker:
    """One llama.cpp context: ``slots`` sequences of up to ``capacity`` tokens each (separate KV streams)."""

    def __init__(self, model: Any, slots: int, capacity: int, threads: int) -> None:
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = slots * capacity
        params.n_batch = params.n_ctx
        params.n_ubatch = min(512, params.n_ctx)
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {slots} x {capacity} tokens")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.slots, self.capacity, self.threads = slots, capacity, threads
        self._filler = [0] * slots
        self.batch = _Batch(params.n_batch)
        self.vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(model))

    BRIDGE = 3
    """Longest gap of idle slots bridged: a bridging row costs about a third of a micro-batch split."""

    def _bridge(self, slot: int) -> None:
        """Feed an idle slot a token nobody reads, to keep its neighbours in one micro-batch."""
        if self._filler[slot] >= self.capacity:
            self._clear(slot)
        self.batch.add(0, self._filler[slot], slot, False)
        self._filler[slot] += 1

    def _clear(self, slot: int) -> None:
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.memory, slot, -1, -1)
        self._filler[slot] = 0

    def close(self) -> None:
        import llama_cpp

        self.batch.free()
        llama_cpp.llama_free(self.ctx)

    def run(self, queue: deque[_Group], greedy_rows: list[bool], max_rows: int, prompts: Sequence[Prompt],
            params: SamplingParams, seed: int, tokenizer: Any, eos: set[int], version: int,
            on_complete: OnComplete | None, cores: _Cores) -> dict[tuple[int, int], Completion]:
        """Take groups from ``queue`` (shared with the other workers), each with one row per entry of
        ``greedy_rows``, while at most ``max_rows`` rows are active and slots are free; decode until
        the queue is empty and every row has finished, with ``cores``' share of the threads."""
        try:
            return self._run(queue, greedy_rows, max_rows, prompts, params, seed, tokenizer, eos, version,
                             on_complete, cores)
        finally:
            cores.retire()

    def _run(self, queue: deque[_Group], greedy_rows: list[bool], max_rows: int, prompts: Sequence[Prompt],
             params: SamplingParams, seed: int, tokenizer: Any, eos: set[int], version: int,
             on_complete: OnComplete | None, cores: _Cores) -> dict[tuple[int, int], Completion]:
        import llama_cpp

        free = list(range(self.slots))
        active: dict[int, _Active] = {}
        done: dict[tuple[int, int], Completion] = {}
        batch = self.batch
        while queue or active:
            prefills: dict[int, list[int]] = {}  # first slot of a new group -> its prompt
            shared: dict[int, int] = {}  # a new group's other slots -> its first slot
            size = len(greedy_rows)
            while queue and len(free) >= size and len(active) + size <= max_rows:
                try:
                    group = queue.popleft()
                except IndexError:  # another worker took the last one
                    break
                seqs = [heapq.heappop(free) for _ in range(size)]
                for seq in seqs:
                    self._clear(seq)
                prefills[seqs[0]] = group.tokens
                for j, (seq, greedy) in enumerate(zip(seqs, greedy_rows)):
                    rng = np.random.default_rng([seed, params.first_prompt + group.prompt, j])
                    active[seq] = _Active((group.prompt, j), Row(prompts[group.prompt], TextStream(tokenizer)),
                                          greedy, len(group.tokens), rng)
                    shared[seq] = seqs[0]
            if not active:
                break
            # In slot order: llama.cpp puts only runs of consecutive sequence ids into one micro-batch, so
            # a short gap between busy slots is bridged with a throw-away token (cheaper than a split).
            batch.clear()
            output: dict[int, int] = {}
            last_fed = -1
            for slot in sorted(active):
                state = active[slot]
                if slot in prefills or state.last >= 0:
                    if 0 <= last_fed < slot - 1 <= last_fed + self.BRIDGE:
                        for gap in range(last_fed + 1, slot):
                            self._bridge(gap)
                    last_fed = slot
                if slot in prefills:
                    for pos, token in enumerate(prefills[slot]):
                        batch.add(token, pos, slot, pos == len(prefills[slot]) - 1)
                    output[slot] = len(batch.outputs) - 1
                elif state.last >= 0:
                    batch.add(state.last, state.pos, slot, True)
                    state.pos += 1
                    output[slot] = len(batch.outputs) - 1
            threads = cores.share()
            if threads != self.threads:
                llama_cpp.llama_set_n_threads(self.ctx, threads, threads)
                self.threads = threads
            status = llama_cpp.llama_decode(self.ctx, batch.raw)
            if status != 0:
                raise RuntimeError(f"llama_decode failed with status {status}")
            for seq, first in shared.items():
                if seq != first:
                    llama_cpp.llama_memory_seq_cp(self.memory, first, seq, -1, -1)
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.ctx),
                                           shape=(len(batch.outputs), self.vocab))
            slots = sorted(active)
            rows = np.array([output[slot] if slot in output else output[shared[slot]] for slot in slots])
            states = [active[slot] for slot in slots]
            tokens, logprobs = _sample(logits, rows, np.array([s.greedy for s in states]), params,
                                       np.array([s.rng.random() for s in states]))
            for slot, token, logprob in zip(slots, tokens.tolist(), logprobs.tolist()):
                state = active[slot]
                finished = state.row.add(token, logprob, eos)
                state.last = token
                if finished or len(state.row.stream.ids) >= params.max_new_tokens or state.pos >= self.capacity:
                    completion = state.row.completion(version)
                    done[state.key] = completion
                    if on_complete is not None:
                        on_complete(*state.key, completion)
                    self._clear(slot)
                    del active[slot]
                    heapq.heappush(free, slot)
        return done


def _sample(logits: np.ndarray, rows_of: np.ndarray, greedy: np.ndarray, params: SamplingParams,
            uniforms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One token per row from logits row ``rows_of[r]``: argmax for greedy rows, else temperature then
    top-p as transformers applies them, drawn by inverse CDF with ``uniforms[r]``; and each token's
    log-prob under the untempered distribution."""
    x = logits[rows_of]
    peak = x.max(axis=1, keepdims=True)
    log_norm = peak[:, 0] + np.log(np.exp(x - peak).sum(axis=1))
    tokens = x.argmax(axis=1)
    sampled = np.flatnonzero(~greedy)
    if sampled.size:
        z = x[sampled] / max(params.temperature, 1e-6)
        z_peak = z.max(axis=1, keepdims=True)
        norm = np.exp(z - z_peak).sum(axis=1, keepdims=True)
        k = min(_TOP_CANDIDATES, z.shape[1])
        top = np.argpartition(-z, k - 1, axis=1)[:, :k]
        for r in range(sampled.size):
            candidates = top[r][np.argsort(-z[r, top[r]], kind="stable")]
            probs = np.exp(z[r, candidates] - z_peak[r]) / norm[r]
            if probs.sum() < params.top_p:
                candidates = np.argsort(-z[r], kind="stable")
                probs = np.exp(z[r, candidates] - z_peak[r]) / norm[r]
            keep = (np.cumsum(probs) - probs) < params.top_p  # the smallest head holding top_p
            kept = probs[keep] / probs[keep].sum()
            draw = np.searchsorted(np.cumsum(kept), uniforms[sampled[r]])
            tokens[sampled[r]] = candidates[min(draw, kept.size - 1)]
    logprobs = x[np.arange(len(x)), tokens] - log_norm
    return tokens, logprobs


class LlamaCppEngine:
    """``workers`` llama.cpp contexts of ``batch_size`` sequences each, fed by continuous batching."""

    name = "llamacpp"
    shares_weights = False
    pads_prompts = False

    def __init__(self, policy: Policy, compute_type: str = "float16", workers: int = 2, threads: int = 1,
                 batch_size: int = 20, device: str = "cpu", version: int = 0) -> None:
        if not supports(policy):
            raise ValueError("the llamacpp engine serves llama and qwen2 decoder-only models; use engine.name=hf")
        if compute_type not in COMPUTE_TYPES:
            raise ValueError(f"unknown llamacpp compute type {compute_type!r} (one of {', '.join(COMPUTE_TYPES)})")
        _silence_llama()
        self.policy, self.compute_type, self.workers, self.threads = policy, compute_type, workers, threads
        self.batch_size, self.device = batch_size, device
        self.label = f"llamacpp/{compute_type}"
        self.policy_version = -1
        self._model: Any = None
        self._contexts: list[_Worker] = []
        self._lock = threading.Lock()
        self.sync(version)

    def sync(self, version: int) -> float:
        import llama_cpp

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="rltf-llamacpp-", dir=scratch_dir()) as out:
            path = os.path.join(out, "model.gguf")
            write_gguf(self.policy.model, self.policy.tokenizer, path, self.compute_type)
            params = llama_cpp.llama_model_default_params()
            if self.device.startswith("cuda"):  # all layers on the learner's GPU, none split onto the others
                params.n_gpu_layers, params.split_mode = 999, llama_cpp.LLAMA_SPLIT_MODE_NONE
                params.main_gpu = int(self.device.partition(":")[2] or 0)
            params.use_mmap = False  # the file is deleted below
            model = llama_cpp.llama_model_load_from_file(path.encode(), params)
        if not model:
            raise RuntimeError("llama.cpp could not load the learner's weights")
        self.close()
        self._model = model
        self.policy_version = version
        return time.perf_counter() - started

    def close(self) -> None:
        import llama_cpp

        for context in self._contexts:
            context.close()
        self._contexts = []
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def _workers_for(self, capacity: int, slots: int) -> list[_Worker]:
        """Contexts that fit ``capacity`` tokens per sequence, reused across calls until a sync."""
        if not self._contexts or self._contexts[0].capacity < capacity or self._contexts[0].slots < slots:
            for context in self._contexts:
                context.close()
            capacity = 256 * math.ceil(capacity / 256)
            self._contexts = [_Worker(self._model, slots, capacity, self.threads) for _ in range(self.workers)]
        return self._contexts

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                 on_complete: OnComplete | None = None) -> Generation:
        started = time.perf_counter()
        ids = self.policy.prompt_ids(prompts)
        greedy_rows = 1 if params.greedy else int(params.greedy_first)
        per_prompt = 1 if params.greedy else params.n
        flags = [j < greedy_rows for j in range(per_prompt)]
        longest_first = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
        queue = deque(_Group(i, ids[i]) for i in longest_first)
        with self._lock:
            workers = self._workers_for(max(map(len, ids), default=1) + params.max_new_tokens,
                                        max(self.batch_size, per_prompt))
            # a fair share each: one worker taking every row would leave the others idle
            share = per_prompt * -(-len(queue) // len(workers))
            max_rows = max(per_prompt, min(workers[0].slots, share))
            seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "little")
            eos = self.policy.eos_ids()
            cores = _Cores(len(workers), self.threads)
            with ThreadPoolExecutor(len(workers)) as pool:
                futures = [pool.submit(worker.run, queue, flags, max_rows, prompts, params, seed,
                                       self.policy.tokenizer, eos, self.policy_version, on_complete, cores)
                           for worker in workers]
                done = {key: value for future in futures for key, value in future.result().items()}
        new_tokens = sum(len(c.token_ids) for c in done.values())
        completions = []
        for i in range(len(prompts)):
            samples = [done[(i, j)] for j in range(per_prompt)]
            completions.append(samples * params.n if params.greedy else samples)
        return Generation(completions, time.perf_counter() - started, new_tokens)
