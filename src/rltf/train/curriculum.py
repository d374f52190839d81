"""Which training problems each step samples."""

from __future__ import annotations

import random
from typing import Any

from rltf.seeds import restore_random


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
