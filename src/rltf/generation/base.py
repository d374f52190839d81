"""What every generation engine takes and returns, and the per-row bookkeeping they share.

An engine samples completions for prompts with the policy's weights *as of its last sync*. Each
:class:`Completion` carries its token ids, the characters each token produced (``offsets``), why it
ended, the log-probability of every token under the engine, and the policy version the engine
served, so the learner can tell exactly how on- or off-policy a sample is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rltf.models import Policy
from rltf.prompts import Prompt

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """``n`` completions per prompt; ``temperature == 0`` is greedy decoding (one draw, repeated ``n`` times).

    With ``greedy_first`` sample 0 of each prompt is greedy and the other ``n - 1`` are sampled: a
    greedy baseline rides along with the samples at the price of one more row.

    ``first_prompt`` is the index of this call's first prompt in a seeded call split across
    processes (data-parallel ranks): an engine that seeds each row by (seed, prompt, row), as
    ``llamacpp`` does, then draws the rows the whole call would have drawn.
    """

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 384
    seed: int | None = 0
    greedy_first: bool = False
    first_prompt: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass(frozen=True)
class Completion:
    """One completion. ``offsets[i]`` is the ``[start, end)`` of ``text`` that token ``i`` produced
    (empty for special tokens, and for a token that only starts a multi-byte character); the spans
    tile ``text`` in order. ``logprobs[i]`` is ``log p(token_i | prompt, tokens_<i)`` under the
    engine's model at temperature 1 with no truncation: the quantity the learner computes, so the
    two can be compared and importance-weighted directly."""

    text: str
    token_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    logprobs: tuple[float, ...]
    finish_reason: FinishReason
    policy_version: int = 0


@dataclass(frozen=True)
class Generation:
    completions: list[list[Completion]]
    """``completions[i][j]``: sample ``j`` of prompt ``i``."""
    wall_s: float
    new_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.wall_s if self.wall_s else 0.0


OnComplete = Callable[[int, int, Completion], None]
"""Called with ``(prompt index, sample index, completion)`` as soon as a completion ends, from the
engine's thread: keep it short (queue the program to the judge)."""


class Engine(Protocol):
    """A sampler over the policy's weights. ``sync`` makes it serve the learner's current weights."""

    name: str
    label: str
    """The engine and its mode (``ct2/int8``): recorded with evaluations, since it changes the samples."""
    policy: Policy
    policy_version: int
    shares_weights: bool
    """True when the engine samples from the learner's own modules (always current; sync is free)."""
    pads_prompts: bool
    """True when a batch's rows are padded to its longest prompt, so that batches should group similar
    prompt lengths (:func:`length_batches`); False when every row is scheduled on its own."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams,
                 on_complete: OnComplete | None = None) -> Generation: ...

    def sync(self, version: int) -> float:
        """Serve the learner's current weights from now on, as ``version``; returns the seconds it took."""
        ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- per-row bookkeeping


class TextStream:
    """Incremental detokenization: the characters each new token adds, in O(1) decodes per token.

    Tokens are not strings (byte-level pieces, SentencePiece's leading spaces), so the text a token
    adds is the difference of two decodes that start at the same earlier token: the context makes
    both decode a leading space alike. A piece that ends in an unfinished character (U+FFFD) adds
    nothing yet; its characters go to the token that completes them.
    """

    WINDOW = 6

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self.offsets: list[tuple[int, int]] = []
        self._prefix = 0  # decodes start at this token
        self._read = 0  # tokens before this one are in ``text``

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def add(self, token: int) -> int:
        """Append ``token``; returns how many characters it completed."""
        self.ids.append(token)
        done = self._decode(self.ids[self._prefix : self._read])
        full = self._decode(self.ids[self._prefix :])
        start = len(self.text)
        if len(full) > len(done) and not full.endswith("\ufffd") and full.startswith(done):
            self.text += full[len(done):]
            self._prefix, self._read = max(self._prefix, len(self.ids) - self.WINDOW), len(self.ids)
        self.offsets.append((start, len(self.text)))
        return len(self.text) - start

    def finish(self) -> None:
        """Flush characters still held back (a completion cut inside a multi-byte character)."""
        if self._read < len(self.ids):
            rest = self._decode(self.ids[self._prefix :])[len(self._decode(self.ids[self._prefix : self._read])):]
            if rest and self.offsets:
                self.text += rest
                self.offsets[-1] = (self.offsets[-1][0], len(self.text))
            self._read = len(self.ids)


@dataclass
class Row:
    """One completion in progress: its text stream, log-probs and why it stopped."""

    prompt: Prompt
    stream: TextStream
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason | None = None

    def add(self, token: int, logprob: float, eos: set[int]) -> bool:
        """Record one sampled token; True once the row is finished (EOS, or the program is complete)."""
        self.logprobs.append(logprob)
        added = self.stream.add(token)
        if token in eos:
            self.finish_reason = "eos"
        elif self.prompt.finished_by(self.stream.text, added):
            self.finish_reason = "stop"
        return self.finish_reason is not None

    def completion(self, version: int) -> Completion:
        self.stream.finish()
        return Completion(self.stream.text, tuple(self.stream.ids), tuple(self.stream.offsets),
                          tuple(self.logprobs), self.finish_reason or "length", version)


def scratch_dir() -> str | None:
    """Where fast engines write the learner's weights at each sync: memory (``/dev/shm``) if writable."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


TOKENS_PER_ROW = 512


def length_batches(lengths: Sequence[int], draws: int, batch_size: int, padded: bool = True) -> list[list[int]]:
    """Prompt indices per batch: sorted by prompt length, at most ``batch_size`` sequences and, when
    ``padded``, ``batch_size * TOKENS_PER_ROW`` padded prompt tokens per batch (at least one prompt).

    Every row of a padded batch is padded to its longest prompt (or, in CTranslate2, feeds the extra
    prompt tokens one step at a time), so one long prompt (MBPP/493 has ~3k tokens) among short ones
    multiplies the cost of the whole batch. Without padding the cap would only leave a few long
    prompts to run alone, with most slots idle.
    """
    batches: list[list[int]] = []
    cap = batch_size * TOKENS_PER_ROW if padded else math.inf
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        rows = (len(batches[-1]) + 1) * draws if batches else 0
        if not batches or rows > max(batch_size, draws) or rows * lengths[i] > cap:
            batches.append([])
        batches[-1].append(i)
    return batches
