from __future__ import annotations

import pytest

from rltf import prompts as pr
from rltf.feedback import ProgramSpan
from rltf.problems import Problem
from rltf.prompts import Prompt, build_prompt, code_span, family

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
    assert text.startswith("<system>" + pr.SYSTEM + "</system><user>You are an expert Python programmer")
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


def test_answer_writes_a_reference_solution_the_way_the_prompt_asks() -> None:
    assert Prompt("q").answer("def f():\n    return 1\n") == "```python\ndef f():\n    return 1\n```"
    assert Prompt("q", mode="open_fence").answer("x = 1\n") == "x = 1\n```"
    assert Prompt("def f():", mode="completion", prefix="def f():").answer("def f():\n  pass") == "\n  pass"


@pytest.mark.parametrize("prompt", [Prompt("p"), Prompt("p", mode="open_fence"),
                                    Prompt("p", mode="completion", stop=("\ndef", "\nclass", "#"))])
def test_incremental_finished_agrees_with_the_full_check(prompt: Prompt) -> None:
    text = "Sure:\n```python\nx = 1  # c\n```\nmore\ndef g():\n```\nclass"
    for cut in range(1, len(text) + 1):
        for added in range(1, 4):
            before = text[: max(0, cut - added)]
            if prompt.finished(before):
                continue
            assert prompt.finished_by(text[:cut], min(added, cut)) == prompt.finished(text[:cut]), (cut, added)
