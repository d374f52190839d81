"""Committed results are gzipped copies of what runs write: every reader takes either, the same way."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from rltf._io import read_jsonl
from rltf.evaluation import per_problem_pass
from rltf.train import read_samples

ROOT = Path(__file__).resolve().parents[1]


def _archive_module():
    spec = importlib.util.spec_from_file_location("archive", ROOT / "experiments" / "archive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sample(pid: str, status: str) -> str:
    return json.dumps({"problem_id": pid, "verdict": {"status": status}, "finish_reason": "stop"}) + "\n"


def test_a_torn_last_line_is_dropped_and_the_gz_copy_reads_the_same(tmp_path: Path) -> None:
    text = _sample("a", "pass") + _sample("a", "fail") + _sample("b", "pass") + '{"problem_id": "b", "verd'
    plain = tmp_path / "plain" / "samples.jsonl"
    plain.parent.mkdir()
    plain.write_text(text)
    packed = tmp_path / "packed" / "samples.jsonl"
    packed.parent.mkdir()
    packed.with_name("samples.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    assert len(read_jsonl(plain)) == 3 and read_jsonl(packed) == read_jsonl(plain)
    assert per_problem_pass(packed) == per_problem_pass(plain) == {"a": 0.5, "b": 1.0}
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_archive_keeps_the_records_gzips_the_samples_and_drops_the_weights(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "x"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "checkpoints" / "step-000002" / "model.safetensors").write_bytes(b"\0" * 64)
    (run / "tb").mkdir()
    (run / "tb" / "events.out").write_bytes(b"\0")
    (run / "eval" / "step-000002").mkdir(parents=True)
    (run / "eval" / "step-000002" / "summary.json").write_text('{"pass_at_k": {"1": 0.5}}\n')
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    (run / "samples.jsonl").write_text(_sample("a", "pass") + _sample("b", "fail"))
    dest = tmp_path / "experiments" / "x"
    written = _archive_module().archive(run, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == [
        "eval/step-000002/summary.json", "metrics.jsonl", "samples.jsonl.gz"]
    assert read_samples(dest) == read_samples(run) and len(read_samples(dest)) == 2
