"""Data-parallel and sharded training: 2 CPU ranks (gloo) under accelerate's launcher, replicated
(DDP) or sharded (FSDP2), take the steps that one process takes with twice the micro-batches, and a
rank killed with SIGKILL stops the run, which ``--resume`` then finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import yaml

from rltf.config import load_config
from rltf.train import Trainer, read_metrics
from rltf.train.checkpoint import latest_checkpoint
from rltf.train.distributed import Ranks, launch_command

STEPS = 3
OVERRIDES = [f"steps={STEPS}", "log.tensorboard=false", "log.progress=false", "eval.at_end=false",
             "engine.name=llamacpp", "engine.compute_type=float32", "engine.workers=1", "model.threads=1",
             "judge.workers=1", "rollout.problems_per_step=4", "buffer.capacity=16", "optim.micro_batch=2",
             "model.random_init={hidden_size: 32, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4, "
             "num_key_value_heads: 2, max_position_embeddings: 2048, initializer_range: 1.0}"]
"""llama.cpp seeds each row by (seed, problem, row), so a rank's half of the step's problems draws the
rows the whole call draws in one process (HF's sampling depends on the batch). A wide initialisation
makes the random model's next-token distributions peaked: near-uniform ones (the default 0.02) turn
float rounding, which depends on how many rows llama.cpp decodes together, into other sampled tokens."""

TOLERANCE = 3e-4
"""Largest parameter difference allowed after 3 steps at lr 1e-3, against 3.7e-3 moved from the initial
weights. A rank packs its own share of the step's sequences, one process all of them, so the gradient
sums in another order (float rounding, 2e-6 relative in step 1's gradient norm); Adam's sign-like
first steps amplify that on this wide-initialised model: one process, the same step with and without
shared prompts, ends 1.1e-4 apart (2 ranks against one process: 1.2e-4 with DDP). Before packing,
when both ran the same micro-batches, it was 5.2e-6."""


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(latest_checkpoint(run_dir) / "model" / "model.safetensors"))


def _launch(run_dir: Path, marker: str, *extra: str) -> subprocess.Popen[bytes]:
    """``rltf train --num-processes 2`` with grad_accum 1 per rank; ``marker`` tags its processes."""
    return subprocess.Popen([sys.executable, "-m", "rltf.cli", "train", "--config", "tiny-smoke", "--out", str(run_dir),
                             *OVERRIDES, "optim.grad_accum=1", "--num-processes", "2", *extra],
                            env={**os.environ, "RLTF_TEST_RUN": marker}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _tagged(marker: str) -> dict[int, dict[str, str]]:
    """Live processes carrying ``marker`` in their environment, with that environment."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            raw = (entry / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
        if env.get("RLTF_TEST_RUN") == marker and entry.name.isdigit():
            found[int(entry.name)] = env
    return found


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: one process, grad_accum 2 (the 2-rank run's global batch)."""
    run_dir = tmp_path_factory.mktemp("one")
    config = load_config("tiny-smoke", [*OVERRIDES, "optim.grad_accum=2"])
    assert Trainer(config, run_dir, show_progress=False).run() == STEPS
    return run_dir


def _assert_same_run(reference: Path, run_dir: Path) -> float:
    ours, theirs = read_metrics(reference), read_metrics(run_dir)
    assert [r["step"] for r in theirs] == list(range(1, STEPS + 1))
    for a, b in zip(ours, theirs):
        for key in ("verdicts", "samples_new", "gen_tokens", "buffer_size", "reward_mean", "staleness_mean"):
            assert a[key] == b[key], (a["step"], key)
        # tokens fed are a cost, not the update: one process shares a prompt across the whole step, a rank its share
        assert b["train_tokens"] >= a["train_tokens"]
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4, abs=1e-6)
        # packed micro-batches sum in another order on 2 ranks; the wide initialisation amplifies that rounding
        # step by step (one process, shared against unshared prompts: 2e-6, 6e-5, 2e-4 relative at steps 1-3)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5 if a["step"] == 1 else 1e-3)
    a, b = _params(reference), _params(run_dir)
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= TOLERANCE, worst
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["distributed.fsdp=true"]], ids=["ddp", "fsdp"])
def test_two_ranks_take_the_steps_of_one_process_and_a_killed_rank_stops_the_run(one_process: Path, tmp_path: Path,
                                                                                 mode: list[str]) -> None:
    """One 2-rank run, killed after its first checkpoint and resumed, ends where one process with
    twice the micro-batches ends (one launch pair for both claims: each costs a minute on CI). Under
    FSDP the resume also restores the sharded optimizer state from the checkpoint's whole one."""
    run_dir, marker = tmp_path / "run", uuid.uuid4().hex
    run = _launch(run_dir, marker, *mode)
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "step-000001").is_dir():
        assert run.poll() is None and time.monotonic() < deadline, "the run never reached its first checkpoint"
        time.sleep(0.2)
    ranks = {int(env["RANK"]): pid for pid, env in _tagged(marker).items() if "RANK" in env and "LOCAL_RANK" in env}
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    run.communicate(timeout=120)
    assert run.returncode != 0  # the launcher reports the failure ...
    deadline = time.monotonic() + 30
    while _tagged(marker) and time.monotonic() < deadline:  # ... and stops rank 0
        time.sleep(0.2)
    assert not _tagged(marker)
    stopped_at = int(latest_checkpoint(run_dir).name.split("-")[1])
    assert 1 <= stopped_at < STEPS

    resumed = _launch(run_dir, marker, *mode, "--resume")
    output = resumed.communicate(timeout=600)[0].decode()
    assert resumed.returncode == 0, output[-3000:]
    assert _assert_same_run(one_process, run_dir) <= TOLERANCE
    first = read_metrics(run_dir)[0]
    assert sum(first["verdicts"].values()) == 4 * 2  # both ranks' programs reached rank 0's metrics


@pytest.mark.slow
def test_resume_with_another_number_of_processes_is_refused(one_process: Path, tmp_path: Path) -> None:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(one_process, run_dir)
    state = latest_checkpoint(run_dir) / "trainer.pt"
    saved = torch.load(state, weights_only=True)
    torch.save({**saved, "processes": 2}, state)
    with pytest.raises(ValueError, match="2 processes"):
        Trainer(load_config(str(run_dir / "config.yaml")), run_dir, resume=True, show_progress=False)


@pytest.mark.parametrize(("name", "kind", "machines", "processes"),
                         [("multi-gpu", "MULTI_GPU", 1, 8), ("multi-node", "MULTI_GPU", 2, 16), ("fsdp", "FSDP", 1, 8)])
def test_example_accelerate_configs_are_valid(name: str, kind: str, machines: int, processes: int) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    root = Path(__file__).resolve().parents[1]
    config = load_config_from_file(str(root / "examples" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type == DistributedType[kind] and config.mixed_precision == "no"
    assert (config.num_machines, config.num_processes) == (machines, processes)
    if kind == "FSDP":  # what rltf reads from the launcher (launcher_fsdp)
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_reshard_after_forward"] is True


def _as_accelerate_resolves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, configured: dict | None) -> tuple:
    """``rltf train --num-processes 2``'s launch command, and what accelerate's own parser and config
    resolution make of it with ``configured`` as the user's accelerate config file (None: no file)."""
    from accelerate.commands import launch
    from accelerate.commands.config import config_args

    path = tmp_path / "default_config.yaml"
    if configured is not None:
        path.write_text(yaml.safe_dump(configured))
    monkeypatch.setattr(config_args, "default_config_file", str(path))
    monkeypatch.setattr(launch, "default_config_file", str(path))
    argv = launch_command(2, ["train", "--out", "run"], port=4321)
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    args, _, _ = launch._validate_launch_command(launch.launch_command_parser().parse_args(argv[3:]))
    assert (args.module, args.training_script) == (True, "rltf.cli")
    assert args.training_script_args == ["train", "--out", "run"]
    assert args.num_processes == 2  # what the user asked for, over the config's
    return argv[3:], args


def test_the_launcher_without_an_accelerate_config_starts_ranks_on_any_device(monkeypatch: pytest.MonkeyPatch,
                                                                               tmp_path: Path) -> None:
    flags, args = _as_accelerate_resolves(monkeypatch, tmp_path, None)
    assert "--multi_gpu" in flags  # torchrun: CPU ranks as well as GPU ones
    assert (args.multi_gpu, args.mixed_precision, args.main_process_port, args.num_machines) == (True, "no", 4321, 1)


def test_the_launcher_keeps_the_users_accelerate_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fsdp = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "FSDP", "num_processes": 8,
            "mixed_precision": "bf16", "main_process_port": 29511, "num_machines": 1, "dynamo_config": {},
            "fsdp_config": {"fsdp_version": 2, "fsdp_reshard_after_forward": False}}
    flags, args = _as_accelerate_resolves(monkeypatch, tmp_path, fsdp)
    assert not {"--multi_gpu", "--mixed_precision", "--main_process_port", "--dynamo_backend"} & set(flags)
    assert (args.use_fsdp, args.multi_gpu, args.mixed_precision, args.main_process_port) == (True, False, "bf16", 29511)
    assert str(args.fsdp_version) == "2"
    # a single-process config (what `accelerate config` writes for one GPU) would start one rank: --multi_gpu
    single = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "NO", "mixed_precision": "fp16"}
    flags, args = _as_accelerate_resolves(monkeypatch, tmp_path, single)
    assert "--multi_gpu" in flags and "--mixed_precision" not in flags
    assert (args.multi_gpu, args.mixed_precision, args.main_process_port) == (True, "fp16", 4321)


def test_model_device_auto_trains_on_the_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config("tiny-smoke", OVERRIDES)
    assert config.model.device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ranks = Ranks(config)
    assert (ranks.load_device, ranks.accelerator.device.type) == ("cpu", "cpu")


def test_deepspeed_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import accelerate
    from accelerate.utils import DistributedType

    class DeepSpeed(accelerate.Accelerator):
        distributed_type = DistributedType.DEEPSPEED  # what a DeepSpeed accelerate config gives

    monkeypatch.setattr(accelerate, "Accelerator", DeepSpeed)
    with pytest.raises(ValueError, match=r"DEEPSPEED; rltf trains data-parallel \(DDP\) or sharded with torch's FSDP2"):
        Trainer(load_config("tiny-smoke", OVERRIDES), tmp_path, show_progress=False)


def test_an_accelerate_fsdp_launch_turns_fsdp_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from rltf.train.distributed import launcher_fsdp

    config = load_config("tiny-smoke", OVERRIDES)
    assert launcher_fsdp(config) is config  # a plain launch
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch --use_fsdp` sets in every rank
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        launcher_fsdp(config)
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    sharded = launcher_fsdp(config).distributed
    assert (sharded.fsdp, sharded.reshard_after_forward) == (True, False)


def test_fsdp_with_lora_is_refused() -> None:
    from rltf.config import ConfigError

    with pytest.raises(ConfigError, match=r"model\.lora"):
        load_config("tiny-smoke", [*OVERRIDES, "distributed.fsdp=true", "model.lora.enabled=true"])
