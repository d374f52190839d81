"""Stabilisers and the curriculum for sparse rewards: learnable-problem draws, their online
estimates, the pre-pass, zero-advantage filtering, the overlong mask and Dr. GRPO's normaliser."""

from __future__ import annotations

import random

import pytest

from rltf.feedback import FeedbackConfig, ProgramSpan
from rltf.generation import Completion
from rltf.judge.verdict import ErrorInfo, Verdict
from rltf.problems import Problem
from rltf.train.curriculum import LearnableSampler, estimate_pass_rates
from rltf.train.losses import sequence_factors
from rltf.train.rewards import score
from rltf.train.rollout import Group, Judged, Sampled

PROBLEM = Problem(id="p", source="test", prompt="", tests={"kind": "assert", "cases": []})


def judged(status: str, passed: int, tokens: int = 1, finish: str = "eos") -> Judged:
    completion = Completion("x" * tokens, (1,) * tokens, tuple((i, i + 1) for i in range(tokens)), (-0.1,) * tokens,
                            finish)
    return Judged(completion, ProgramSpan("", 0, tokens), Verdict(status=status, passed=passed, total=2))


def crashed() -> Judged:
    """A runtime error on line 1 of ``x = 1 / 0``: the fine-grained term marks that line's tokens."""
    program = "x = 1 / 0\n"
    completion = Completion(program, (1,) * len(program), tuple((i, i + 1) for i in range(len(program))),
                            (-0.1,) * len(program), "eos")
    verdict = Verdict("error", 0, 2, ErrorInfo("runtime", "ZeroDivisionError", "division by zero", 1))
    return Judged(completion, ProgramSpan("", 0, len(program)), verdict)


def test_learnable_draw_weights_and_their_online_update() -> None:
    sampler = LearnableSampler(4, seed=0, floor=0.02, decay=0.5)
    assert sampler.weights() == pytest.approx([0.27] * 4)  # unknown: p = 1/2, the largest weight
    sampler.rates = [0.0, 1.0, 0.5, 0.2]
    assert sampler.weights() == pytest.approx([0.02, 0.02, 0.27, 0.18])
    sampler.update(0, passed=2, total=4)  # 0.5 * 0.0 + 0.5 * 0.5
    sampler.update(3, passed=0, total=0)  # no samples: unchanged
    assert sampler.rates == pytest.approx([0.25, 1.0, 0.5, 0.2])
    fresh = LearnableSampler(4, seed=0, floor=0.02, decay=0.5)
    fresh.update(1, passed=3, total=4)  # the first estimate is the group's rate itself
    assert fresh.rates[1] == 0.75
    # draws are distinct and follow the weights: over many calls the learnable problem comes first most
    sampler = LearnableSampler(3, seed=1, floor=0.01, decay=0.5)
    sampler.rates = [0.0, 0.5, 1.0]
    draws = [sampler.draw(2) for _ in range(400)]
    assert all(len(set(d)) == 2 for d in draws)
    firsts = [d[0] for d in draws]
    assert firsts.count(1) > 0.9 * len(firsts)  # weight 0.26 against 0.01 and 0.01
    state = sampler.state_dict()
    later = sampler.draw(2)
    again = LearnableSampler(3, seed=99, floor=0.01, decay=0.5)
    again.load_state_dict(state)
    assert again.draw(2) == later and again.rates == sampler.rates


def test_pass_rate_pre_pass_samples_only_what_the_cache_lacks() -> None:
    problems = [Problem(id=f"p{i}", source="test", prompt="", tests={"kind": "assert", "cases": []}) for i in range(5)]
    calls, saved = [], []

    def sample(batch):
        calls.append([p.id for p in batch])
        return {p.id: [True, False, False, int(p.id[1:]) % 2 == 0] for p in batch}

    rates = estimate_pass_rates(problems, sample, {"p1": 0.9}, per_call=3, save=lambda r: saved.append(dict(r)))
    assert calls == [["p0", "p2", "p3"], ["p4"]]  # p1 from the cache, 3 problems per call
    assert rates == pytest.approx([0.5, 0.9, 0.5, 0.25, 0.5])
    assert len(saved) == 2 and saved[-1]["p1"] == 0.9 and set(saved[0]) == {"p0", "p1", "p2", "p3"}


def test_zero_advantage_groups_are_filtered_under_grpo_and_logged() -> None:
    same = Group(PROBLEM, None, [crashed()] * 4)  # one reward: advantages zero, the fine-grained term not
    mixed = Group(PROBLEM, None, [judged("pass", 2), judged("fail", 1), judged("fail", 0), judged("pass", 2)])
    config = FeedbackConfig(baseline="grpo")
    kept = score(Sampled([same, mixed]), [(5,)] * 2, config, step=0, drop_without_signal=True)
    assert kept.groups == 2 and kept.groups_without_signal == 1 and len(kept.samples) == 4
    assert {s.reward for s in kept.samples} == {1.0, -0.3 + 1.3 * 0.5, -0.3}
    metrics = kept.metrics()
    assert metrics["frac_reward_zero_std"] == 0.5 and metrics["groups_with_pass"] == 1
    assert metrics["completion_length_mean"] == pytest.approx((10 * 4 + 4) / 8)
    unfiltered = score(Sampled([same, mixed]), [(5,)] * 2, config, step=0)
    assert len(unfiltered.samples) == 8 and unfiltered.groups_without_signal == 0  # both groups train
    assert any(r for s in unfiltered.samples[:4] for r in s.returns)  # the fine term: what filtering drops
    greedy = score(Sampled([same]), [(5,)], FeedbackConfig(baseline="none"), step=0, drop_without_signal=True)
    assert len(greedy.samples) == 4  # other baselines: the fine-grained term is still a signal


def test_overlong_mask_trains_on_no_cut_completion() -> None:
    group = Group(PROBLEM, None, [judged("fail", 0, tokens=4, finish="length"), judged("pass", 2, tokens=2)])
    rollout = score(Sampled([group]), [(5,)], FeedbackConfig(baseline="none", overlong="mask"), step=0,
                    max_new_tokens=4)
    assert len(rollout.samples) == 1 and rollout.masked_overlong == 1
    metrics = rollout.metrics()
    assert metrics["completion_truncated_frac"] == 0.5 and metrics["samples_masked_overlong"] == 1
    assert rollout.programs == 2  # the verdict mix still counts it


def test_constant_normaliser_is_dr_grpos() -> None:
    # a micro-batch of 2 sequences of 3 and 5 tokens, limit 8: token mean x factor = sum / (2 x 8)
    kept = [3, 5]
    factors = sequence_factors(kept, "constant", step_tokens=8, grad_accum=1, max_new_tokens=8)
    terms = [[random.random() for _ in range(k)] for k in kept]
    token_mean = sum(f * t for f, seq in zip(factors, terms) for t in seq) / sum(kept)
    assert token_mean == pytest.approx(sum(map(sum, terms)) / (2 * 8))
    with pytest.raises(ValueError):
        sequence_factors(kept, "constant", 8, 1)


def test_sample_passes_and_summary_read_the_sampled_programs_only(tmp_path) -> None:
    from rltf.train.curriculum import pass_rate_summary, sample_passes

    records = [{"problem_id": "a", "greedy": True, "status": "pass"},
               {"problem_id": "a", "greedy": False, "status": "fail"},
               {"problem_id": "a", "greedy": False, "status": "pass"},
               {"problem_id": "b", "greedy": False, "status": "error"}]
    assert sample_passes(records) == {"a": [False, True], "b": [False]}
    problems = [Problem(id=i, source="test", prompt="", tests={"kind": "assert", "cases": []}) for i in "abc"]
    summary = pass_rate_summary(problems, [0.5, 0.0, 1.0], tmp_path / "c.json", 1.0)
    assert (summary["learnable"], summary["never"], summary["always"]) == (1, 1, 1)


def test_learnable_selection_runs_its_pre_pass_once_per_model(tmp_path, monkeypatch, tiny_config) -> None:
    import json

    from rltf.train import Trainer, read_metrics

    monkeypatch.setenv("RLTF_CACHE", str(tmp_path / "cache"))
    config = tiny_config("steps=1", "eval.at_end=false", "rollout.selection=learnable", "rollout.selection_samples=2")
    trainer = Trainer(config, tmp_path / "a", show_progress=False)
    assert trainer.run() == 1
    summary = json.loads((tmp_path / "a" / "pass_rates.json").read_text())
    assert len(summary["rates"]) == 6 and summary["learnable"] + summary["never"] + summary["always"] == 6
    cached = list((tmp_path / "cache" / "pass-rates").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text()) == summary["rates"]
    # the step's groups moved their problems' estimates (a group's rate, folded in at decay 1/2)
    drawn = {r["problem_id"] for r in read_metrics(tmp_path / "a", "samples.jsonl")}
    assert len(drawn) == 2 and all(trainer.sampler.rates[i] is not None for i in range(6))
    marked = {problem_id: 0.125 for problem_id in summary["rates"]}  # what sampling cannot give with 2 samples
    cached[0].write_text(json.dumps(marked))
    Trainer(config, tmp_path / "b", show_progress=False).run()  # same model and settings: read, not sampled
    assert json.loads((tmp_path / "b" / "pass_rates.json").read_text())["rates"] == marked
    # a fresh machine (empty cache) with a finished run's estimates put in the new run's directory: read, not sampled
    monkeypatch.setenv("RLTF_CACHE", str(tmp_path / "fresh-cache"))
    given = {problem_id: 0.375 for problem_id in summary["rates"]}
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "pass_rates.json").write_text(json.dumps({**summary, "rates": given}))
    Trainer(config, tmp_path / "c", show_progress=False).run()
    assert json.loads((tmp_path / "c" / "pass_rates.json").read_text())["rates"] == given
    assert not (tmp_path / "fresh-cache" / "pass-rates").exists()  # nothing was sampled, so nothing cached
    # supervised only (no rollouts): no problem is drawn, so no pre-pass
    Trainer(tiny_config("steps=1", "eval.at_end=false", "rollout.selection=learnable", "rollout.enabled=false",
                        "optim.rl_weight=0", "optim.sl_weight=1"), tmp_path / "d", show_progress=False).run()
    assert not (tmp_path / "d" / "pass_rates.json").exists() and not (tmp_path / "fresh-cache" / "pass-rates").exists()
