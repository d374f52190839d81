"""Generation engines: the completion record, seeding, greedy rows, weight sync, versions, streaming."""

from __future__ import annotations

import copy
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rltf import generation
from rltf.generation import EngineConfig, HFEngine, SamplingParams, TextStream, make_engine, resolve_engine
from rltf.generation.ct2 import CT2Engine
from rltf.generation.llamacpp import LlamaCppEngine, _sample, default_compute_type
from rltf.models import Policy
from rltf.models import save_tiny_llama as make_tiny_model
from rltf.problems import Problem
from rltf.prompts import Prompt

ENGINES = ["hf", "ct2-float32", "ct2-int8", "llamacpp-float32", "llamacpp-float16", "llamacpp-bfloat16"]


def mbpp() -> Problem:
    return Problem(id="mbpp/1", source="mbpp", prompt="Write a function to add two numbers.",
                   tests={"kind": "assert", "setup": "", "cases": ["assert add(1, 2) == 3"]})


def humaneval() -> Problem:
    return Problem(id="HumanEval/0", source="humaneval", prompt="def add(a):\n    \"\"\"Sum.\"\"\"\n",
                   entry_point="add", tests={"kind": "assert", "setup": "", "cases": ["assert add([1]) == 1"]})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return Policy.load(str(make_tiny_model(tmp_path_factory.mktemp("tiny"))))


def engine_for(name: str, policy: Policy, **kwargs: int) -> generation.Engine:
    if name == "hf":
        return HFEngine(policy, batch_size=kwargs.get("batch_size", 8))
    if name.startswith("llamacpp"):
        return LlamaCppEngine(policy, name.split("-")[1], workers=kwargs.get("workers", 1),
                              batch_size=kwargs.get("batch_size", 8))
    return CT2Engine(policy, name.split("-")[1], workers=kwargs.get("workers", 1),
                     batch_size=kwargs.get("batch_size", 8))


def reference_offsets(tokenizer, ids):
    """The O(L^2) definition: each character goes to the token whose prefix decode first contains it."""
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    spans, prev = [], 0
    for i in range(len(ids)):
        part = tokenizer.decode(ids[: i + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
        end = max(prev, len(part)) if text.startswith(part) else prev
        spans.append((prev, end))
        prev = end
    if spans and prev != len(text):
        spans[-1] = (spans[-1][0], len(text))
    return text, spans


def test_text_stream_matches_the_quadratic_definition(tiny: Policy) -> None:
    tok = tiny.tokenizer
    text = "def f():\n\treturn 'é 你好 🙂'\r\n  x = [1,2]  # ünï\n"
    ids = [*tok(text, add_special_tokens=False).input_ids, tok.eos_token_id]
    torch.manual_seed(0)
    samples = [ids, torch.randint(0, len(tok), (60,)).tolist()]  # real text, and arbitrary byte pieces
    for sample in samples:
        stream = TextStream(tok)
        for token in sample:
            stream.add(token)
        stream.finish()
        assert (stream.text, stream.offsets) == reference_offsets(tok, sample)
    assert stream.offsets[0][0] == 0
    assert all(a[1] == b[0] and a[0] <= a[1] for a, b in itertools.pairwise(stream.offsets))


@pytest.mark.parametrize("name", ENGINES)
def test_completion_record(tiny: Policy, name: str) -> None:
    weights = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    engine = engine_for(name, tiny)
    assert all(torch.equal(v, tiny.model.state_dict()[k]) for k, v in weights.items())  # sync leaves the learner be
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    out = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8, seed=7))
    assert [len(cs) for cs in out.completions] == [3, 3]
    assert out.new_tokens == sum(len(c.token_ids) for cs in out.completions for c in cs) > 0
    assert out.tokens_per_s > 0
    for c in (c for cs in out.completions for c in cs):
        assert len(c.offsets) == len(c.token_ids) == len(c.logprobs) <= 8
        assert "".join(c.text[a:b] for a, b in c.offsets) == c.text
        assert all(math.isfinite(lp) and lp <= 0 for lp in c.logprobs)
        assert c.finish_reason != "length" or len(c.token_ids) == 8
        assert len(c.token_ids) == 8 or c.finish_reason in ("stop", "eos")  # a short completion ended itself
        assert c.finish_reason != "eos" or c.token_ids[-1] in tiny.eos_ids()
        assert c.policy_version == 0


def test_stop_and_eos_end_rows_where_they_happen(tiny: Policy) -> None:
    tok = tiny.tokenizer
    from rltf.generation.base import Row

    row = Row(Prompt("p"), TextStream(tok))
    ids = tok("```python\nx = 1\n```\nmore", add_special_tokens=False).input_ids
    used = next(t for t, token in enumerate(ids, 1) if row.add(token, -0.5, {tok.eos_token_id}))
    assert row.finish_reason == "stop" and row.stream.text.endswith("```") and used < len(ids)
    eos = Row(Prompt("p"), TextStream(tok))
    assert not eos.add(5, -1.0, {tok.eos_token_id}) and eos.add(tok.eos_token_id, -2.0, {tok.eos_token_id})
    completion = eos.completion(version=4)
    assert completion.finish_reason == "eos" and completion.logprobs == (-1.0, -2.0) and completion.policy_version == 4


def test_hf_engine_is_seeded_and_keeps_training_mode(tiny: Policy) -> None:
    engine = HFEngine(tiny, batch_size=4)
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8, seed=7)
    tiny.model.train()
    first = engine.generate(prompts, params)
    assert tiny.model.training  # the trainer's mode survives sampling
    tiny.model.eval()
    assert first.completions == engine.generate(prompts, params).completions
    assert first.completions != engine.generate(prompts, SamplingParams(3, 1.0, 0.95, 8, seed=8)).completions
    greedy = engine.generate(prompts, SamplingParams(n=2, temperature=0, max_new_tokens=6))
    assert all(cs[0] == cs[1] for cs in greedy.completions)


@pytest.mark.parametrize("name", ENGINES)
def test_greedy_first_row_equals_greedy_decoding(tiny: Policy, name: str) -> None:
    engine = engine_for(name, tiny)
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    greedy = engine.generate(prompts, SamplingParams(n=1, temperature=0, max_new_tokens=12))
    mixed = engine.generate(prompts, SamplingParams(n=4, temperature=1.5, top_p=0.95, max_new_tokens=12, seed=3,
                                                    greedy_first=True))
    assert [cs[0].token_ids for cs in mixed.completions] == [cs[0].token_ids for cs in greedy.completions]
    sampled = {c.token_ids for cs in mixed.completions for c in cs[1:]}
    assert len(sampled) > 1 and not sampled <= {cs[0].token_ids for cs in greedy.completions}


@pytest.mark.parametrize("name", ["ct2-float32", "llamacpp-float32"])
def test_exact_modes_reproduce_hf_greedy_and_its_logprobs(tiny: Policy, name: str) -> None:
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    params = SamplingParams(n=1, temperature=0, max_new_tokens=16)
    hf = HFEngine(tiny).generate(prompts, params).completions
    fast = engine_for(name, tiny).generate(prompts, params).completions
    assert [c[0].token_ids for c in hf] == [c[0].token_ids for c in fast]
    gaps = [abs(a - b) for x, y in zip(hf, fast) for a, b in zip(x[0].logprobs, y[0].logprobs)]
    assert max(gaps) < 1e-3


def test_llamacpp_serves_qwen2_with_its_attention_biases(tiny: Policy, tmp_path: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = tiny.tokenizer
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 1.0)  # zero-initialised: a mis-mapped bias would go unnoticed
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    qwen = Policy.load(str(tmp_path))
    prompts = [qwen.prompt(mbpp()), qwen.prompt(humaneval())]
    params = SamplingParams(n=1, temperature=0, max_new_tokens=12)
    hf = HFEngine(qwen).generate(prompts, params).completions
    fast = engine_for("llamacpp-float32", qwen).generate(prompts, params).completions
    assert [c[0].token_ids for c in hf] == [c[0].token_ids for c in fast]


@pytest.mark.parametrize("name", ["ct2-float32", "ct2-int8", "llamacpp-float32", "llamacpp-float16"])
def test_weight_sync_changes_the_output_and_the_version(tmp_path: Path, name: str) -> None:
    policy = Policy.load(str(make_tiny_model(tmp_path)))
    engine = engine_for(name, policy)
    prompts = [policy.prompt(mbpp())]
    params = SamplingParams(n=1, temperature=0, max_new_tokens=10)
    before = engine.generate(prompts, params).completions[0][0]
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # what an optimizer step does, writ large
    stale = engine.generate(prompts, params).completions[0][0]
    assert stale.token_ids == before.token_ids and stale.policy_version == 0  # not synced: old weights
    seconds = engine.sync(5)
    after = engine.generate(prompts, params).completions[0][0]
    assert seconds > 0 and engine.policy_version == 5 and after.policy_version == 5
    assert after.token_ids != before.token_ids
    if name.endswith("float32"):  # the exact modes now decode what the learner itself would
        assert HFEngine(policy).generate(prompts, params).completions[0][0].token_ids == after.token_ids


@pytest.mark.parametrize("name", ["ct2-float32", "llamacpp-float16"])
def test_streaming_reports_each_completion_once_as_it_ends(tiny: Policy, name: str) -> None:
    engine = engine_for(name, tiny, batch_size=2, workers=2)
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval()), tiny.prompt(mbpp())]
    seen: list[tuple[int, int, tuple[int, ...]]] = []
    out = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=1, greedy_first=True),
                          lambda i, j, c: seen.append((i, j, c.token_ids)))
    assert sorted((i, j) for i, j, _ in seen) == [(i, j) for i in range(3) for j in range(3)]
    assert all(out.completions[i][j].token_ids == ids for i, j, ids in seen)
    hf_seen: list[tuple[int, int]] = []
    HFEngine(tiny, batch_size=4).generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=6, seed=2),
                                          lambda i, j, c: hf_seen.append((i, j)))
    assert sorted(hf_seen) == [(i, j) for i in range(3) for j in range(2)]


def test_auto_prefers_llamacpp_then_ct2_then_hf(tiny: Policy, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_engine("auto", tiny) == "llamacpp"
    assert make_engine(tiny, EngineConfig(name="auto", workers=1)).label == f"llamacpp/{default_compute_type()}"
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    assert resolve_engine("auto", tiny) == "ct2"
    assert make_engine(tiny, EngineConfig(name="auto", workers=1)).label == "ct2/float32"
    with pytest.raises(ValueError, match=r"pip install 'rltf\[llamacpp\]'"):
        make_engine(tiny, EngineConfig(name="llamacpp"))
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    assert resolve_engine("auto", tiny) == "hf"
    assert make_engine(tiny, EngineConfig(name="auto")).name == "hf"
    with pytest.raises(ValueError, match=r"pip install 'rltf\[ct2\]'"):
        make_engine(tiny, EngineConfig(name="ct2"))


def test_llamacpp_is_seeded_across_workers_and_refills_slots(tiny: Policy) -> None:
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval()), tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, max_new_tokens=10, seed=11, greedy_first=True)
    # 3 slots per worker for 4 problems x 3 rows: each worker admits a problem whenever one finishes
    engine = engine_for("llamacpp-float16", tiny, batch_size=3, workers=2)
    first = engine.generate(prompts, params)
    assert first.completions == engine.generate(prompts, params).completions
    wide = engine_for("llamacpp-float16", tiny, batch_size=12, workers=2).generate(prompts, params)
    assert [[c.token_ids for c in cs] for cs in wide.completions] == [[c.token_ids for c in cs]
                                                                      for cs in first.completions]
    other = engine.generate(prompts, SamplingParams(3, 1.0, 0.9, 10, seed=12, greedy_first=True))
    assert other.completions != first.completions
    assert first.completions[0][0].token_ids == first.completions[2][0].token_ids  # same prompt, greedy


def test_llamacpp_sampling_applies_temperature_then_top_p_like_transformers() -> None:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(1, 500)).astype(np.float32)
    params = SamplingParams(n=1, temperature=0.7, top_p=0.8, max_new_tokens=1)
    warped = TopPLogitsWarper(0.8)(None, TemperatureLogitsWarper(0.7)(None, torch.from_numpy(logits)))
    allowed = set(torch.isfinite(warped[0]).nonzero().flatten().tolist())
    rows, greedy = np.zeros(4000, dtype=int), np.zeros(4000, dtype=bool)
    tokens, logprobs = _sample(logits, rows, greedy, params, np.random.default_rng(1).random(4000))
    assert set(tokens.tolist()) == allowed  # every kept token drawn, nothing else
    expected = torch.log_softmax(torch.from_numpy(logits[0]), -1)[torch.from_numpy(tokens)].numpy()
    assert np.allclose(logprobs, expected, atol=1e-4)  # untempered log-probs
    probs = torch.softmax(warped[0], -1).numpy()
    top = int(probs.argmax())
    assert abs((tokens == top).mean() - probs[top]) < 0.03
    argmax, _ = _sample(logits, np.zeros(2, dtype=int), np.ones(2, dtype=bool), params, np.zeros(2))
    assert argmax.tolist() == [int(logits.argmax())] * 2


def test_encoder_decoder_models_sample_on_hf(tiny: Policy, tmp_path: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    tok = tiny.tokenizer
    config = T5Config(vocab_size=len(tok), d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8,
                      decoder_start_token_id=tok.pad_token_id, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    codet5 = Policy.load(str(tmp_path))
    assert codet5.is_encoder_decoder and codet5.style == "base"  # CodeRL-style APPS prompts, no chat template
    assert resolve_engine("auto", codet5) == "hf"
    apps = Problem(id="apps/1", source="apps", prompt="Echo a number.",
                   tests={"kind": "stdio", "cases": [{"input": "1\n", "output": "1\n"}]})
    completions = make_engine(codet5, EngineConfig()).generate(
        [codet5.prompt(apps)], SamplingParams(n=2, temperature=1.0, max_new_tokens=5)).completions[0]
    assert len(completions) == 2 and all(0 < len(c.token_ids) <= 5 for c in completions)
    assert all(c.token_ids[0] != tok.pad_token_id for c in completions)  # decoder start token is not output
    assert all(len(c.logprobs) == len(c.token_ids) for c in completions)


def test_hf_sampling_ignores_the_models_own_generation_config(tiny: Policy) -> None:
    """A checkpoint's generation_config (repetition penalty, n-gram bans, top-k) must not leak into
    sampling, the greedy baseline or evaluation: only SamplingParams count."""
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    greedy = SamplingParams(n=1, max_new_tokens=16)
    sampled = SamplingParams(n=2, temperature=1.0, top_p=1.0, max_new_tokens=16, seed=3)
    engine = HFEngine(tiny, batch_size=4)
    clean = [engine.generate(prompts, p).completions for p in (greedy, sampled)]
    shipped = tiny.model.generation_config
    try:
        tiny.model.generation_config = copy.deepcopy(shipped)
        tiny.model.generation_config.update(repetition_penalty=50.0, no_repeat_ngram_size=1, top_k=2)
        assert [engine.generate(prompts, p).completions for p in (greedy, sampled)] == clean
        assert tiny.model.generation_config.repetition_penalty == 50.0  # put back after the call
    finally:
        tiny.model.generation_config = shipped


def test_prompts_are_cut_once_for_every_engine_and_the_learner(tiny: Policy) -> None:
    """A long prompt is sampled under the context it is trained under: the policy keeps its last
    ``max_prompt_tokens`` tokens wherever it is encoded (ids for fast engines, tensors for hf)."""
    prompt = tiny.prompt(mbpp())
    full = tiny.prompt_ids([prompt])[0]
    tiny.max_prompt_tokens = len(full) - 5
    try:
        cut = tiny.prompt_ids([prompt])[0]
        assert cut == full[5:]
        assert tiny.encode([prompt]).input_ids[0].tolist() == cut
        assert tiny.prompt_lengths([prompt]) == [len(full) - 5]
        assert tiny.tokenizer.truncation_side == "right"  # the setting is restored
    finally:
        tiny.max_prompt_tokens = None
    assert tiny.prompt_ids([prompt])[0] == full
