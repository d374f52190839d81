"""The run's processes: one, or N data-parallel ranks under DDP or FSDP2 (``accelerate launch``).

Every rank holds the whole run state (problem order, buffer, RNGs, engine, judge), samples and
judges a contiguous share of each step's problems and receives the others' rollouts, so the
buffers stay identical; each rank trains on its share of the step's micro-batches and the
gradients are averaged at the rank's last backward. This module holds what that takes and nothing
of the loop: the launch command and the launcher checks, the model wrapping (DDP, or FSDP2 with a
whole copy kept for the engine and the checkpoints), the gradient-sync switch, the collectives and
FSDP's state dicts.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import yaml

from rltf.config import TrainConfig
from rltf.models import Policy, resolve_device


def launch_command(processes: int, argv: list[str], port: int) -> list[str]:
    """``accelerate launch`` of ``processes`` ranks running ``python -m rltf.cli ARGV``.

    accelerate takes what its command line leaves out from the user's config file (``accelerate
    config`` writes it), so only what that file does not set is passed: ``--multi_gpu`` unless its
    ``distributed_type`` starts the ranks itself (MULTI_GPU, FSDP, ...; NO and MULTI_CPU would start one
    process: torchrun runs CPU ranks too, on gloo when ``model.device`` is cpu), a free rendezvous port
    (``port``), and the values accelerate would otherwise default with a warning. ``--num_processes``
    is always passed: it is what the user asked for.
    """
    from accelerate.commands.config.config_args import default_config_file

    path = Path(default_config_file)
    configured = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.is_file() else {}
    flags = ["--num_processes", str(processes)]
    if configured.get("distributed_type", "NO") in ("NO", "MULTI_CPU"):
        flags.append("--multi_gpu")
    unless_configured = {"main_process_port": ["--main_process_port", str(port)],
                         "num_machines": ["--num_machines", "1"], "mixed_precision": ["--mixed_precision", "no"],
                         "dynamo_config": ["--dynamo_backend", "no"]}
    for key, flag in unless_configured.items():
        if configured.get(key) is None:
            flags += flag
    return [sys.executable, "-m", "accelerate.commands.launch", *flags, "-m", "rltf.cli", *argv]


def launcher_fsdp(config: TrainConfig) -> TrainConfig:
    """``config`` with ``distributed.fsdp`` on when ``accelerate launch`` was given an FSDP config
    (``--use_fsdp``; it says so in the ranks' environment, on CPUs too): FSDP2 only, its
    ``reshard_after_forward`` taken from the launcher."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return config
    if os.environ.get("FSDP_VERSION", "1") != "2":
        raise ValueError("accelerate is configured for FSDP version 1; rltf shards with FSDP2 (fully_shard): "
                         "set fsdp_version: 2 in the accelerate config")
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() == "true"
    return dataclasses.replace(config, distributed=dataclasses.replace(config.distributed, fsdp=True,
                                                                       reshard_after_forward=reshard))


class Ranks:
    """This process's place in the run and the operations that involve every rank.

    With one process every collective is a no-op, so the trainer reads the same either way.
    """

    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator
        from accelerate.utils import InitProcessGroupKwargs

        self.config = config
        self.device = resolve_device(config.model.device)
        self.accelerator = Accelerator(cpu=self.device == "cpu", kwargs_handlers=[
            InitProcessGroupKwargs(timeout=timedelta(seconds=config.distributed.timeout_s))])
        kind = self.accelerator.distributed_type.value
        if kind not in ("NO", "MULTI_CPU", "MULTI_GPU", *(("FSDP",) if config.distributed.fsdp else ())):
            raise ValueError(f"accelerate is configured for {kind}; rltf trains data-parallel (DDP) or sharded with "
                             "torch's FSDP2 (distributed.fsdp=true, or an accelerate FSDP config): DeepSpeed would "
                             "own the model and optimizer that each step's engine sync reads (README, Multi-GPU "
                             "and multi-node)")
        self.count, self.index = self.accelerator.num_processes, self.accelerator.process_index
        self.fsdp = config.distributed.fsdp and self.count > 1
        self.is_main = self.accelerator.is_main_process
        self.model: Any = None
        self.serving: Policy | None = None

    @property
    def load_device(self) -> str:
        """Where the policy is loaded: a GPU per rank; under FSDP the CPU first (:meth:`wrap` copies it
        for the engine, then moves the learner)."""
        if self.fsdp or self.device == "cpu":
            return "cpu"
        return self.device if self.count == 1 else str(self.accelerator.device)

    def wrap(self, policy: Policy) -> tuple[Policy, Any]:
        """What the engine serves and checkpoints save (the policy itself, or under FSDP a whole copy),
        and what the update's forwards run (the model, its DDP wrapper, or the model sharded in place)."""
        self.model = policy.model
        if self.fsdp:
            self.serving = self._shard(policy)
            return self.serving, self.model
        self.serving = policy
        return policy, self.accelerator.prepare_model(self.model) if self.count > 1 else self.model

    def _shard(self, policy: Policy) -> Policy:
        """FSDP2: keep a whole copy of the model (loaded on the CPU) for the engine and the checkpoints
        (refreshed by :meth:`gather_weights`), move the learner to the rank's device and shard it: every
        decoder layer (the model's ``_no_split_modules``) and the model itself, so each layer is
        gathered only around its use. The copy never touches the GPU."""
        from torch.distributed.fsdp import fully_shard

        serving = dataclasses.replace(policy, model=copy.deepcopy(self.model).eval())
        serving.model.requires_grad_(False)
        if self.device != "cpu":
            self.model.to(self.accelerator.device)
        layers = set(getattr(self.model, "_no_split_modules", None) or ())
        reshard = self.config.distributed.reshard_after_forward
        for module in [m for m in self.model.modules() if type(m).__name__ in layers]:
            fully_shard(module, reshard_after_forward=reshard)
        fully_shard(self.model, reshard_after_forward=reshard)
        return serving

    def gather_weights(self) -> None:
        """FSDP: copy the learner's whole current weights into the serving copy. A collective: every
        rank calls it at the same point. Without FSDP the serving policy is the learner's: nothing to do."""
        if not self.fsdp:
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        whole = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True))
        self.serving.model.load_state_dict(whole)

    def grad_sync(self, learner: Any, on: bool) -> contextlib.AbstractContextManager[Any]:
        """Whether this backward exchanges gradients (only a rank's last one does): DDP's ``no_sync``,
        or FSDP2's switch, under which gradients accumulate unsharded until the exchanging backward."""
        if self.fsdp:
            self.model.set_requires_gradient_sync(on)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if on or self.count == 1 else self.accelerator.no_sync(learner)

    def most(self, count: int) -> int:
        """The largest ``count`` over the ranks (how many forwards the busiest rank runs)."""
        if self.count == 1:
            return count
        total = torch.tensor([count], device=self.model.device)
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.MAX)
        return int(total.item())

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        if self.count == 1:
            return [value]
        from accelerate.utils import gather_object

        return gather_object([value])

    def wait(self) -> None:
        self.accelerator.wait_for_everyone()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block before the others (it writes what they then read)."""
        with self.accelerator.main_process_first():
            yield

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
        """The whole optimizer state on rank 0 (gathered from every rank under FSDP, a collective); None elsewhere."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            return get_optimizer_state_dict(self.model, optimizer, options=StateDictOptions(
                full_state_dict=True, cpu_offload=True))
        return optimizer.state_dict() if self.is_main else None

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, optimizer, state, options=StateDictOptions(full_state_dict=True))
        else:
            optimizer.load_state_dict(state)
