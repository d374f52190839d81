from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
import torch
from tiny_policy import make_tiny_model

from rltf import policy as pol
from rltf.policy import (
    Policy,
    PolicyError,
    ProgramSpan,
    Prompt,
    SamplingParams,
    build_prompt,
    code_span,
    family,
    token_offsets,
)
from rltf.problems import Problem

HE_PROMPT = (
    "from typing import List\n\n\ndef helper(x):\n    return x\n\n\n"
    'def add(a: List[int]) -> int:\n    """Sum.\n    >>> add([1, 2])\n    3\n    """\n'
)


def mbpp() -> Problem:
    return Problem(id="mbpp/1", source="mbpp", prompt="Write a function to add two numbers.",
                   tests={"kind": "assert", "setup": "", "cases": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]})


def humaneval() -> Problem:
    return Problem(id="HumanEval/0", source="humaneval", prompt=HE_PROMPT, entry_point="add",
                   tests={"kind": "assert", "setup": "", "cases": ["assert add([1]) == 1"]})


def apps(kind: str) -> Problem:
    tests = ({"kind": "stdio", "cases": [{"input": "1\n", "output": "1\n"}]} if kind == "stdio"
             else {"kind": "call", "fn_name": "f", "cases": [{"args": [1], "expected": 1}]})
    starter = "" if kind == "stdio" else "class Solution:\n    def f(self, x):\n"
    return Problem(id="apps/1", source="apps", prompt="Echo a number.", tests=tests, starter_code=starter,
                   difficulty="introductory")


class FakeChatTokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def assert_maps(span: ProgramSpan, completion: str) -> str:
    """Every generated program character sits at its claimed completion index."""
    program = span.program(completion)
    for p, char in enumerate(program):
        index = span.completion_index(p)
        if index is None:
            assert p < len(span.prefix) and char == span.prefix[p]
        else:
            assert completion[index] == char
    return program


@pytest.mark.parametrize(("completion", "expected"), [
    ("Here it is:\n```python\ndef f():\n\treturn 1\n```\nDone.", "def f():\n\treturn 1\n"),
    ("Sure\r\n```python\r\nx = 1\r\n\ty = 2\r\n```\r\nbye", "x = 1\r\n\ty = 2\r\n"),
    ("```Python \nx = 1\ny", "x = 1\ny"),  # unclosed: runs to the end
    ("x = 1\nprint(x)\n", "x = 1\nprint(x)\n"),  # no fence: all of it
    ("```bash\nls\n```\ntext\n```py\nx=1\n```", "x=1\n"),  # python beats an earlier shell block
    ("```\nx=1\n```\n```python\ny=2\n```", "x=1\n"),  # untagged counts as python
    ("```text\nhello\n```", "hello\n"),  # no python block: first block
    ("```pyth", ""),  # opening line unfinished
    ("```python\n```", ""),
])
def test_fenced_extraction(completion: str, expected: str) -> None:
    span = Prompt("p").span(completion)
    assert assert_maps(span, completion) == expected


def test_open_fence_and_stop_strings() -> None:
    assert code_span("x = 1\n```\n```python\ny\n```", open_fence=True) == (0, 6)
    completion = "    return sum(a)\n\n\ndef other():\n    pass\n"
    prompt = build_prompt(humaneval(), "base")
    span = prompt.span(completion)
    assert span == ProgramSpan(HE_PROMPT, 0, len("    return sum(a)\n\n"))
    assert assert_maps(span, completion) == HE_PROMPT + "    return sum(a)\n\n"
    assert prompt.span("    return 1") == ProgramSpan(HE_PROMPT, 0, 12)  # no stop: all of it


def test_humaneval_chat_prefix_depends_on_what_the_model_wrote() -> None:
    prompt = build_prompt(humaneval(), "chat", FakeChatTokenizer())
    whole = "```python\ndef add(a):\n    return sum(a)\n```"
    span = prompt.span(whole)
    assert span.prefix == "from typing import List\n\n\ndef helper(x):\n    return x\n\n\n"
    assert assert_maps(span, whole).endswith("def add(a):\n    return sum(a)\n")
    body = "```python\n    return sum(a)\n```"
    assert prompt.span(body).program(body) == HE_PROMPT + "    return sum(a)\n"


def test_finished_matches_what_span_reads() -> None:
    fenced, opened = Prompt("p"), Prompt("p", mode="open_fence")
    assert not fenced.finished("```python\nx = 1\n")
    assert not fenced.finished("```bash\nls\n```\n")
    assert fenced.finished("text\n```python\nx = 1\n```")
    assert opened.finished("x = 1\n```") and not opened.finished("x = 1\n")
    completion = Prompt("p", mode="completion", stop=("\ndef",))
    assert completion.finished("  return 1\ndef") and not completion.finished("  return 1\n")


def test_prompt_templates() -> None:
    chat = FakeChatTokenizer()
    base = build_prompt(mbpp(), "base")
    assert base.mode == "open_fence"
    assert base.text == (
        "You are an expert Python programmer, and here is your task: Write a function to add two numbers. "
        "Your code should pass these tests:\n\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n```python\n"
    )
    text = build_prompt(mbpp(), "chat", chat).text
    assert text.startswith("<system>" + pol.SYSTEM + "</system><user>You are an expert Python programmer")
    assert "assert add(0, 0) == 0" in text and text.endswith("</user><assistant>")
    assert build_prompt(humaneval(), "base").text == HE_PROMPT
    assert build_prompt(apps("stdio"), "base").text == (
        "\nQUESTION:\nEcho a number.\n\nUse Standard Input format\n\nANSWER:\n")
    assert build_prompt(apps("call"), "base").text == (
        "\nQUESTION:\nEcho a number.\nclass Solution:\n    def f(self, x):\n\nUse Call-Based format\n\nANSWER:\n")
    assert "Use Call-Based format" in build_prompt(apps("call"), "chat", chat).text
    assert [family(p) for p in (mbpp(), humaneval(), apps("stdio"))] == ["mbpp", "humaneval", "apps"]
    other = Problem(id="x", source="mbpp-plus", prompt="p", tests={"kind": "assert", "cases": []})
    custom = Problem(id="y", source="mine", prompt="p", tests={"kind": "stdio", "cases": []})
    assert family(other) == "mbpp" and family(custom) == "apps"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Policy:
    return Policy.load(str(make_tiny_model(tmp_path_factory.mktemp("tiny"))))


def test_token_offsets_tile_the_text(tiny: Policy) -> None:
    tok = tiny.tokenizer
    text = "def f():\n\treturn 'é 你好 🙂'\r\n"
    ids = [*tok(text, add_special_tokens=False).input_ids, tok.eos_token_id]
    decoded, spans = token_offsets(tok, ids)
    assert decoded == text and len(spans) == len(ids)
    assert spans[0][0] == 0 and spans[-1] == (len(text), len(text))  # EOS produces no text
    assert all(a[1] == b[0] and a[0] <= a[1] for a, b in itertools.pairwise(spans))


def test_stopping_criterion_records_where_each_row_ended(tiny: Policy) -> None:
    tok = tiny.tokenizer
    ids = tok("```python\nx = 1\n```\nmore", add_special_tokens=False).input_ids
    stopper = pol._StopWhenDone(tok, [Prompt("p")], 0, {tok.eos_token_id})
    for t in range(1, len(ids) + 1):
        if stopper(torch.tensor([ids[:t]]), None).item():
            break
    assert stopper.ended[0][1] == "stop"
    assert tok.decode(ids[: stopper.ended[0][0]]).endswith("```")
    eos = pol._StopWhenDone(tok, [Prompt("p")], 1, {tok.eos_token_id})
    assert eos(torch.tensor([[5, 6, tok.eos_token_id]]), None).item() and eos.ended == [(2, "eos")]


def test_generation_is_seeded_batched_and_consistent(tiny: Policy) -> None:
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=8, seed=7, batch_size=4)
    tiny.model.train()
    first = tiny.generate(prompts, params)
    assert tiny.model.training  # the trainer's mode survives sampling
    again = tiny.generate(prompts, params)
    other = tiny.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=8, batch_size=4))
    assert [len(c) for c in first.completions] == [3, 3]
    assert first.completions == again.completions != other.completions
    assert first.new_tokens == sum(len(c.token_ids) for cs in first.completions for c in cs) > 0
    assert first.tokens_per_s > 0
    for c in (c for cs in first.completions for c in cs):
        assert len(c.offsets) == len(c.token_ids) <= 8
        assert "".join(c.text[a:b] for a, b in c.offsets) == c.text
        assert c.finish_reason in ("stop", "eos", "length")
        assert c.finish_reason != "length" or len(c.token_ids) == 8
    greedy = tiny.generate(prompts, SamplingParams(n=2, temperature=0, max_new_tokens=6))
    assert all(cs[0] == cs[1] for cs in greedy.completions)


def test_greedy_first_rides_a_greedy_row_in_the_sampled_batch(tiny: Policy) -> None:
    prompts = [tiny.prompt(mbpp()), tiny.prompt(humaneval())]
    greedy = tiny.generate(prompts, SamplingParams(n=1, temperature=0, max_new_tokens=12))
    params = SamplingParams(n=4, temperature=1.5, top_p=0.95, max_new_tokens=12, seed=3, batch_size=8,
                            greedy_first=True)
    mixed = tiny.generate(prompts, params)
    assert [cs[0] for cs in mixed.completions] == [cs[0] for cs in greedy.completions]
    sampled = {c.token_ids for cs in mixed.completions for c in cs[1:]}
    assert len(sampled) > 1 and not sampled <= {cs[0].token_ids for cs in greedy.completions}


def test_answer_writes_a_reference_solution_the_way_the_prompt_asks() -> None:
    assert Prompt("q").answer("def f():\n    return 1\n") == "```python\ndef f():\n    return 1\n```"
    assert Prompt("q", mode="open_fence").answer("x = 1\n") == "x = 1\n```"
    assert Prompt("def f():", mode="completion", prefix="def f():").answer("def f():\n  pass") == "\n  pass"


def test_load_errors_are_actionable(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="downloads are off"):
        Policy.load("no-such-org/no-such-model-xyz")


def test_default_checkpoint_converts_once_under_a_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_convert(gguf: Path, out: Path) -> float:
        calls.append(out)
        time.sleep(0.3)  # long enough for the other thread to reach the lock
        (out / "config.json").write_text("{}")
        return 0.0

    monkeypatch.setenv("RLTF_CACHE", str(tmp_path))
    monkeypatch.setattr(pol, "convert_gguf", fake_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(pol.default_checkpoint())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and results[0] == results[1]
    assert results[0].parent == tmp_path / "models" and (results[0] / "config.json").is_file()
    assert [p.name for p in (tmp_path / "models").iterdir() if ".tmp-" in p.name] == []


def test_gguf_conversion_matches_the_gguf_logits(tmp_path: Path) -> None:
    diff = pol.convert_gguf(pol.embedded_gguf(), tmp_path)
    assert diff < 1e-4
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in tmp_path.iterdir()}
    assert "quantization_config" not in (tmp_path / "config.json").read_text()
    converted = Policy.load(str(tmp_path))
    assert converted.style == "chat" and converted.tokenizer.eos_token == "<|im_end|>"
    converted.model.save_pretrained(tmp_path / "resaved")  # a trained policy must be savable
    assert (tmp_path / "resaved" / "model.safetensors").is_file()


def test_encoder_decoder_models_load_and_sample(tiny: Policy, tmp_path: Path) -> None:
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
    completions = codet5.generate([codet5.prompt(apps("stdio"))], SamplingParams(n=2, temperature=1.0,
                                                                                 max_new_tokens=5)).completions[0]
    assert len(completions) == 2 and all(0 < len(c.token_ids) <= 5 for c in completions)
    assert all(c.token_ids[0] != tok.pad_token_id for c in completions)  # decoder start token is not output
