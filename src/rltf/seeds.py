"""Seeds and random states: derived seeds that do not depend on Python's hash salt, and restoring a
``random.Random`` state that went through JSON or a checkpoint (tuples come back as lists)."""

from __future__ import annotations

import hashlib
import random
from typing import Any


def stable_seed(*parts: Any) -> int:
    """A 32-bit seed from ``parts``: the same in every process and run (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "little")


def restore_random(rng: random.Random, state: Any) -> None:
    """``rng.setstate`` from a state saved by ``rng.getstate()`` that lost its tuples on the way."""
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))
