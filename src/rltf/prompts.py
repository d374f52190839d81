"""Prompts and programs: what the model sees for a problem, and how a program is read out of its answer.

Fine-grained rewards map judge results on program lines back to generated tokens, so the mapping
program characters -> completion characters (:class:`ProgramSpan`) is exact by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from rltf.feedback import ProgramSpan
from rltf.problems import Problem

Style = Literal["chat", "base"]
Mode = Literal["fenced", "open_fence", "completion"]
FENCE = "```"
PYTHON_TAGS = ("", "python", "py", "python3")

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

    def finished_by(self, completion: str, added: int) -> bool:
        """:meth:`finished` for a completion that was unfinished ``added`` characters ago.

        Only text that could complete a stop string or a fence is looked at again, so checking
        after every generated token costs O(token) instead of O(completion).
        """
        if not added:
            return False
        if self.mode == "completion":
            longest = max(map(len, self.stop), default=0)
            tail = completion[-(added + longest - 1):] if longest > 1 else completion[-added:]
            return any(s in tail for s in self.stop)
        if "`" not in completion[-(added + len(FENCE) - 1):]:
            return False
        return self.finished(completion)

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
    shown = problem.shown_tests if problem.shown_tests is not None else problem.tests["cases"]
    return MBPP_TEMPLATE.format(text=problem.prompt.strip(), tests="\n".join(shown))


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


def user_prompt(problem: Problem, style: Style) -> Prompt:
    """The prompt before a chat template wraps it (for trainers that apply the template
    themselves, such as TRL), with the same rules for reading a program out of a completion."""
    return TEMPLATES[(family(problem), style)](problem)


def build_prompt(problem: Problem, style: Style, tokenizer: Any = None) -> Prompt:
    prompt = user_prompt(problem, style)
    if style == "chat":
        prompt = replace(prompt, text=render_chat(tokenizer, SYSTEM, prompt.text))
    return prompt
