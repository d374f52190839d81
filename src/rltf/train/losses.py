"""The learner's arithmetic: micro-batches, target log-probs and the weighted policy-gradient loss.

RLTF's loss is a token-weighted log-likelihood: ``-mean_t(r_t · log π(w_t))`` over sampled
programs (r_t the per-token returns of :mod:`rltf.feedback`), plus plain cross-entropy on
reference solutions. Read this file first; the rest of the package feeds it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TrainItem:
    """One sequence of a micro-batch: context, target tokens, the weight of each target token and,
    for sampled targets, the engine's log-prob of each (the behaviour policy; empty for references)."""

    prompt_ids: Sequence[int]
    target_ids: Sequence[int]
    weights: Sequence[float]
    behaviour: Sequence[float] = ()


@dataclass(frozen=True)
class Padded:
    """A micro-batch padded to its longest row: the model's inputs and, per target token in the order
    :func:`target_logprobs` returns them (row-major), its weight, its behaviour log-prob and its item."""

    inputs: dict[str, torch.Tensor]
    """``input_ids`` and ``attention_mask``; an encoder-decoder's ``labels``, or a causal LM's
    ``target_mask`` (the positions of target tokens)."""
    weights: torch.Tensor
    behaviour: torch.Tensor
    owner: torch.Tensor
    """The index of each target token's item in the micro-batch."""
    tokens: int
    """Real tokens fed (padding left out)."""


def collate(items: Sequence[TrainItem], pad_id: int, max_len: int, encoder_decoder: bool) -> Padded:
    """Pad a micro-batch. Causal LMs see ``prompt + target`` (right-padded); encoder-decoders see the
    prompt and take the target as labels."""
    if encoder_decoder:
        prompts = [list(it.prompt_ids[-max_len:]) for it in items]
        targets = [list(it.target_ids[:kept_target_tokens(0, len(it.target_ids), max_len, True)]) for it in items]
        width, depth = max(map(len, prompts)), max(map(len, targets))
        labels = torch.tensor([t + [-100] * (depth - len(t)) for t in targets])
        inputs = {"input_ids": torch.tensor([p + [pad_id] * (width - len(p)) for p in prompts]),
                  "attention_mask": torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts]),
                  "labels": labels}
        return _targets(items, inputs, [0] * len(items), [len(t) for t in targets],
                        sum(map(len, prompts)) + sum(map(len, targets)))
    rows, starts, kept = [], [], []
    for it in items:
        prompt = list(it.prompt_ids[-(max_len - 1):])
        kept.append(kept_target_tokens(len(it.prompt_ids), len(it.target_ids), max_len, False))
        rows.append(prompt + list(it.target_ids[:kept[-1]]))
        starts.append(len(prompt))
    width = max(map(len, rows))
    inputs = {"input_ids": torch.tensor([r + [pad_id] * (width - len(r)) for r in rows]),
              "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
              "target_mask": torch.tensor([[start <= t < len(r) for t in range(width)]
                                           for r, start in zip(rows, starts)])}
    return _targets(items, inputs, starts, kept, sum(map(len, rows)))


def _targets(items: Sequence[TrainItem], inputs: dict[str, torch.Tensor], starts: Sequence[int],
             kept: Sequence[int], tokens: int) -> Padded:
    """The flattened per-target-token tensors of a padded micro-batch (a target at position 0 of a causal
    row has no context and is left out, as :func:`target_logprobs` leaves it out)."""
    weights, behaviour, owner = [], [], []
    for i, (it, start, n) in enumerate(zip(items, starts, kept, strict=True)):
        skip = 1 if start == 0 and "target_mask" in inputs else 0
        weights += list(it.weights[skip:n])
        behaviour += _behaviour(it)[skip:n]
        owner += [i] * (n - skip)
    return Padded(inputs, torch.tensor(weights, dtype=torch.float32), torch.tensor(behaviour, dtype=torch.float32),
                  torch.tensor(owner, dtype=torch.long), tokens)


def kept_target_tokens(prompt_len: int, target_len: int, max_len: int, encoder_decoder: bool) -> int:
    """How many of a sequence's target tokens :func:`collate` keeps within ``max_len`` (a causal LM
    keeps the last ``max_len - 1`` prompt tokens and fills the rest with target)."""
    if encoder_decoder:
        return min(target_len, max_len)
    return max(0, min(target_len, max_len - min(prompt_len, max_len - 1)))


def sequence_factors(kept: Sequence[int], how: str, step_tokens: int, grad_accum: int,
                     max_new_tokens: int = 0) -> list[float]:
    """A positive factor per sequence of a micro-batch that turns the micro-batch token mean of the RL
    term (divided by ``grad_accum``) into the ``how`` aggregation (:class:`rltf.config.OptimConfig`;
    ``constant`` needs the completions' token limit, ``max_new_tokens``).

    Scaling a sequence's returns by c > 0 scales each of its token terms by c under every importance
    correction (each is positively homogeneous in r_t), so the aggregation needs no second loss path.
    """
    tokens = sum(kept)
    if how == "token_mean" or not tokens:
        return [1.0] * len(kept)
    if how == "seq_mean":
        return [tokens / (len(kept) * k) if k else 0.0 for k in kept]
    if how == "global_token_mean":
        return [tokens * grad_accum / step_tokens] * len(kept)
    if how == "constant":
        if max_new_tokens < 1:
            raise ValueError("the constant aggregation needs the completions' token limit (max_new_tokens)")
        return [tokens / (len(kept) * max_new_tokens)] * len(kept)
    raise ValueError(f"unknown loss aggregation {how!r}")


def _behaviour(item: TrainItem) -> list[float]:
    """The item's behaviour log-probs, zeros (never read) where it has none."""
    return list(item.behaviour) if item.behaviour else [0.0] * len(item.target_ids)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether the (possibly DDP- or PEFT-wrapped) model's forward takes transformers' ``logits_to_keep``."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _forward_takes_logits_to_keep(type(base))


@functools.cache
def _forward_takes_logits_to_keep(cls: type) -> bool:
    """Per model class, not per micro-batch: reading a signature is slow and the answer never changes."""
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def target_logits(model: Any, batch: Padded) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits that predict each target token (one row per token, in ``batch``'s order) and the tokens.

    Only the target positions are kept (the vocabulary-wide tensor is the largest one in the step,
    so prompt positions are dropped before it is formed). A causal LM that takes ``logits_to_keep``
    (transformers' models do) skips the LM head on them too: the prompt is most of each sequence,
    and the head is about a fifth of a small model's FLOPs.
    """
    inputs = batch.inputs
    if "labels" in inputs:
        decoder_ids = model.prepare_decoder_input_ids_from_labels(labels=inputs["labels"])
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       decoder_input_ids=decoder_ids).logits
        mask = inputs["labels"] != -100
        return logits[mask], inputs["labels"][mask]
    mask = inputs["target_mask"]
    predicts = torch.zeros_like(mask)
    predicts[:, :-1] = mask[:, 1:]  # position t predicts the token at t + 1
    targets = inputs["input_ids"][:, 1:][mask[:, 1:]]
    if takes_logits_to_keep(model):
        # a boolean mask makes the model return the kept rows flattened, in row-major order
        return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     logits_to_keep=predicts).logits, targets
    return model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits[predicts], targets


def target_logprobs(model: Any, batch: Padded) -> torch.Tensor:
    """``log p(w_t | context, w_<t)`` of every target token, flattened in ``batch``'s order."""
    return logprobs_of(*target_logits(model, batch))


def logprobs_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's log-prob of its target token."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """The entropy of each row's distribution, in nats."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def weighted_nll(logp: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``-mean_t(w_t · log p_t)`` over all target tokens of the micro-batch (the original's token mean).

    With ``w_t = r_t`` this is RLTF's policy-gradient loss; with ``w_t = 1`` plain cross-entropy.
    """
    if logp.numel() == 0:
        return logp.sum()
    return -(weights * logp).mean()


def token_terms(logp: torch.Tensor, returns: torch.Tensor, behaviour: torch.Tensor | None, kind: str = "none",
                clip_eps: float = 0.2, tis_cap: float = 2.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The RL term of each token (their mean over a micro-batch is :func:`policy_loss`) and the
    diagnostics: the mean ratio ρ_t, the fraction of tokens whose ratio is clipped, and
    KL(behaviour‖current) estimated by mean(ρ - 1 - log ρ). A token whose return is 0 has term 0
    under every correction, which is why a sample of zero returns needs no forward at all."""
    if behaviour is None:
        if kind != "none":
            raise ValueError(f"importance correction {kind!r} needs the behaviour log-probs")
        return -(returns * logp), {}
    log_ratio = logp - behaviour
    ratio = torch.exp(log_ratio)
    stats = {"ratio": ratio.detach().mean(), "kl": (ratio - 1 - log_ratio).detach().mean()}
    if kind == "none":
        return -(returns * logp), stats
    if kind == "ppo_clip":
        clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps)
        stats["clipped"] = (ratio.detach() != clipped.detach()).float().mean()
        return -torch.minimum(ratio * returns, clipped * returns), stats
    if kind == "tis":
        stats["clipped"] = (ratio.detach() > tis_cap).float().mean()
        return -(ratio.detach().clamp(max=tis_cap) * returns * logp), stats
    raise ValueError(f"unknown importance correction {kind!r}")


def policy_loss(logp: torch.Tensor, returns: torch.Tensor, behaviour: torch.Tensor | None, kind: str = "none",
                clip_eps: float = 0.2, tis_cap: float = 2.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The RL term over a micro-batch's tokens (token mean), importance-corrected by ``kind`` (see
    :class:`rltf.config.OptimConfig.importance`), and its diagnostics (:func:`token_terms`).
    ``none`` reports the ratio and KL too (how far off-policy the uncorrected update is);
    ``behaviour`` None (samples without stored log-probs) allows ``none`` only, without diagnostics.

    Every kind has the same gradient, -r_t·∇log π_θ(w_t), where the learner is the behaviour policy (ρ = 1).
    """
    if logp.numel() == 0:
        return weighted_nll(logp, returns), {}
    terms, stats = token_terms(logp, returns, behaviour, kind, clip_eps, tis_cap)
    return terms.mean(), stats
