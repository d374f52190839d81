"""Which training problems each step samples: uniformly (the original's), or the learnable ones.

With sparse rewards most groups hold no pass and carry no signal (on MBPP train 16 % of the
problems pass sometimes under the base model). ``learnable`` draws in proportion to p(1 - p) + a
floor, p each problem's pass rate: estimated once before training from K samples per problem
(:func:`estimate_pass_rates`, cached per model), then updated from every group the run samples.
Online difficulty filtering of this kind: DAPO, POLARIS, Bae et al. 2025 (arXiv 2504.03380).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rltf.config import RolloutConfig
from rltf.models import cache_root
from rltf.problems import Problem
from rltf.seeds import restore_random

PASS_RATES = "pass_rates.json"
"""A run's pre-pass estimates (:func:`pass_rate_summary`). One already in a new run's directory
stands in for the pre-pass where the cache has none: the ablation runner puts there a finished
run's from the same warm start on a machine whose cache is empty."""


class ProblemSampler:
    """Problems without replacement in a seeded shuffled order, reshuffled when exhausted (as the original)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self._rng, self.order, self.pos, self.epoch = size, random.Random(seed), [], 0, 0
        self._reshuffle()

    def _reshuffle(self) -> None:
        self.order = list(range(self.size))
        self._rng.shuffle(self.order)
        self.pos = 0

    def draw(self, n: int) -> list[int]:
        out = []
        for _ in range(n):
            if self.pos == self.size:
                self.epoch += 1
                self._reshuffle()
            out.append(self.order[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"order": self.order, "pos": self.pos, "epoch": self.epoch, "rng": self._rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.order, self.pos, self.epoch = list(state["order"]), state["pos"], state["epoch"]
        restore_random(self._rng, state["rng"])


class LearnableSampler:
    """Draws ``n`` distinct problems per call with weights p(1 - p) + ``floor`` (p unknown: 1/2)."""

    def __init__(self, size: int, seed: int, floor: float, decay: float) -> None:
        self.size, self.floor, self.decay, self._rng = size, floor, decay, random.Random(seed)
        self.rates: list[float | None] = [None] * size
        self.epoch = 0  # the uniform sampler's field, for logs

    def weights(self) -> list[float]:
        return [(0.25 if p is None else p * (1 - p)) + self.floor for p in self.rates]

    def draw(self, n: int) -> list[int]:
        """Weighted draws without replacement (Efraimidis-Spirakis keys u^(1/w))."""
        keys = [self._rng.random() ** (1 / w) for w in self.weights()]
        return sorted(range(self.size), key=lambda i: -keys[i])[:min(n, self.size)]

    def update(self, index: int, passed: int, total: int) -> None:
        """Fold a group's pass rate into the problem's estimate."""
        if total:
            rate, old = passed / total, self.rates[index]
            self.rates[index] = rate if old is None else (1 - self.decay) * old + self.decay * rate

    def state_dict(self) -> dict[str, Any]:
        return {"rates": self.rates, "rng": self._rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rates = list(state["rates"])
        restore_random(self._rng, state["rng"])


def estimate_pass_rates(problems: Sequence[Problem], sample: Callable[[Sequence[Problem]], dict[str, list[bool]]],
                        known: dict[str, float], per_call: int,
                        save: Callable[[dict[str, float]], None] | None = None) -> list[float]:
    """Each problem's pass rate: from ``known`` (problem id -> rate, a cache), else from ``sample``
    (problems -> problem id -> the pass of each of its samples), ``per_call`` problems at a time;
    ``save`` gets the rates known so far after every call, so an interrupted pre-pass resumes."""
    known = dict(known)
    missing = [p for p in problems if p.id not in known]
    for start in range(0, len(missing), per_call):
        for problem_id, passes in sample(missing[start:start + per_call]).items():
            known[problem_id] = sum(passes) / len(passes) if passes else 0.0
        if save is not None:
            save(known)
    return [known[p.id] for p in problems]


def pass_rate_cache(model: str, engine: str, style: str, config: RolloutConfig) -> Path:
    """Where the pre-pass's rates for ``model`` (:func:`rltf.models.model_identity`) sampled by ``engine``
    under ``config``'s sampling settings are kept: runs of every seed from one model share them."""
    key = json.dumps([model, engine, style, config.selection_samples, config.temperature, config.top_p,
                      config.max_new_tokens])
    return cache_root() / "pass-rates" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def pass_rate_summary(problems: Sequence[Problem], rates: Sequence[float], cache: Path,
                      seconds: float) -> dict[str, Any]:
    """A run's :data:`PASS_RATES`: how many problems are learnable (0 < p < 1), never or always solved."""
    return {"cache": str(cache), "seconds": seconds, "learnable": sum(0 < r < 1 for r in rates),
            "never": sum(r == 0 for r in rates), "always": sum(r == 1 for r in rates),
            "rates": dict(zip((p.id for p in problems), rates))}


def sample_passes(records: Sequence[dict[str, Any]]) -> dict[str, list[bool]]:
    """Problem id -> the pass of each sampled (not greedy) program of ``records`` (``samples.jsonl`` lines)."""
    passes: dict[str, list[bool]] = {}
    for record in records:
        if not record["greedy"]:
            passes.setdefault(record["problem_id"], []).append(record["status"] == "pass")
    return passes
