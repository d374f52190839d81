"""The CLI's user errors: one line on stderr, exit status 2, no traceback, before any long work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args, get_type_hints

import pytest
from typer.testing import CliRunner

from rltf import cli
from rltf.cli import app
from rltf.datasets import load_dataset

EXAMPLES = Path(__file__).parents[1] / "examples"
PROBLEMS = str(EXAMPLES / "problems.jsonl")
RUNNER = CliRunner(env={"COLUMNS": "40"})  # a narrow terminal: the error line must still be one line


def one_line_error(args: list[str]) -> str:
    """Run ``rltf ARGS``; it must fail as a usage error: exit status 2 and one line on stderr."""
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # not an uncaught exception (its traceback)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def run_rltf(args: list[str], prelude: str = "", cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``rltf ARGS`` in a fresh interpreter after ``prelude``; prints the exit status and whether torch
    or transformers were imported."""
    code = (f"import sys\n{prelude}\nfrom rltf.cli import main\nsys.argv = ['rltf', *{args!r}]\n"
            "try:\n    main()\nexcept SystemExit as exc:\n"
            "    print(exc.code, sorted({'torch', 'transformers'} & set(sys.modules)))\n")
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=120)


def test_a_missing_program_file() -> None:
    for command in ("judge", "explain"):
        line = one_line_error([command, "--problems", PROBLEMS, "--problem-id", "example/add",
                               "--program-file", "no-such.py"])
        assert "--program-file" in line and "no-such.py" in line and "does not exist" in line


def test_the_readme_example_creates_the_output_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a fresh checkout: no runs/
    result = CliRunner().invoke(app, ["judge", "--problems", PROBLEMS, "--programs", str(EXAMPLES / "programs.jsonl"),
                                      "--out", "runs/example-verdicts.jsonl", "--timeout", "1", "--workers", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "runs" / "example-verdicts.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and rows[0]["verdict"]["status"] == "pass"


def test_an_unwritable_output_fails_before_judging(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = one_line_error(["judge", "--problems", PROBLEMS, "--programs", str(EXAMPLES / "programs.jsonl"),
                           "--out", str(blocker / "runs" / "v.jsonl")])
    assert "--out" in line and f"cannot create the folder {blocker / 'runs'}" in line  # nothing was judged
    line = one_line_error(["eval", "--dataset", "mbpp", "--limit", "1", "--samples", str(EXAMPLES / "programs.jsonl"),
                           "--out", str(blocker / "eval")])
    assert "--out" in line and "cannot create the folder" in line


def test_bad_splits_datasets_and_problem_sources(tmp_path: Path) -> None:
    line = one_line_error(["eval", "--split", "bogus", "--out", str(tmp_path / "a")])
    assert "--split" in line and "'bogus' is not one of" in line and "'test'" in line
    line = one_line_error(["eval", "--dataset", "humaneval", "--split", "train", "--out", str(tmp_path / "b")])
    assert "humaneval has no split 'train' (splits: test)" in line
    assert "unknown dataset 'nope'" in one_line_error(["data", "verify", "nope"])
    assert "give --problems FILE or --dataset NAME" in one_line_error(
        ["judge", "--problems", PROBLEMS, "--dataset", "mbpp", "--problem-id", "x", "--program-file", PROBLEMS])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing created for a failed run


def test_bad_models(tmp_path: Path) -> None:
    line = one_line_error(["eval", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "out")])
    assert "--model" in line and "no-such-model does not exist" in line
    line = one_line_error(["eval", "--model", "no-such-model", "--out", str(tmp_path / "out")])
    assert "no model 'no-such-model'" in line and "local cache" in line
    line = one_line_error(["explain", "--problems", PROBLEMS, "--problem-id", "example/add", "--program-file",
                           PROBLEMS, "--model", "no-such-model"])
    assert "--model" in line and "no model 'no-such-model'" in line
    line = one_line_error(["train", "--config", "tiny-smoke", "model.name=./no-such-model",
                           "--out", str(tmp_path / "run")])
    assert "model.name" in line and "no-such-model does not exist" in line
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_bad_lists(tmp_path: Path) -> None:
    for k in ("1,x", ","):
        line = one_line_error(["eval", "--k", k, "--out", str(tmp_path / "out")])
        assert "--k" in line and f"{k!r} is not a comma-separated list of integers" in line
    assert "every k must be <= n=2" in one_line_error(["eval", "--n", "2", "--k", "1,5", "--out", str(tmp_path)])


def test_override_errors_name_the_command_line_and_the_nearest_key() -> None:
    line = one_line_error(["train", "--config", "tiny-smoke", "optim.lrr=1"])
    assert line == "Error: command line: unknown config key 'optim.lrr'; did you mean optim.lr?"
    line = one_line_error(["sft", "--config", "tiny-smoke", "threads=1"])
    assert line == "Error: command line: unknown config key 'threads'; did you mean model.threads or engine.threads?"
    assert one_line_error(["train", "steps=1.5"]) == "Error: command line: steps: expected int, got 1.5"


def test_the_config_is_checked_before_torch_is_imported(tmp_path: Path) -> None:
    run = run_rltf(["train", "--config", "tiny-smoke", "--out", str(tmp_path / "run"), "optim.lrr=1"])
    assert run.stdout.split("\n")[0] == "2 []"  # exit status 2, and neither torch nor transformers imported
    assert run.stderr == "Error: command line: unknown config key 'optim.lrr'; did you mean optim.lr?\n"


@pytest.mark.parametrize("module", ["torch", "transformers"])
def test_a_missing_extra_names_it(module: str, tmp_path: Path) -> None:
    run = run_rltf(["train", "--config", "tiny-smoke", "--out", str(tmp_path / "run")],
                   prelude=f"sys.modules[{module!r}] = None  # as if not installed")
    assert run.stdout.startswith("2 ")
    assert run.stderr == f"Error: rltf train needs {module}: pip install 'rltf[train]'\n"


def test_choices_show_in_help_and_match_the_library() -> None:
    from rltf.evaluation import EXPORTS, PRESETS
    from rltf.generation import ENGINES
    from rltf.judge import JudgeConfig
    from rltf.train import CONFIG

    assert get_args(cli.EngineName) == ENGINES and get_args(cli.Export) == EXPORTS
    assert set(get_args(cli.Preset)) == set(PRESETS)
    assert get_args(cli.JudgeBackend) == get_args(get_type_hints(JudgeConfig)["backend"])
    assert cli.RUN_CONFIG == CONFIG
    shown = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["eval", "--help"]).stdout
    assert "<auto|hf|ct2|llamacpp>" in shown and "<heldout|prompt|test|train|validation|all>" in shown
    assert "<original|extra|all>" in CliRunner(env={"COLUMNS": "300"}).invoke(app, ["judge", "--help"]).stdout


def test_judge_and_explain_take_a_dataset(tmp_path: Path) -> None:
    problem = load_dataset("mbpp", "test")[0]
    program = tmp_path / "solution.py"
    program.write_text(problem.solutions[0])
    result = CliRunner().invoke(app, ["judge", "--dataset", "mbpp", "--split", "test", "--problem-id", problem.id,
                                      "--program-file", str(program)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "pass"
    result = CliRunner().invoke(app, ["explain", "--dataset", "mbpp", "--problem-id", problem.id,
                                      "--program-file", str(program), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["verdict"]["status"] == "pass"
