"""The packed learner (shared prompts, token-budget rows, zero-weight samples skipped) gives the loss and
gradients of the per-micro-batch reference path: every aggregation, every importance correction, the SL term."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rltf.train.losses import (
    TrainItem,
    collate,
    kept_target_tokens,
    policy_loss,
    sequence_factors,
    target_logprobs,
    weighted_nll,
)
from rltf.train.packing import Weighted, build, order, packed_logprobs, plan, weigh, weighted_loss

MAX_LEN = 40
GRAD_ACCUM = 2


def kept(item: TrainItem) -> int:
    return kept_target_tokens(len(item.prompt_ids), len(item.target_ids), MAX_LEN, False)


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).float()


def step_batches(seed: int, stored: bool = True) -> tuple[list[list[TrainItem]], list[list[TrainItem]]]:
    """Two RL micro-batches of groups (4 samples share each prompt; one sample has all-zero returns,
    one a prompt longer than MAX_LEN) and two SL micro-batches, one reference sharing an RL prompt."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(1, 300) for _ in range(rng.randint(4, 12))] for _ in range(3)]
    prompts.append([rng.randrange(1, 300) for _ in range(MAX_LEN + 5)])  # truncated from the left

    def item(prompt: list[int], zero: bool = False, reference: bool = False) -> TrainItem:
        target = [rng.randrange(1, 300) for _ in range(rng.randint(1, 9))]
        if reference:
            return TrainItem(prompt, target, [1.0] * len(target))
        returns = [0.0] * len(target) if zero else [rng.uniform(-1.3, 1.0) for _ in target]
        return TrainItem(prompt, target, returns, [rng.uniform(-4.0, -0.05) for _ in target] if stored else ())

    rl = [[item(prompts[0]), item(prompts[0], zero=True), item(prompts[0]), item(prompts[1])],
          [item(prompts[1]), item(prompts[1]), item(prompts[3]), item(prompts[2])]]
    sl = [[item(prompts[2], reference=True), item(prompts[0], reference=True)],
          [item(prompts[3], reference=True), item(prompts[2], reference=True)]]
    return rl, sl


def reference_step(model: torch.nn.Module, rl: list[list[TrainItem]], sl: list[list[TrainItem]], aggregation: str,
                   importance: str) -> float:
    """The per-micro-batch path: each micro-batch padded, its token-mean loss over grad_accum."""
    tokens = [[kept(it) for it in batch] for batch in rl]
    step_tokens = sum(map(sum, tokens))
    total = 0.0
    for batch, sizes, references in zip(rl, tokens, sl, strict=True):
        factors = sequence_factors(sizes, aggregation, step_tokens, GRAD_ACCUM)
        scaled = [TrainItem(it.prompt_ids, it.target_ids, [f * r for r in it.weights], it.behaviour)
                  for it, f in zip(batch, factors, strict=True)]
        padded = collate(scaled, 0, MAX_LEN, False)
        stored = all(it.behaviour for it in batch)
        loss = policy_loss(target_logprobs(model, padded), padded.weights, padded.behaviour if stored else None,
                           importance)[0] / GRAD_ACCUM
        padded = collate(references, 0, MAX_LEN, False)
        loss = loss + weighted_nll(target_logprobs(model, padded), padded.weights) / GRAD_ACCUM
        loss.backward()
        total += loss.item()
    return total


def packed_step(model: torch.nn.Module, rl: list[list[TrainItem]], sl: list[list[TrainItem]], aggregation: str,
                importance: str, share: bool, batch_tokens: int) -> tuple[float, int, int]:
    """The trainer's path: weigh, plan, build, forward, weighted loss, one backward per micro-batch."""
    weighted, skipped = weigh(rl, sl, rl_weight=1.0, sl_weight=1.0, grad_accum=GRAD_ACCUM, ranks=1,
                              aggregation=aggregation, importance=importance,
                              step_tokens=sum(kept(it) for b in rl for it in b), max_len=MAX_LEN)
    items = [w.item for w in weighted]
    batches = plan(items, MAX_LEN, batch_tokens, MAX_LEN, share)
    total, fed = 0.0, 0
    for rows in batches:
        packed = build(rows, items, MAX_LEN, 0)
        loss, _, _ = weighted_loss(packed_logprobs(model, packed), packed.owner, packed.weights, packed.behaviour,
                                   [weighted[i] for i in order(rows)])
        loss.backward()
        total += loss.item()
        fed += packed.tokens
    return total, skipped, fed


def gradients(model: torch.nn.Module) -> torch.Tensor:
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("importance", ["none", "ppo_clip", "tis"])
@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean", "global_token_mean"])
def test_packed_step_is_the_reference_step(aggregation: str, importance: str) -> None:
    model = tiny_model()
    rl, sl = step_batches(seed=len(aggregation) + len(importance))
    with torch.no_grad():  # a learner some way from the behaviour policy: ratios away from 1, some clipped
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    expected_loss = reference_step(model, rl, sl, aggregation, importance)
    expected = gradients(model)
    for share, budget in ((True, 80), (False, 80), (True, MAX_LEN)):
        loss, skipped, _ = packed_step(model, rl, sl, aggregation, importance, share, budget)
        got = gradients(model)
        assert skipped == 1  # the sample of zero returns never ran
        assert loss == pytest.approx(expected_loss, rel=1e-5)
        assert float((got - expected).abs().max() / expected.abs().max()) < 1e-5


def test_samples_without_log_probs_train_uncorrected_and_reject_a_correction() -> None:
    model = tiny_model()
    rl, sl = step_batches(seed=3, stored=False)
    expected_loss = reference_step(model, rl, sl, "token_mean", "none")
    expected = gradients(model)
    loss, _, _ = packed_step(model, rl, sl, "token_mean", "none", True, 80)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    assert float((gradients(model) - expected).abs().max() / expected.abs().max()) < 1e-5
    with pytest.raises(ValueError, match="needs the behaviour log-probs"):
        packed_step(model, rl, sl, "token_mean", "ppo_clip", True, 80)


def test_a_shared_prompt_runs_once_and_rows_respect_the_budget() -> None:
    rl, sl = step_batches(seed=5)
    items = [it for batch in rl + sl for it in batch]
    sizes = {i: kept(it) for i, it in enumerate(items)}
    for share in (True, False):
        batches = plan(items, MAX_LEN, 100, 50, share)
        seen = [i for rows in batches for i in order(rows)]
        assert sorted(seen) == list(range(len(items)))  # every sequence once
        prompts = [prompt for rows in batches for row in rows for prompt, _ in row]
        for rows in batches:
            lengths = [sum(len(p) + sum(sizes[i] for i in members) for p, members in row) for row in rows]
            assert max(lengths) <= 50 and len(rows) * max(lengths) <= 100
            packed = build(rows, items, MAX_LEN, 0)
            assert packed.tokens == sum(lengths) and len(packed.targets) == sum(sizes[i] for i in order(rows))
        # shared: each distinct prompt as often as its group had to be split; unshared: once per sequence
        assert len(prompts) < len(items) if share else len(prompts) == len(items)
    mask = build([[((7, 8), [0, 1])]], [TrainItem([7, 8], [1, 2], [1.0, 1.0]), TrainItem([7, 8], [3], [1.0])],
                 MAX_LEN, 0).attention_mask[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0],  # prompt
                    [1, 1, 0, 0, 0],
                    [1, 1, 1, 0, 0],  # first target: the prompt and itself
                    [1, 1, 1, 1, 0],
                    [1, 1, 0, 0, 1]]  # second target: the prompt, not the first target


def test_kl_to_the_start_policy_by_hand() -> None:
    """k3 = e^(q-p) - (q-p) - 1 on the RL tokens only, scaled like the RL term, and its gradient pulls p to q."""
    p = torch.log(torch.tensor([0.5, 0.25, 0.4])).requires_grad_()
    q = torch.log(torch.tensor([0.25, 0.5, 0.1]))
    owner = torch.tensor([0, 0, 1])  # two tokens of an RL sample, one of a reference
    members = [Weighted(TrainItem([1], [2, 3], [0.5, -1.0]), 0.3, "none"), Weighted(TrainItem([1], [4], [1.0]), 0.7)]
    weights, behaviour = torch.tensor([0.5, -1.0, 1.0]), torch.zeros(3)
    loss, parts, diagnostics = weighted_loss(p, owner, weights, behaviour, members, start=q, kl_coef=0.1)
    k3 = [(0.25 / 0.5) - math.log(0.25 / 0.5) - 1, (0.5 / 0.25) - math.log(0.5 / 0.25) - 1]
    rl = -0.3 * (0.5 * math.log(0.5) - 1.0 * math.log(0.25))
    assert parts["rl"] == pytest.approx(rl) and parts["sl"] == pytest.approx(-0.7 * math.log(0.4))
    assert parts["kl"] == pytest.approx(0.1 * 0.3 * sum(k3))
    assert loss.item() == pytest.approx(rl + parts["sl"] + parts["kl"])
    assert diagnostics["kl_start"] == [pytest.approx(sum(k3) / 2)]
    loss.backward()  # d k3 / dp = 1 - e^(q-p): p above q is pushed down, below q pushed up
    assert p.grad.tolist() == pytest.approx([-0.3 * 0.5 + 0.03 * (1 - 0.5), 0.3 * 1.0 + 0.03 * (1 - 2.0), -0.7])
    no_kl, parts, _ = weighted_loss(p, owner, weights, behaviour, members)
    assert parts["kl"] == 0 and no_kl.item() == pytest.approx(rl + parts["sl"])
