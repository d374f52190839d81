"""The canonical problem record: validation, JSONL round trip, errors that name file and line."""

import pytest

from rltf.problems import Problem, ProblemFormatError, load_problems, save_problems

RECORD = {"id": "p1", "source": "t", "prompt": "add", "entry_point": "add",
          "tests": {"kind": "assert", "setup": "", "cases": ["assert add(1, 2) == 3"]}}


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_round_trip_and_reproducible_gzip(tmp_path, suffix):
    problems = [Problem.from_dict(RECORD), Problem.from_dict({**RECORD, "id": "p2", "difficulty": "interview"}),
                Problem.from_dict({**RECORD, "id": "p3", "shown_tests": ["assert add(0, 0) == 0"]})]
    assert "shown_tests" not in problems[0].to_dict()
    assert problems[2].to_dict()["shown_tests"] == ["assert add(0, 0) == 0"]
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    save_problems(problems, first)
    save_problems(problems, second)
    assert load_problems(first) == problems
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "malformed JSON"),
        ('{"id": "x", "prompt": "", "tests": {"kind": "docker", "cases": []}}', "unknown test kind 'docker'"),
        ('{"id": "x", "prompt": ""}', "missing key 'tests'"),
        ('{"id": "x", "prompt": "", "tests": {"kind": "stdio", "cases": [{"input": 1}]}}', "stdio case 0"),
        ('{"id": "x", "prompt": "", "tests": {"kind": "call", "cases": []}}', "fn_name"),
        ('{"id": "x", "prompt": "", "extra": 1, "tests": {"kind": "assert", "cases": []}}', "unknown keys"),
        ('{"id": "x", "prompt": "", "shown_tests": "assert f()", "tests": {"kind": "assert", "cases": []}}',
         "'shown_tests' must be a list of strings"),
    ],
)
def test_malformed_records_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "ok", "prompt": "", "tests": {"kind": "assert", "cases": []}}\n\n' + line + "\n")
    with pytest.raises(ProblemFormatError) as info:
        load_problems(path)
    assert f"{path}:3:" in str(info.value) and message in str(info.value)
