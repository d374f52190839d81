"""The online replay buffer: judged samples waiting to be learned from.

RLTF's learner reads samples from a FIFO memory pool capped at 6400 that takes the actors' new
samples every ``update_freq`` optimizer steps. This buffer keeps that contract and fixes the two
faults of the original ``MemoryPool`` (see the method reference, §3):

* the original removed as many old samples as new ones arrived *before* checking the capacity, so
  the pool never grew past its initial size; here new samples are appended and only the overflow
  beyond ``capacity`` is dropped, oldest first;
* the original loaded its initial files without registering them, so the first refresh loaded them
  a second time; here a sample exists once: it is staged once by the actor and moved once.

Samples wait in ``pending`` until :meth:`OnlineBuffer.refresh`; the buffer, the pending samples and
the sampling RNG all go into checkpoints, so a resumed run draws the same batches.

Two ways to draw (``mode``): ``window`` is the original's constant-size sliding window with
uniform draws, where many samples leave the FIFO without ever being trained on; ``refresh`` trains
on the latest refresh's samples only, in shuffled passes, so each is drawn once before any is drawn
twice, and a refresh replaces them. Either way :meth:`OnlineBuffer.prune` drops samples older than a
staleness bound, and the buffer counts how often each sample is drawn, so that runs report how much
of what they generate they learn from (:meth:`OnlineBuffer.usage`).

:class:`PassingPool` keeps the other store a run can train on: every sampled program that passed,
once per problem, for rejection-sampling fine-tuning (``optim.sl_source``).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class Sample:
    """One judged completion: the exact token ids the policy saw and produced, and its per-token returns.

    ``policy_version`` is the optimizer step whose weights the generation engine served when it
    sampled this completion (staleness = current step - version); ``step_added`` the step at which
    it entered the buffer (-1 while pending); ``logprobs`` the engine's log-probability of each
    completion token (the behaviour policy, for importance correction).
    """

    problem_id: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    returns: tuple[float, ...]
    verdict: dict[str, Any]
    reward: float
    policy_version: int
    step_added: int = -1
    logprobs: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.returns) != len(self.completion_ids):
            raise ValueError(f"{len(self.returns)} returns for {len(self.completion_ids)} completion tokens")

    def to_state(self) -> dict[str, Any]:
        return {"problem_id": self.problem_id, "prompt_ids": torch.tensor(self.prompt_ids, dtype=torch.int64),
                "completion_ids": torch.tensor(self.completion_ids, dtype=torch.int64),
                "returns": torch.tensor(self.returns, dtype=torch.float32), "verdict": self.verdict,
                "reward": self.reward, "policy_version": self.policy_version, "step_added": self.step_added,
                "logprobs": torch.tensor(self.logprobs, dtype=torch.float32)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Sample:
        return cls(state["problem_id"], tuple(state["prompt_ids"].tolist()), tuple(state["completion_ids"].tolist()),
                   tuple(state["returns"].tolist()), state["verdict"], state["reward"], state["policy_version"],
                   state["step_added"], tuple(state["logprobs"].tolist()) if "logprobs" in state else ())


class PassingPool:
    """Every program the run sampled that passed its tests, once per problem: what rejection-sampling
    fine-tuning (expert iteration) trains on (``optim.sl_source``). It only grows, as RFT's training set
    does across iterations; a program is a repeat when its problem and completion token ids match."""

    def __init__(self) -> None:
        self.programs: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
        """(problem id, prompt ids, completion ids), in the order they were first sampled."""
        self._seen: set[tuple[str, tuple[int, ...]]] = set()

    def __len__(self) -> int:
        return len(self.programs)

    def add(self, samples: Iterable[Sample]) -> int:
        """Keep the passing ones not seen before; returns how many were new."""
        before = len(self.programs)
        for s in samples:
            key = (s.problem_id, s.completion_ids)
            if s.verdict.get("status") == "pass" and key not in self._seen:
                self._seen.add(key)
                self.programs.append((s.problem_id, s.prompt_ids, s.completion_ids))
        return len(self.programs) - before

    def problems(self) -> int:
        """How many problems have at least one program in the pool."""
        return len({problem_id for problem_id, _, _ in self.programs})

    def state_dict(self) -> dict[str, Any]:
        return {"programs": [[problem_id, list(prompt), list(completion)]
                             for problem_id, prompt, completion in self.programs]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.programs = [(problem_id, tuple(prompt), tuple(completion))
                         for problem_id, prompt, completion in state["programs"]]
        self._seen = {(problem_id, completion) for problem_id, _, completion in self.programs}


Mode = Literal["refresh", "window"]


class OnlineBuffer:
    """FIFO of :class:`Sample` with a fixed capacity, seeded draws (``mode``, see the module
    docstring) and staged refreshes."""

    def __init__(self, capacity: int, seed: int = 0, mode: Mode = "window") -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        if mode not in ("refresh", "window"):
            raise ValueError(f"unknown buffer mode {mode!r}")
        self.capacity, self.mode = capacity, mode
        self.samples: deque[Sample] = deque()
        self.uses: deque[int] = deque()  # times each of ``samples`` was drawn
        self.order: list[int] = []  # refresh mode: indices of ``samples`` still to draw in this pass
        self.pending: list[Sample] = []
        self.staged = 0  # samples ever staged
        self.dropped_unused = 0  # samples that left the FIFO without being drawn
        self._rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def stage(self, samples: Iterable[Sample]) -> None:
        """Hold new samples until the next refresh (the actors' output between two learner updates)."""
        before = len(self.pending)
        self.pending.extend(samples)
        self.staged += len(self.pending) - before

    def refresh(self, step: int) -> tuple[int, int]:
        """Move pending samples in, stamped with ``step``; in ``refresh`` mode they replace the
        buffer's samples, and either way the oldest beyond capacity are dropped.

        Returns (added, dropped). A refresh larger than the capacity keeps its newest samples; one
        with nothing pending changes nothing.
        """
        added = len(self.pending)
        dropped = len(self.samples) if self.mode == "refresh" and added else 0
        self._drop(range(dropped))
        self.samples.extend(replace(s, step_added=step) for s in self.pending)
        self.uses.extend([0] * added)
        self.pending = []
        overflow = max(0, len(self.samples) - self.capacity)
        self._drop(range(overflow))
        self.order = []
        return added, dropped + overflow

    def prune(self, step: int, max_staleness: int | None) -> int:
        """Drop the samples drawn by weights more than ``max_staleness`` steps older than ``step``'s;
        returns how many."""
        if max_staleness is None:
            return 0
        stale = [i for i, s in enumerate(self.samples) if step - s.policy_version > max_staleness]
        self._drop(stale)
        if stale:
            self.order = []
        return len(stale)

    def _drop(self, indices: Iterable[int]) -> None:
        gone = set(indices)
        if not gone:
            return
        self.dropped_unused += sum(self.uses[i] == 0 for i in gone)
        kept = [i for i in range(len(self.samples)) if i not in gone]
        self.samples = deque(self.samples[i] for i in kept)
        self.uses = deque(self.uses[i] for i in kept)

    def sample(self, n: int) -> list[Sample]:
        """``n`` distinct samples (all of them if fewer): uniformly at random (``window``), or the
        next ones of the current shuffled pass, starting a new pass when it runs out (``refresh``)."""
        if not self.samples:
            return []
        n = min(n, len(self.samples))
        if self.mode == "window":
            indices = self._rng.sample(range(len(self.samples)), n)
        else:
            indices, self.order = self.order[:n], self.order[n:]
            if len(indices) < n:  # the pass ran out: a new one, whose first draws skip this micro-batch's
                new = list(range(len(self.samples)))
                self._rng.shuffle(new)
                fill = [i for i in new if i not in indices][: n - len(indices)]
                indices += fill
                self.order = [i for i in new if i not in fill]
        for i in indices:
            self.uses[i] += 1
        return [self.samples[i] for i in indices]

    def usage(self) -> dict[str, Any]:
        """``samples_trained_frac``: the share of all staged samples drawn at least once so far;
        ``samples_dropped_unused``: how many left the FIFO without being drawn; ``sample_uses_mean``
        over the samples now in the buffer."""
        trained = self.staged - len(self.pending) - self.dropped_unused - sum(u == 0 for u in self.uses)
        return {"samples_trained_frac": trained / self.staged if self.staged else None,
                "samples_dropped_unused": self.dropped_unused,
                "sample_uses_mean": sum(self.uses) / len(self.uses) if self.uses else None}

    def state_dict(self) -> dict[str, Any]:
        return {"capacity": self.capacity, "mode": self.mode, "order": list(self.order), "rng": self._rng.getstate(),
                "samples": [s.to_state() for s in self.samples], "pending": [s.to_state() for s in self.pending],
                "uses": list(self.uses), "staged": self.staged, "dropped_unused": self.dropped_unused}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity, self.mode, self.order = state["capacity"], state.get("mode", "window"), state.get("order", [])
        self.samples = deque(Sample.from_state(s) for s in state["samples"])
        self.pending = [Sample.from_state(s) for s in state["pending"]]
        # checkpoints from before use counting: their samples count as drawn once (unknown, not unused)
        self.uses = deque(state.get("uses", [1] * len(self.samples)))
        self.staged = state.get("staged", len(self.samples) + len(self.pending))
        self.dropped_unused = state.get("dropped_unused", 0)
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))

    def save(self, path: str | Path) -> None:
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> OnlineBuffer:
        state = torch.load(path, weights_only=True)
        buffer = cls(state["capacity"], mode=state.get("mode", "window"))
        buffer.load_state_dict(state)
        return buffer
