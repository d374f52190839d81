"""Atomic checkpoints: everything a resume needs, written to a temporary directory and renamed,
so a run killed at any moment resumes from its last complete step."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rltf.buffer import OnlineBuffer
from rltf.models import Policy, merged

METRICS, CONFIG, CHECKPOINTS, EVAL_DIR, SAMPLES = "metrics.jsonl", "config.yaml", "checkpoints", "eval", "samples.jsonl"


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint. A ``step-N`` directory appears by rename only once complete, so the
    highest one is whole whenever the process was killed."""
    root = run_dir / CHECKPOINTS
    steps = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if root.is_dir() else []
    return steps[-1] if steps else None


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_model(policy: Policy, out: Path) -> None:
    """Plain HF weights + tokenizer in ``out/model`` (``rltf eval --model`` and transformers load it);
    with LoRA also the adapter in ``out/adapter`` (what resume loads) and merged weights in ``model``."""
    if hasattr(policy.model, "peft_config"):
        policy.model.save_pretrained(out / "adapter")
    merged(policy.model).save_pretrained(out / "model")
    policy.tokenizer.save_pretrained(out / "model")



def save(root: Path, step: int, keep: int, policy: Policy, optimizer_state: dict[str, Any], scheduler: Any,
         buffer: OnlineBuffer, state: dict[str, Any]) -> Path:
    """Write ``root/step-N`` (model, optimizer state, scheduler, buffer, the trainer's ``state`` and
    every RNG) into a temporary directory, rename it into place, then keep only the newest ``keep``."""
    root.mkdir(exist_ok=True)
    final, tmp = root / f"step-{step:06d}", root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(policy, tmp)
    torch.save(optimizer_state, tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    buffer.save(tmp / "buffer.pt")
    torch.save({**state, "rng": rng_state()}, tmp / "trainer.pt")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(checkpoint: Path, scheduler: Any, device: Any) -> tuple[OnlineBuffer, dict[str, Any], dict[str, Any]]:
    """Restore a :func:`save`'d checkpoint into ``scheduler`` and the global RNGs; returns its
    buffer, the trainer's state and the optimizer state (on ``device``; the caller loads it, plain or
    sharded). Half-written saves beside it are removed."""
    for tmp in checkpoint.parent.glob(".tmp-step-*"):
        shutil.rmtree(tmp, ignore_errors=True)  # a save that was killed half way
    optimizer_state = torch.load(checkpoint / "optimizer.pt", map_location=device, weights_only=True)
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", weights_only=True))
    state = torch.load(checkpoint / "trainer.pt", weights_only=True)
    set_rng_state(state["rng"])
    return OnlineBuffer.load(checkpoint / "buffer.pt"), state, optimizer_state
