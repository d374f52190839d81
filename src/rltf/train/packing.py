"""Micro-batches by token budget: sequences packed into rows, a shared prompt run once for its group.

The K samples of a group share one prompt, and with the chat template and the shown tests the
prompt is most of each sequence. Padding every sequence of a micro-batch to the longest one, and
running the prompt once per sample, spends most of the learner's FLOPs on padding and repeats.
Here a row holds several *groups*: one prompt followed by every target that shares it (the
group's sampled programs, and a reference solution of the same problem if the SL term drew one).
A 4-D attention mask lets each target see its own prompt and its own earlier tokens only, and
each target's position ids continue from its prompt's end, so a target's logits are those of the
per-sample path up to float rounding; the prompt's gradient is the sum over its targets, as when
each sample runs the prompt itself. Rows are packed first-fit, and a micro-batch holds as many
rows as fit ``micro_batch_tokens`` padded tokens.

The step's loss is ``Σ_items scale · Σ_t term_t`` (:class:`Weighted`): every micro-batch
normaliser of :mod:`rltf.train.losses` is folded into ``scale`` before packing, so how the items
are packed changes nothing but rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rltf.train.losses import (
    Padded,
    TrainItem,
    collate,
    kept_target_tokens,
    sequence_factors,
    takes_logits_to_keep,
    target_logprobs,
    token_terms,
)

Rows = list[list[tuple[tuple[int, ...], list[int]]]]
"""One micro-batch of :func:`plan`: rows of groups ``(prompt, item indices)``."""


@dataclass(frozen=True)
class Weighted:
    """An item of the step and its share of the step's loss: ``scale · Σ_t term_t``."""

    item: TrainItem
    scale: float
    importance: str | None = None
    """A sample's importance correction (:func:`rltf.train.losses.token_terms`): ``none`` where its
    micro-batch lacks stored log-probs; None for a reference (the SL term, plain cross-entropy)."""


@dataclass(frozen=True)
class Packed:
    """One forward's tensors; ``owner``, ``weights`` and ``behaviour`` follow the target tokens in
    the order of ``source``."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    keep: torch.Tensor
    """Positions whose logits are needed (a prompt's last position once for its whole group)."""
    source: torch.Tensor
    """Per target token, its predicting position among the kept ones."""
    targets: torch.Tensor
    weights: torch.Tensor
    behaviour: torch.Tensor
    owner: torch.Tensor
    """Per target token, the index of its item in the micro-batch's list."""
    tokens: int
    """Real tokens fed (padding left out)."""


def weigh(rl: Sequence[Sequence[TrainItem]], sl: Sequence[Sequence[TrainItem]], *, rl_weight: float,
          sl_weight: float, grad_accum: int, ranks: int, aggregation: str, importance: str, step_tokens: int,
          max_len: int, encoder_decoder: bool = False, skip_zero: bool = True,
          max_new_tokens: int = 0) -> tuple[list[Weighted], int]:
    """A rank's micro-batches (RL items: returns as weights, the engine's log-probs as behaviour;
    SL items: references) as weighted sequences, each micro-batch's normaliser folded into its
    sequences' scale: ``rl_weight · policy_loss / grad_accum`` of a micro-batch, and the same for
    the SL term, are the sums of their sequences' ``scale · Σ_t term_t``. Samples whose returns
    are all zero are left out (their terms are zero; the normaliser still counts their tokens)
    unless ``skip_zero`` is off (to measure what skipping saves). Returns them and how many samples
    were left out."""
    weighted: list[Weighted] = []
    skipped = 0
    for samples, references in zip(rl, sl, strict=True):
        kept = [kept_target_tokens(len(it.prompt_ids), len(it.target_ids), max_len, encoder_decoder) for it in samples]
        if samples and sum(kept):
            factors = sequence_factors(kept, aggregation, step_tokens, grad_accum * ranks, max_new_tokens)
            scale = rl_weight / (grad_accum * sum(kept))
            stored = all(it.behaviour for it in samples)  # else no diagnostics, and only importance "none"
            for item, factor in zip(samples, factors):
                returns = [factor * r for r in item.weights]
                if any(returns) or not skip_zero:
                    weighted.append(Weighted(TrainItem(item.prompt_ids, item.target_ids, returns,
                                                       item.behaviour if stored else ()), scale, importance))
                else:
                    skipped += 1
        tokens = sum(kept_target_tokens(len(it.prompt_ids), len(it.target_ids), max_len, encoder_decoder)
                     for it in references)
        weighted += [Weighted(item, sl_weight / (grad_accum * tokens)) for item in references if tokens]
    return weighted, skipped


def weighted_loss(logp: torch.Tensor, owner: torch.Tensor, weights: torch.Tensor, behaviour: torch.Tensor,
                  members: Sequence[Weighted], clip_eps: float = 0.2, tis_cap: float = 2.0,
                  start: torch.Tensor | None = None,
                  kl_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, float], dict[str, list[float]]]:
    """``Σ scale · term_t`` over a micro-batch's target tokens (``owner`` indexes ``members``), each
    token's term under its sequence's correction, plus ``kl_coef · Σ scale · k3_t`` over the RL tokens
    where ``start`` holds the start policy's log-probs (:attr:`rltf.config.OptimConfig.kl_coef`); also
    the RL, SL and KL parts and the diagnostics of the samples with stored log-probs."""
    device = logp.device
    scale = torch.tensor([w.scale for w in members], dtype=torch.float32, device=device)[owner.to(device)]
    kinds = [(w.importance, bool(w.item.behaviour)) for w in members]
    total, parts, diagnostics = logp.new_zeros(()), {"rl": 0.0, "sl": 0.0, "kl": 0.0}, {}
    if start is not None:
        rl = torch.tensor([w.importance is not None for w in members], device=device)[owner.to(device)]
        delta = start.to(device)[rl] - logp[rl]
        k3 = torch.exp(delta) - delta - 1
        part = kl_coef * (scale[rl] * k3).sum()
        total = total + part
        parts["kl"] = part.item()
        if k3.numel():
            diagnostics["kl_start"] = [k3.detach().mean().item()]
    for kind, stored in dict.fromkeys(kinds):
        chosen = torch.tensor([k == (kind, stored) for k in kinds], device=device)[owner.to(device)]
        terms, stats = token_terms(logp[chosen], weights.to(device)[chosen],
                                   behaviour.to(device)[chosen] if stored else None, kind or "none", clip_eps, tis_cap)
        part = (scale[chosen] * terms).sum()
        total = total + part
        parts["sl" if kind is None else "rl"] += part.item()
        for key, value in stats.items():
            diagnostics.setdefault(key, []).append(value.item())
    return total, parts, diagnostics


def _truncated(item: TrainItem, max_len: int) -> tuple[tuple[int, ...], int]:
    """The prompt and the number of target tokens :func:`rltf.train.losses.collate` would keep."""
    prompt = tuple(item.prompt_ids[-(max_len - 1):])
    if not prompt:
        raise ValueError("a packed sequence needs a prompt: its first target token has nothing to be predicted from")
    return prompt, kept_target_tokens(len(item.prompt_ids), len(item.target_ids), max_len, False)


def plan(items: Sequence[TrainItem], max_len: int, batch_tokens: int, row_tokens: int,
         share_prompts: bool = True) -> list[Rows]:
    """Micro-batches of rows of groups ``(prompt, item indices)``: a group's items share its prompt
    (one item each when ``share_prompts`` is off); a group longer than ``row_tokens`` is split, each
    part with the prompt again; rows hold at most ``row_tokens`` tokens, first-fit by length; a
    micro-batch holds rows while rows × its longest row stays within ``batch_tokens`` (at least one)."""
    if row_tokens < max_len or batch_tokens < row_tokens:
        raise ValueError(f"need max_seq_len ({max_len}) <= row tokens ({row_tokens}) <= batch tokens ({batch_tokens})")
    groups: dict[Any, tuple[tuple[int, ...], list[int]]] = {}
    for i, item in enumerate(items):
        prompt, kept = _truncated(item, max_len)
        if kept:
            groups.setdefault(prompt if share_prompts else i, (prompt, []))[1].append(i)
    parts: list[tuple[int, tuple[int, ...], list[int]]] = []
    for prompt, members in groups.values():
        size, current = len(prompt), []
        for i in members:
            kept = _truncated(items[i], max_len)[1]
            if current and size + kept > row_tokens:
                parts.append((size, prompt, current))
                size, current = len(prompt), []
            size += kept
            current.append(i)
        parts.append((size, prompt, current))
    rows: list[tuple[list[int], list[tuple[tuple[int, ...], list[int]]]]] = []  # ([size], groups)
    for size, prompt, members in sorted(parts, key=lambda part: -part[0]):
        row = next((r for r in rows if r[0][0] + size <= row_tokens), None)
        if row is None:
            rows.append(([size], [(prompt, members)]))
        else:
            row[0][0] += size
            row[1].append((prompt, members))
    batches: list[Rows] = []
    longest = 0
    for (size,), groups_of_row in sorted(rows, key=lambda r: -r[0][0]):
        if batches and (len(batches[-1]) + 1) * longest <= batch_tokens:
            batches[-1].append(groups_of_row)
        else:
            batches.append([groups_of_row])
            longest = size
    return batches


def build(rows: Rows, items: Sequence[TrainItem], max_len: int, pad_id: int) -> Packed:
    """The tensors of one micro-batch of :func:`plan`. Item indices are renumbered in the order the
    targets appear (``owner`` refers to that order: :func:`order`)."""
    lengths = [sum(len(prompt) + sum(_truncated(items[i], max_len)[1] for i in members) for prompt, members in row)
               for row in rows]
    width = max(lengths)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    group = torch.full((len(rows), width), -1, dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    is_prompt = torch.zeros((len(rows), width), dtype=torch.bool)
    sources, targets, weights, behaviour, owner = [], [], [], [], []
    owned, next_segment = 0, 0
    for r, row in enumerate(rows):
        at = 0
        for g, (prompt, members) in enumerate(row):
            n = len(prompt)
            ids[r, at:at + n] = torch.tensor(prompt)
            positions[r, at:at + n] = torch.arange(n)
            group[r, at:at + n], segment[r, at:at + n], is_prompt[r, at:at + n] = g, next_segment, True
            last, at, next_segment = r * width + at + n - 1, at + n, next_segment + 1
            for i in members:
                item, kept = items[i], _truncated(items[i], max_len)[1]
                ids[r, at:at + kept] = torch.tensor(list(item.target_ids[:kept]))
                positions[r, at:at + kept] = torch.arange(n, n + kept)
                group[r, at:at + kept], segment[r, at:at + kept] = g, next_segment
                sources += [last] + [r * width + at + j for j in range(kept - 1)]
                targets += list(item.target_ids[:kept])
                weights += list(item.weights[:kept])
                behaviour += list(item.behaviour[:kept]) if item.behaviour else [0.0] * kept
                owner += [owned] * kept
                at, owned, next_segment = at + kept, owned + 1, next_segment + 1
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same_group = group[:, :, None] == group[:, None, :]
    visible = (segment[:, :, None] == segment[:, None, :]) | is_prompt[:, None, :]
    mask = (causal & same_group & visible) | torch.eye(width, dtype=torch.bool)  # padding sees itself: no NaN
    keep = torch.zeros(len(rows) * width, dtype=torch.bool)
    source = torch.tensor(sources, dtype=torch.long)
    keep[source] = True
    rank = torch.cumsum(keep.long(), 0) - 1  # a kept position's index among the kept ones, row-major
    return Packed(ids, positions, mask[:, None], keep.view(len(rows), width), rank[source], torch.tensor(targets),
                  torch.tensor(weights, dtype=torch.float32), torch.tensor(behaviour, dtype=torch.float32),
                  torch.tensor(owner), sum(lengths))


def order(rows: Rows) -> list[int]:
    """The item indices of a micro-batch in the order :func:`build` numbers them (``owner``)."""
    return [i for row in rows for _, members in row for i in members]


def packed_logprobs(model: Any, batch: Packed) -> torch.Tensor:
    """``log p(w_t | prompt, w_<t)`` of every target token of the micro-batch, in ``source`` order.

    The LM head runs on the kept positions only, and the log-softmax is taken as logit minus
    log-sum-exp, without a vocabulary-wide copy per target token (a prompt's last position serves
    every target of its group)."""
    device = next(model.parameters()).device
    mask = batch.attention_mask.to(device)
    kwargs = {"input_ids": batch.input_ids.to(device), "position_ids": batch.position_ids.to(device),
              "attention_mask": mask if _boolean_masks(model) else torch.zeros(mask.shape, device=device).masked_fill(
                  ~mask, torch.finfo(torch.float32).min)}
    keep = batch.keep.to(device)
    if takes_logits_to_keep(model):
        picked = model(**kwargs, logits_to_keep=keep).logits
    else:
        picked = model(**kwargs).logits[keep]
    picked = picked.float()
    source, targets = batch.source.to(device), batch.targets.to(device)
    return picked[source, targets] - torch.logsumexp(picked, dim=-1)[source]


def micro_batches(items: Sequence[TrainItem], max_len: int, batch_tokens: int, row_tokens: int,
                  share_prompts: bool, encoder_decoder: bool) -> list[Rows]:
    """The step's micro-batches: packed rows for a causal LM (:func:`plan`), one padded item each for
    an encoder-decoder (its decoder cannot take a packed row)."""
    if encoder_decoder:
        return [[[((), [i])]] for i in range(len(items))]
    return plan(items, max_len, batch_tokens, row_tokens, share_prompts)


def tensors(rows: Rows, items: Sequence[TrainItem], max_len: int, pad_id: int,
            encoder_decoder: bool) -> Packed | Padded:
    """A micro-batch of :func:`micro_batches` as the forward takes it; its target tokens belong to the
    items in :func:`order`."""
    if encoder_decoder:
        return collate([items[i] for i in order(rows)], pad_id, max_len, True)
    return build(rows, items, max_len, pad_id)


def logprobs(model: Any, batch: Packed | Padded) -> torch.Tensor:
    """The log-probs of a micro-batch's target tokens, in the order of its ``owner``."""
    return packed_logprobs(model, batch) if isinstance(batch, Packed) else target_logprobs(model, batch)


def _boolean_masks(model: Any) -> bool:
    """SDPA and flash-style attention take a boolean mask (True: attend); eager adds a float one."""
    config = getattr(model, "config", None) or getattr(getattr(model, "module", None), "config", None)
    return getattr(config, "_attn_implementation", "sdpa") != "eager"
