"""The experiment trackers of ``log.report_to``, each fed a tiny fake metrics stream through the
trainer's own code path (:class:`rltf.train.report.Trackers`) in its offline mode and read back
with the tracker's own reader."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from rltf.config import ConfigError, load_config
from rltf.train.report import TRACKER_NAMES, Trackers, tracker_metrics

SRC = str(Path(__file__).parents[1] / "src")
STEPS = (1, 2, 3)


def _record(step: int) -> dict[str, Any]:
    """A metrics line with every mapped key (so each tracker checks every name), plus what is not a
    scalar: the verdict counts, findings by rule, text, a metric the step did not have."""
    record: dict[str, Any] = {"step": step, **{key: step + i / 100 for i, key in enumerate(TRACKER_NAMES)}}
    record.update(verdicts={"pass": step, "fail": 4 - step}, static_findings={"unused-import": step},
                  engine="hf", learner_dtype="float32", loss_sl=None, new_metric=7 * step)
    return record


def _run(run_dir: Path, tracker: str, step: int = 0, steps: tuple[int, ...] = STEPS) -> None:
    config = load_config("tiny-smoke", [f"log.report_to=[{tracker}]", "optim.lr=0.25"])
    trackers = Trackers.start(config, run_dir, step)
    for s in steps:
        trackers.log(_record(s))
    trackers.log_eval(steps[-1], {"pass_at_k": {"1": 0.5}})
    trackers.finish()


def _expected(step: int) -> dict[str, float]:
    return {"entropy": _record(step)["entropy"], "completions/mean_length": _record(step)["completion_length_mean"]}


def test_metric_names_are_trls_where_the_quantity_is_the_same() -> None:
    scalars = tracker_metrics(_record(1))
    for key, name in [("reward_mean", "reward"), ("reward_fine", "rewards/fine/mean"), ("lr", "learning_rate"),
                      ("completion_length_mean", "completions/mean_length"), ("grad_norm", "grad_norm"),
                      ("completion_truncated_frac", "completions/clipped_ratio"), ("entropy", "entropy"),
                      ("frac_reward_zero_std", "frac_reward_zero_std"), ("loss", "loss")]:
        assert scalars[name] == _record(1)[key], key
    assert scalars["verdicts/pass"] == 0.25 and scalars["verdicts/fail"] == 0.75  # shares of the step's programs
    assert scalars["static_findings/unused-import"] == 1 and scalars["new_metric"] == 7  # unmapped: own name
    assert not {"step", "engine", "learner_dtype", "losses/sl", "loss_sl"} & set(scalars)
    assert len(set(TRACKER_NAMES.values())) == len(TRACKER_NAMES)  # no two metrics on one curve


def test_tensorboard_holds_the_steps_and_a_resume_replaces_what_it_redoes(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(tmp_path, "tensorboard")
    _run(tmp_path, "tensorboard", step=2, steps=(3, 4))  # resumed from step 2: step 3 again, then 4
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"reward", "rewards/fine/mean", "verdicts/pass", "eval/pass_at_1"} <= set(events.Tags()["scalars"])
    for tag in ("entropy", "completions/mean_length"):
        got = [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]
        assert got == [(s, _expected(s)[tag]) for s in (1, 2, 3, 4)], tag
    hparams = list((tmp_path / "tb").glob("*/hparams.yml"))
    assert hparams and "optim.lr: 0.25" in hparams[0].read_text()


def _wandb_records(path: Path) -> list[Any]:
    """The records of a ``.wandb`` file (a LevelDB-style log after a 7-byte header; 32 KiB blocks)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, position, chunk, records = path.read_bytes(), 7, b"", []
    while position + 7 <= len(data):
        if (left := 32768 - position % 32768) < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        length, kind = int.from_bytes(data[position + 4 : position + 6], "little"), data[position + 6]
        chunk += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or a record's last fragment
            records.append(Record.FromString(chunk))
            chunk = b""
    return records


@pytest.mark.parametrize("from_environment", [True, False], ids=["WANDB_MODE-WANDB_DIR", "default"])
def test_wandb_offline_run_holds_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             from_environment: bool) -> None:
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "cache"))
    if from_environment:
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    else:  # nothing configured: offline, under the run directory
        monkeypatch.delenv("WANDB_MODE", raising=False)
        monkeypatch.delenv("WANDB_DIR", raising=False)
    import wandb

    try:
        _run(tmp_path / "run", "wandb")
    finally:  # wandb's service writes the offline log after finish() returns, and keeps the environment it
        wandb.teardown()  # first saw: teardown waits for the one and forgets the other
    where = tmp_path / "elsewhere" if from_environment else tmp_path / "run"
    [log] = where.glob("wandb/offline-run-*/run-*.wandb")
    history: dict[int, dict[str, Any]] = {}
    config = {}
    for record in _wandb_records(log):
        if record.HasField("history"):
            history.setdefault(record.history.step.num, {}).update(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
        if record.HasField("config"):
            config.update({item.key: json.loads(item.value_json) for item in record.config.update})
    for step in STEPS:
        assert {k: history[step][k] for k in _expected(step)} == pytest.approx(_expected(step))
    assert history[3]["eval/pass_at_1"] == 0.5 and history[1]["verdicts/pass"] == 0.25
    assert config["optim.lr"] == 0.25 and config["log.report_to"] == "['wandb']"


def test_mlflow_local_store_under_the_run_holds_the_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _run(tmp_path / "run", "mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("rltf").experiment_id])
    assert run.info.run_name == "run" and run.data.params["optim.lr"] == "0.25"
    for tag in ("entropy", "completions/mean_length"):
        history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, tag)]
        assert sorted(history) == [(s, pytest.approx(_expected(s)[tag])) for s in STEPS], tag
    assert run.data.metrics["eval/pass_at_1"] == 0.5


def test_trackio_local_store_holds_the_metrics(tmp_path: Path) -> None:
    # trackio fixes its store's directory at import: a process of its own
    code = ("import json, sys, test_trackers as t\n"
            "t._run(t.Path(sys.argv[1]), 'trackio')\n"
            "from trackio.sqlite_storage import SQLiteStorage as S\n"
            "t.Path(sys.argv[2]).write_text(json.dumps([S.get_logs('rltf', 'run'), S.get_run_config('rltf', 'run')]))")
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"),
           "PYTHONPATH": os.pathsep.join([SRC, str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run"), str(tmp_path / "read.json")], env=env,
                   capture_output=True, check=True)
    logs, config = json.loads((tmp_path / "read.json").read_text())
    by_step: dict[int, dict[str, Any]] = {}
    for line in logs:
        by_step.setdefault(line["step"], {}).update(line)
    for step in STEPS:
        assert {k: by_step[step][k] for k in _expected(step)} == pytest.approx(_expected(step))
    assert by_step[3]["eval/pass_at_1"] == 0.5 and config["optim.lr"] == 0.25


def test_a_tracker_not_installed_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: ["tensorboard"])
    with pytest.raises(ImportError, match=r"log\.report_to names mlflow, not installed: pip install mlflow"):
        Trackers.start(load_config("tiny-smoke", ["log.report_to=[tensorboard, mlflow]"]), tmp_path)
    assert not (tmp_path / "tb").exists()  # nothing started


def test_report_to_and_the_tensorboard_switch_it_replaced(tmp_path: Path) -> None:
    assert load_config().log.report_to == ["tensorboard"]
    assert load_config("tiny-smoke", ["log.report_to=[wandb, mlflow]"]).log.report_to == ["wandb", "mlflow"]
    with pytest.raises(ConfigError, match=r"log\.report_to\[1\]: 'comet' is not one of"):
        load_config("tiny-smoke", ["log.report_to=[wandb, comet]"])
    # a run saved before report_to (its config.yaml says log.tensorboard) loads and resumes as it ran
    saved = tmp_path / "config.yaml"
    saved.write_text("steps: 3\nlog:\n  tensorboard: false\n  progress: false\n")
    assert load_config(str(saved)).log.report_to == []
    saved.write_text("log:\n  tensorboard: true\n  report_to: [wandb]\n")
    assert load_config(str(saved)).log.report_to == ["tensorboard", "wandb"]
    assert load_config("tiny-smoke", ["log.tensorboard=false"]).log.report_to == []  # the old override
    assert load_config("tiny-smoke", ["log.report_to=[tensorboard, trackio]", "log.tensorboard=false"]) \
        .log.report_to == ["trackio"]
    with pytest.raises(ConfigError, match=r"log\.tensorboard: expected bool"):
        load_config("tiny-smoke", ["log.tensorboard=sometimes"])
