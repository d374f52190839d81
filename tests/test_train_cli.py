from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from typer.testing import CliRunner

from rltf.cli import app
from rltf.config import CONFIG_DIR, ConfigError, TrainConfig, load_config


def test_shipped_configs_load_and_the_default_is_embedded() -> None:
    assert load_config() == TrainConfig() == load_config("smollm2-mbpp-cpu")
    paper = load_config("codet5-apps")
    assert (paper.model.name, paper.optim.lr, paper.buffer.capacity, paper.buffer.update_freq) == \
        ("Salesforce/codet5-large", 2e-6, 6400, 50)
    assert paper.feedback.fine_weight == 0.3 and paper.feedback.adaptive and paper.feedback.baseline == "greedy"
    assert paper.optim.warmup_steps == 500 and 2 * paper.optim.micro_batch * paper.optim.grad_accum == 32
    assert load_config("qwen-coder-mbpp").model.name.startswith("Qwen/")
    assert load_config("tiny-smoke").model.random_init is not None
    default = load_config()
    assert (default.feedback.baseline, default.feedback.overlong, default.rollout.dynamic_sampling,
            default.optim.loss_aggregation, default.optim.rl_weight) == ("grpo", "soft", True, "constant", 8.0)
    published = load_config("rltf-paper")  # the default run with the paper's combination, nothing else
    assert (published.feedback.baseline, published.feedback.overlong, published.rollout.dynamic_sampling,
            published.optim.loss_aggregation, published.optim.rl_weight) == ("greedy", "none", False, "token_mean", 1.0)
    assert dataclasses.replace(published, feedback=default.feedback, rollout=default.rollout,
                               optim=default.optim) == default
    for name in ("codet5-apps", "qwen-coder-mbpp"):  # the GPU configs keep the paper's combination too
        config = load_config(name)
        assert (config.feedback.overlong, config.rollout.dynamic_sampling, config.optim.loss_aggregation,
                config.optim.rl_weight) == ("none", False, "token_mean", 1.0), name


def test_a_section_given_in_part_keeps_the_rest_of_the_run_default(tmp_path: Path) -> None:
    """``FeedbackConfig``'s own defaults are the original's (greedy baseline, no overlong term); a config or
    override that sets one feedback key must not bring them back in place of the run's defaults."""
    partial = tmp_path / "partial.yaml"
    partial.write_text("steps: 2\nfeedback: {fine_weight: 0.5}\njudge: {timeout_s: 2.0}\n")
    config = load_config(str(partial))
    assert (config.feedback.fine_weight, config.feedback.baseline, config.feedback.overlong) == (0.5, "grpo", "soft")
    assert (config.judge.timeout_s, config.judge.workers) == (2.0, TrainConfig().judge.workers)
    assert load_config(str(partial), ["feedback.adaptive=false"]).feedback.baseline == "grpo"


def test_named_configs_ship_in_the_wheel(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path), str(Path(__file__).parents[1])], check=True)
    site = tmp_path / "site"
    zipfile.ZipFile(next(tmp_path.glob("rltf-*.whl"))).extractall(site)
    assert {p.name for p in (site / "rltf" / "configs").glob("*.yaml")} == {p.name for p in CONFIG_DIR.glob("*.yaml")}
    code = "import rltf.config as c; print(c.resolve_config('tiny-smoke')); print(c.load_config('mbpp-rl').steps)"
    shown = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                           capture_output=True, text=True, check=True).stdout.split()
    assert shown == [str(site / "rltf" / "configs" / "tiny-smoke.yaml"), str(load_config("mbpp-rl").steps)]


def test_overrides_are_typed_by_the_dataclass_field() -> None:
    config = load_config("tiny-smoke", ["optim.lr=3e-6", "model.threads=null", "data.split=validation",
                                        "model.lora.target_modules=[q_proj, v_proj]", "rollout.online=false",
                                        "feedback.baseline=none", "steps=7"])
    assert config.optim.lr == 3e-6 and config.model.threads is None and config.data.split == "validation"
    assert config.model.lora.target_modules == ["q_proj", "v_proj"] and not config.rollout.online
    assert config.feedback.baseline == "none" and config.steps == 7


@pytest.mark.parametrize(("override", "message"), [
    ("optim.lrr=1", "unknown config key 'optim.lrr'"),
    ("optim=1", "optim is a section"),
    ("steps=1.5", "steps: expected int"),
    ("rollout.online=maybe", "rollout.online: expected bool"),
    ("feedback.baseline=mean", "'mean' is not one of"),
    ("buffer.capacity=0", "buffer.capacity"),
    ("steps", "not key=value"),
    ("judge.stop_on_first_failure=true", "feedback.adaptive needs every test's result"),
    ("feedback.scale_std=true", "scale_std applies to baseline 'grpo' only"),
    ("optim.autocast=fp8", "optim.autocast: 'fp8' is not one of"),
])
def test_bad_overrides_fail_with_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config("tiny-smoke", [override])


def test_group_estimators_need_a_group() -> None:
    assert load_config("tiny-smoke", ["feedback.baseline=grpo", "feedback.scale_std=true"]).feedback.scale_std
    with pytest.raises(ConfigError, match=r"feedback\.baseline=rloo needs rollout\.samples_per_problem >= 2"):
        load_config("tiny-smoke", ["feedback.baseline=rloo", "rollout.samples_per_problem=1"])


def test_unknown_key_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: 1.0e-5\n  warmup: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) warmup in section 'optim'.*warmup_steps"):
        load_config(str(path))
    runner = CliRunner(env={"COLUMNS": "400"})  # error boxes must not wrap the messages
    result = runner.invoke(app, ["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code != 0 and "warmup" in result.output


def test_train_resume_and_report_commands(tmp_path: Path) -> None:
    out = tmp_path / "run"
    runner = CliRunner(env={"COLUMNS": "400"})  # error boxes must not wrap the messages
    common = ["eval.limit=1", "eval.max_new_tokens=8", "rollout.max_new_tokens=8"]
    result = runner.invoke(app, ["train", "--config", "tiny-smoke", "--out", str(out), "--steps", "1", *common])
    assert result.exit_code == 0, result.output
    assert {"config.yaml", "metrics.jsonl", "checkpoints", "tb", "eval", "plot_rewards.png", "plot_verdicts.png",
            "plot_eval.png", "plot_loss_time.png"} <= {p.name for p in out.iterdir()}
    events = EventAccumulator(str(out / "tb"))  # log.report_to: [tensorboard], the step's metrics by TRL's names
    events.Reload()
    assert {"entropy", "completions/mean_length", "reward", "loss", "eval/pass_at_1"} <= set(events.Tags()["scalars"])
    assert json.loads((out / "eval" / "step-000001" / "summary.json").read_text())["settings"]["temperature"] == 0
    assert load_config(str(out / "config.yaml")).steps == 1

    result = runner.invoke(app, ["train", "--config", "tiny-smoke", "--out", str(out)])
    assert result.exit_code != 0 and "already holds a run" in result.output
    result = runner.invoke(app, ["train", "--config", "tiny-smoke", "--out", str(out), "--resume", "--steps", "2"])
    assert result.exit_code != 0 and "differs from --config tiny-smoke in eval.limit, eval.max_new_tokens, " \
        "rollout.max_new_tokens;" in result.output
    # the same --config (and overrides) as the original run just works
    result = runner.invoke(app, ["train", "--config", "tiny-smoke", "--out", str(out), "--resume", "--steps", "2",
                                 *common])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (out / "eval" / "step-000002" / "summary.json").is_file()
    result = runner.invoke(app, ["train", "--out", str(out), "--resume"])  # `make run` again on a finished run
    assert result.exit_code == 0, result.output
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2 and "eval step 2" in result.output

    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "plot_eval.png" in result.output and "eval step 2" in result.output
    assert (out / "plot_rewards.png").read_bytes().startswith(b"\x89PNG")


def test_sampled_eval_settings() -> None:
    assert load_config(None, ["eval.samples=8", "eval.temperature=0.6"]).eval.samples == 8
    with pytest.raises(ConfigError, match="must be 1 for greedy"):
        load_config(None, ["eval.samples=8"])
    assert load_config("learning-test").optim.sl_weight == 0.0  # the learning test is RL only
    with pytest.raises(ConfigError, match="max_staleness"):
        load_config(None, ["buffer.max_staleness=-1"])


def test_sft_then_rl_from_its_checkpoint(tmp_path: Path) -> None:
    """The warm start: ``rltf sft`` trains on references alone (nothing sampled), and an RL run
    starts from its checkpoint's plain model directory."""
    runner = CliRunner(env={"COLUMNS": "400"})
    sft_dir, rl_dir = tmp_path / "sft", tmp_path / "rl"
    result = runner.invoke(app, ["sft", "--config", "tiny-smoke", "--out", str(sft_dir), "--steps", "2",
                                 "eval.at_end=false"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (sft_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(r["gen_tokens"] == 0 and r["loss_rl"] is None and r["loss_sl"] > 0 for r in records)
    model = sft_dir / "checkpoints" / "step-000002" / "model"
    result = runner.invoke(app, ["train", "--config", "tiny-smoke", "--out", str(rl_dir), "--steps", "1",
                                 "eval.at_end=false", "model.random_init=null", f"model.name={model}"])
    assert result.exit_code == 0, result.output
    assert json.loads((rl_dir / "metrics.jsonl").read_text())["gen_tokens"] > 0
    with pytest.raises(ConfigError, match="samples nothing for the RL term"):
        load_config(None, ["rollout.enabled=false"])
