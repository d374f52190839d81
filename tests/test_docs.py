"""The README and the docs against the code: their commands, their config keys, their links and the site's build.

Every line of a ``bash`` code block in README.md and docs/ that calls ``rltf`` (or ``-m rltf.cli``) must parse
against the real CLI: click builds the command's context from the arguments, so an unknown option, a bad
choice or a missing input file fails, and a training command's overrides must load as a config. Blocks with
``<!-- run -->`` on the line before them are run, in document order (README, then docs/ by path), in one
scratch folder that holds a copy of ``examples/`` and links to ``benchmarks/``, ``experiments/`` and ``src/``:
bash blocks with ``rltf`` as this checkout's CLI, python blocks with this interpreter. Commands are parsed in
that folder after the runs, so they may name files a run block wrote. ``text`` blocks (an error shown on
purpose, a config fragment) are neither.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache, reduce
from pathlib import Path

import pytest
import typer
from markdown.extensions.toc import slugify
from typer.core import TyperGroup

import rltf
from rltf.ablation.report import headline
from rltf.cli import app
from rltf.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
RUN_MARK = "<!-- run -->"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SHELL_OPERATORS = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    body: str
    run: bool

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def code_blocks() -> list[Block]:
    blocks = []
    for path in PAGES:
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            blocks.append(Block(str(path.relative_to(REPO)), text.count("\n", 0, match.start()) + 1,
                                match[1], match[2], before.strip() == RUN_MARK))
    return blocks


@dataclass(frozen=True)
class Command:
    where: str
    text: str
    args: tuple[str, ...]


def rltf_commands(block: Block) -> list[Command]:
    """The ``rltf`` invocations of a shell block: continuation lines joined, comments, leading environment
    assignments and anything after a shell operator dropped."""
    commands = []
    for offset, line in enumerate(block.body.replace("\\\n", " ").splitlines(), start=1):
        tokens = shlex.split(line, comments=True)
        while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
            tokens = tokens[1:]
        cut = next((i for i, token in enumerate(tokens) if token in SHELL_OPERATORS), len(tokens))
        tokens = tokens[:cut]
        if tokens[:1] == ["rltf"]:
            args = tokens[1:]
        elif "rltf.cli" in tokens and tokens[tokens.index("rltf.cli") - 1] == "-m":
            args = tokens[tokens.index("rltf.cli") + 1:]
        else:
            continue
        commands.append(Command(f"{block.page}:{block.line + offset}", line.strip(), tuple(args)))
    return commands


BLOCKS = code_blocks()
SHELL_BLOCKS = [b for b in BLOCKS if b.lang == "bash"]
COMMANDS = [c for b in SHELL_BLOCKS for c in rltf_commands(b)]
RUN_BLOCKS = [b for b in BLOCKS if b.run]


class UnknownCommand(typer.TyperException):
    pass


def parse(args: tuple[str, ...]) -> typer.Context:
    """The context ``rltf ARGS`` would run with (typer's own click): every group level resolved, then the
    command's ``make_context`` with strict parsing."""
    command = typer.main.get_command(app)
    parent, name, rest = None, "rltf", list(args)
    while isinstance(command, TyperGroup) and rest and not rest[0].startswith("-"):
        parent = typer.Context(command, info_name=name, parent=parent)
        name, rest = rest[0], rest[1:]
        sub = command.get_command(parent, name)
        if sub is None:
            raise UnknownCommand(f"no command {name!r} in {parent.command_path}")
        command = sub
    return command.make_context(name, rest, parent=parent, resilient_parsing=False)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, subprocess.CompletedProcess]]:
    """The folder the blocks run in, and each run block's result by its place."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(REPO / "examples", root / "examples")
    for name in ("benchmarks", "experiments", "src"):
        (root / name).symlink_to(REPO / name)
    bin_dir = root / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "rltf"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rltf.cli "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(Path(rltf.__file__).resolve().parents[1]), "COLUMNS": "120"}
    results = {}
    for block in RUN_BLOCKS:
        command = ["bash", "-e", "-o", "pipefail", "-c", block.body] if block.lang == "bash" \
            else [sys.executable, "-c", block.body]
        results[block.where] = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                                              timeout=120)
    return root, results


def test_the_docs_have_commands_and_runnable_blocks() -> None:
    assert {b.lang for b in RUN_BLOCKS} == {"bash", "python"}
    assert {c.where.split(":")[0] for c in COMMANDS} >= {"README.md", "docs/quickstart.md", "docs/training.md"}
    assert all(b.lang in ("bash", "python", "text", "bibtex") for b in BLOCKS), \
        "a code block needs one of the languages this test knows"


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.where for b in RUN_BLOCKS])
def test_a_marked_block_runs(block: Block, scratch: tuple[Path, dict[str, subprocess.CompletedProcess]]) -> None:
    result = scratch[1][block.where]
    assert result.returncode == 0, f"{block.where} failed:\n{result.stdout}\n{result.stderr}"


def test_the_run_blocks_did_what_they_say(scratch: tuple[Path, dict[str, subprocess.CompletedProcess]]) -> None:
    root, results = scratch
    verdicts = (root / "runs" / "example-verdicts.jsonl").read_text().splitlines()
    assert len(verdicts) == 9
    outputs = "".join(r.stdout for r in results.values())
    assert '"failure": {"test": "assert add(1, 2) == 3", "expected": "3", "actual": "-1"}' in outputs
    assert "mbpp-augmented" in outputs  # rltf data list


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_a_documented_command_parses(command: Command, scratch: tuple[Path, dict],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(scratch[0])
    try:
        ctx = parse(command.args)
    except typer.Exit as exc:  # --help prints the help and exits 0
        assert exc.exit_code == 0, command.text
        return
    except typer.TyperException as exc:
        pytest.fail(f"{command.where}: `{command.text}` does not parse: {exc}")
    if ctx.info_name in ("train", "sft"):
        sft = ["rollout.enabled=false", "optim.rl_weight=0"] if ctx.info_name == "sft" else []
        steps = [f"steps={ctx.params['steps']}"] if ctx.params["steps"] is not None else []
        try:
            load_config(ctx.params["config"], [*sft, *(ctx.params["overrides"] or []), *steps])
        except ConfigError as exc:
            pytest.fail(f"{command.where}: `{command.text}`: {exc}")


def test_a_bad_command_fails_to_parse() -> None:
    """What the parse test relies on: typos, bad choices and missing files are errors, not ignored."""
    for args in (["judge", "--problem", "examples/problems.jsonl"], ["eval", "--engine", "vllm", "--out", "x"],
                 ["judge", "--problems", "no-such.jsonl"], ["data", "lst"]):
        with pytest.raises(typer.TyperException):
            parse(tuple(args))


@cache
def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def leaf_keys() -> dict[str, object]:
    return {key.key: key for _, _, keys in hooks().config_sections() for key in keys}


def test_the_config_reference_has_every_key_with_its_type_default_and_doc() -> None:
    from rltf.config import TrainConfig, _leaf_keys, apply_overrides, from_dict

    keys = leaf_keys()
    assert sorted(keys) == sorted(_leaf_keys(TrainConfig))
    for key in keys.values():  # each default, as the page writes it, reads back as the default
        config = from_dict(apply_overrides({}, [f"{key.key}={key.default}"]))
        assert reduce(getattr, key.key.split("."), config) == reduce(getattr, key.key.split("."), TrainConfig())
    lr, kl, workers = keys["optim.lr"], keys["optim.kl_coef"], keys["judge.workers"]
    isolation = keys["judge.isolation"]
    assert (lr.type, lr.default, lr.doc) == ("float", "1e-05", "AdamW's learning rate.")
    assert "k3" in kl.doc and kl.default == "0.0"
    assert workers.default == "2"  # TrainConfig's judge, not JudgeConfig's one-per-core default
    assert isolation.type == "auto | namespaces | rlimits" and "warning" in isolation.doc
    assert keys["feedback.fine_weight"].doc == "λ"  # the comment on the field's line when there is no docstring
    page = hooks().config_reference()
    assert "| `optim.loss_aggregation` | token_mean \\| seq_mean \\| global_token_mean \\| constant |" in page
    assert ":func:" not in page and "``" not in page


SECTION = re.compile(r"`((?:model|data|rollout|feedback|engine|judge|buffer|optim|checkpoint|eval|log|distributed)"
                     r"\.[a-z_.]*[a-z_])(?:[=:][^`]*)?`")


def test_every_config_key_the_docs_name_exists() -> None:
    keys = set(leaf_keys())
    sections = {key.rsplit(".", 1)[0] for key in keys}
    fence = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
    unknown = {f"{path.name}: {name}" for path in PAGES
               for name in SECTION.findall(fence.sub("", path.read_text(encoding="utf-8")))
               if name not in keys and name not in sections}
    assert not unknown, sorted(unknown)


def test_links_into_the_repository_are_checked_and_point_at_repo_url(caplog: pytest.LogCaptureFixture) -> None:
    docs = REPO / "docs"
    markdown = "[manifest](../experiments/MANIFEST.md#x), [runs](../experiments/train-runs/), [gone](../no-such.md)\n" \
               "```\n[in code](../no-such.md)\n```\n[page](judge.md) [web](https://example.org)"
    rewritten = hooks().repo_links(markdown, docs, docs, "https://github.com/o/rltf/", "x.md")
    assert "[manifest](https://github.com/o/rltf/blob/HEAD/experiments/MANIFEST.md)" in rewritten
    assert "[runs](https://github.com/o/rltf/tree/HEAD/experiments/train-runs)" in rewritten
    assert "[in code](../no-such.md)" in rewritten and "[page](judge.md) [web](https://example.org)" in rewritten
    assert [r.getMessage() for r in caplog.records] == [
        "x.md links to ../no-such.md, which is not a file of the repository"]
    assert hooks().repo_links("[manifest](../experiments/MANIFEST.md)", docs, docs, None, "x.md") == "manifest"


def test_the_readme_links_resolve() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", BLOCK.sub("", text)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        path = path or "README.md"  # an anchor of the README itself
        assert (REPO / path).exists(), target
        if anchor:
            headings = re.findall(r"^#+ (.+)$", (REPO / path).read_text(encoding="utf-8"), re.MULTILINE)
            assert anchor in {slugify(h, "-") for h in headings}, target


def test_the_docs_build_strict(tmp_path: Path) -> None:
    """``mkdocs build --strict``: a broken link or anchor, a page left out of the nav, a docstring mkdocstrings
    cannot render or a link into the repository that names no file fails it."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config as load_mkdocs

    build(load_mkdocs(str(REPO / "mkdocs.yml"), strict=True, site_dir=str(tmp_path)))
    config_page = (tmp_path / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert all(f"<code>{key}</code>" in config_page for key in leaf_keys())
    assert "rltf.judge.Judge" in (tmp_path / "reference" / "api" / "index.html").read_text(encoding="utf-8")


HEADLINE = re.compile(r"^ *<!-- headline of (\S+) -->\n(.*?)^ *<!-- end of headline -->$", re.MULTILINE | re.DOTALL)


def test_the_readme_ablation_tables_are_the_reports() -> None:
    """A table the README quotes from an ablation is the report's headline of the committed summary, so a
    reader re-derives it with ``rltf ablate SPEC --out DIR --report`` and no number is typed by hand."""
    quoted = HEADLINE.findall((REPO / "README.md").read_text(encoding="utf-8"))
    assert quoted, "the README quotes no ablation table"
    for source, table in quoted:
        summary = json.loads((REPO / source).read_text(encoding="utf-8"))
        assert [line.strip() for line in table.splitlines()] == headline(summary), source
