from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rltf.config import load_config
from rltf.train import Trainer, read_metrics, read_samples
from rltf.train.curriculum import ProblemSampler
from rltf.train.losses import (
    TrainItem,
    collate,
    kept_target_tokens,
    policy_loss,
    sequence_factors,
    takes_logits_to_keep,
    target_logprobs,
    weighted_nll,
)

REQUIRED = {"step", "loss", "loss_rl", "loss_sl", "reward_mean", "reward_adaptive", "reward_fine", "reward_baseline",
            "sample_pass_rate", "time_gen_s", "time_judge_s", "time_train_s", "tokens_per_s_gen",
            "tokens_per_s_train", "verdicts", "buffer_size", "lr", "grad_norm", "samples_trained_frac",
            "samples_dropped_unused", "staleness_max"}


class FixedLogits(torch.nn.Module):
    """A causal 'model' whose logits at position i are row i of a table, whatever the input."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[: input_ids.shape[1]].expand(input_ids.shape[0], -1, -1))


def test_policy_gradient_and_cross_entropy_by_hand() -> None:
    # vocab of 3; row i predicts the token at position i + 1
    table = [[0.0, math.log(3.0), 0.0], [math.log(2.0), 0.0, math.log(2.0)], [0.0, 0.0, 0.0]]
    model = FixedLogits(table)
    items = [TrainItem([0], [1, 2], [2.0, -1.0], [-0.5, -0.9]), TrainItem([0, 1], [0], [0.5])]
    batch = collate(items, pad_id=0, max_len=16, encoder_decoder=False)
    assert batch.inputs["input_ids"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert batch.inputs["target_mask"].tolist() == [[False, True, True], [False, False, True]]
    assert batch.owner.tolist() == [0, 0, 1] and batch.tokens == 6  # 3 + 3 real tokens, no padding counted
    logp, weights = target_logprobs(model, batch), batch.weights
    assert batch.behaviour.tolist() == pytest.approx([-0.5, -0.9, 0.0])  # a reference has no behaviour log-probs
    # row 0 -> p(1) = 3/5; row 1 -> p(2) = 2/5; the second sequence's target sits at position 2: row 1, p(0) = 2/5
    expected = torch.tensor([math.log(3 / 5), math.log(2 / 5), math.log(2 / 5)])
    assert torch.allclose(logp, expected, atol=1e-6)
    assert weights.tolist() == [2.0, -1.0, 0.5]
    loss = weighted_nll(logp, weights)
    by_hand = -(2.0 * math.log(3 / 5) - 1.0 * math.log(2 / 5) + 0.5 * math.log(2 / 5)) / 3  # mean over 3 tokens
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
    loss.backward()  # the gradient reaches the logits
    assert model.table.grad is not None and model.table.grad.abs().sum() > 0
    ce = weighted_nll(logp.detach(), torch.ones(3))
    assert ce.item() == pytest.approx(-(math.log(3 / 5) + 2 * math.log(2 / 5)) / 3, abs=1e-6)
    assert weighted_nll(torch.zeros(0), torch.zeros(0)).item() == 0.0


def test_lm_head_on_target_positions_only_gives_the_same_logprobs_and_gradients() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))

    class NoKeep(torch.nn.Module):  # the same model behind a forward without logits_to_keep
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    items = [TrainItem([3, 4, 5], [6, 7], [1.0, -0.5]), TrainItem([8], [9, 10, 11, 12], [0.3, 0.3, 0.3, 2.0])]
    batch = collate(items, pad_id=0, max_len=16, encoder_decoder=False)
    assert takes_logits_to_keep(model) and not takes_logits_to_keep(NoKeep())
    with torch.no_grad():  # by hand: every position's logits, row t scoring token t + 1
        logits = model(input_ids=batch.inputs["input_ids"], attention_mask=batch.inputs["attention_mask"]).logits
    by_hand = [torch.log_softmax(logits[row, start + t - 1], -1)[token].item() for row, item in enumerate(items)
               for start in [len(item.prompt_ids)] for t, token in enumerate(item.target_ids)]
    grads = []
    for wrapped in (model, NoKeep()):
        model.zero_grad()
        logp = target_logprobs(wrapped, batch)
        assert logp.tolist() == pytest.approx(by_hand, abs=1e-5)
        weighted_nll(logp, batch.weights).backward()
        grads.append(model.model.embed_tokens.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6) and grads[0].abs().sum() > 0


def test_importance_ratio_and_clipping_by_hand() -> None:
    logp = torch.tensor([math.log(0.5), math.log(0.2), math.log(0.9)], requires_grad=True)
    behaviour = torch.log(torch.tensor([0.25, 0.4, 0.9]))  # ratios 2.0, 0.5, 1.0
    returns = torch.tensor([1.0, 1.0, -2.0])

    plain, stats = policy_loss(logp, returns, behaviour, "none")
    assert plain.item() == pytest.approx(weighted_nll(logp, returns).item())
    assert stats["ratio"].item() == pytest.approx((2.0 + 0.5 + 1.0) / 3) and "clipped" not in stats
    unlogged, stats = policy_loss(logp, returns, None, "none")  # no stored log-probs: no diagnostics
    assert stats == {} and unlogged.item() == plain.item()
    with pytest.raises(ValueError, match="needs the behaviour log-probs"):
        policy_loss(logp, returns, None, "ppo_clip")

    # PPO: min(ρA, clip(ρ, 0.8, 1.2)A) = min(2, 1.2), min(0.5, 0.8), -2 -> 1.2, 0.5, -2
    loss, stats = policy_loss(logp, returns, behaviour, "ppo_clip", clip_eps=0.2)
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 2.0) / 3)
    assert stats["ratio"].item() == pytest.approx((2.0 + 0.5 + 1.0) / 3)
    assert stats["clipped"].item() == pytest.approx(2 / 3)
    kl = ((2.0 - 1 - math.log(2.0)) + (0.5 - 1 - math.log(0.5)) + 0.0) / 3
    assert stats["kl"].item() == pytest.approx(kl)
    (grad,) = torch.autograd.grad(loss, logp)
    # the clipped token (ρ = 2 > 1.2, A > 0) gets no gradient; the others -ρA/3
    assert grad.tolist() == pytest.approx([0.0, -0.5 / 3, 2.0 / 3])

    # truncated IS: weights min(ρ, 1.5) = 1.5, 0.5, 1.0, held constant
    loss, stats = policy_loss(logp, returns, behaviour, "tis", tis_cap=1.5)
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad.tolist() == pytest.approx([-1.5 / 3, -0.5 / 3, 2.0 / 3])
    assert stats["clipped"].item() == pytest.approx(1 / 3)

    # on-policy (ρ = 1) every kind has the plain policy gradient
    same = logp.detach().clone()
    for kind in ("none", "ppo_clip", "tis"):
        (grad,) = torch.autograd.grad(policy_loss(logp, returns, same, kind)[0], logp)
        assert grad.tolist() == pytest.approx((-returns / 3).tolist())
    with pytest.raises(ValueError):
        policy_loss(logp, returns, behaviour, "ppo")


@pytest.mark.parametrize("kind", ["none", "ppo_clip", "tis"])
def test_loss_aggregations_by_hand(kind: str) -> None:
    # two micro-batches (grad_accum 2) of sequences with 1 + 3 and 2 tokens: per-token terms l_t
    torch.manual_seed(0)
    lengths = [[1, 3], [2]]
    logps = [torch.randn(sum(k), requires_grad=True) for k in lengths]
    behaviours = [lp.detach() + 0.1 * torch.randn(lp.shape) for lp in logps]
    returns = [torch.randn(lp.shape) for lp in logps]

    def terms(i: int) -> torch.Tensor:  # the per-token terms, as policy_loss's mean sees them
        return torch.stack([policy_loss(logps[i][t:t + 1], returns[i][t:t + 1], behaviours[i][t:t + 1], kind)[0]
                            for t in range(sum(lengths[i]))])

    def aggregated(how: str) -> float:
        total = 0.0
        for i, kept in enumerate(lengths):
            factors = sequence_factors(kept, how, step_tokens=6, grad_accum=2)
            scaled = returns[i] * torch.tensor([c for c, k in zip(factors, kept) for _ in range(k)])
            total += policy_loss(logps[i], scaled, behaviours[i], kind)[0].item() / 2
        return total

    l0, l1 = terms(0), terms(1)
    assert aggregated("token_mean") == pytest.approx((l0.mean().item() + l1.mean().item()) / 2, abs=1e-6)
    seq0 = (l0[:1].mean() + l0[1:].mean()).item() / 2
    assert aggregated("seq_mean") == pytest.approx((seq0 + l1.mean().item()) / 2, abs=1e-6)
    assert aggregated("global_token_mean") == pytest.approx((l0.sum() + l1.sum()).item() / 6, abs=1e-6)
    with pytest.raises(ValueError):
        sequence_factors([1], "median", 1, 1)
    assert kept_target_tokens(prompt_len=10, target_len=8, max_len=16, encoder_decoder=False) == 6
    assert kept_target_tokens(prompt_len=20, target_len=8, max_len=16, encoder_decoder=False) == 1
    assert kept_target_tokens(prompt_len=20, target_len=30, max_len=16, encoder_decoder=True) == 16


def test_collate_truncates_targets_and_pads_encoder_decoder() -> None:
    causal = collate([TrainItem(list(range(10, 16)), [1, 2, 3, 4], [1.0] * 4)], 0, max_len=8, encoder_decoder=False)
    assert causal.inputs["input_ids"].tolist() == [[10, 11, 12, 13, 14, 15, 1, 2]]  # target cut at the length limit
    assert causal.weights.tolist() == [1.0, 1.0] and causal.owner.tolist() == [0, 0]
    seq2seq = collate([TrainItem([5, 6, 7], [1, 2], [0.5, 0.25]), TrainItem([5], [3], [1.0])], 0, 8, True)
    assert seq2seq.inputs["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert seq2seq.inputs["labels"].tolist() == [[1, 2], [3, -100]]
    assert seq2seq.weights.tolist() == [0.5, 0.25, 1.0] and seq2seq.owner.tolist() == [0, 0, 1]


def test_problem_sampler_covers_each_problem_once_per_epoch_and_resumes() -> None:
    sampler = ProblemSampler(5, seed=3)
    first = sampler.draw(5)
    assert sorted(first) == list(range(5))
    state = sampler.state_dict()
    later = sampler.draw(7)
    assert sorted(later[:5]) == list(range(5)) and sampler.epoch == 2
    again = ProblemSampler(5, seed=99)
    again.load_state_dict(state)
    assert again.draw(7) == later


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, tiny_config) -> Path:
    run_dir = tmp_path_factory.mktemp("full")
    assert Trainer(tiny_config(), run_dir, show_progress=False).run() == 3
    return run_dir


def test_training_leaves_out_mbpp_leaks_before_the_limit(tmp_path: Path, tiny_config) -> None:
    kept = Trainer(tiny_config(), tmp_path / "a", show_progress=False).problems  # 607, 608 twin validation 534, test 67
    assert [p.id for p in kept] == ["mbpp/601", "mbpp/603", "mbpp/604", "mbpp/605", "mbpp/606", "mbpp/609"]
    leaky = Trainer(tiny_config("data.drop_leaks=false"), tmp_path / "b", show_progress=False).problems
    assert [p.id for p in leaky][:2] == ["mbpp/601", "mbpp/602"] and len(leaky) == 6  # 602 repeats test 217


def test_tiny_smoke_trains_online_end_to_end(full_run: Path, model_weights) -> None:
    records = read_metrics(full_run)
    assert [r["step"] for r in records] == [1, 2, 3]
    for record in records:
        assert set(record) >= REQUIRED, REQUIRED - set(record)
        assert sum(record["verdicts"].values()) == 4  # 2 problems x 2 samples, judged
        assert record["greedy_pass_rate"] is not None  # the baselines, judged apart from the samples
        assert record["samples_new"] + record["samples_dropped_infra"] <= 4
        assert record["loss_sl"] > 0 and record["loss_rl"] is not None
        assert record["train_references"] == 4  # sl_micro_batch null: micro_batch 2 x grad_accum 2
        assert record["learner_dtype"] == "float32" and record["engine"] == "hf"  # what the run used, per step
    assert all(r["buffer_added"] > 0 for r in records)  # update_freq 1: every step refreshes
    programs = read_samples(full_run)  # every judged program, greedy baselines too, with its verdict
    assert [p["step"] for p in programs] == [step for step in (1, 2, 3) for _ in range(2 * (2 + 1))]
    for record in records:
        sampled = [p for p in programs if p["step"] == record["step"] and not p["greedy"]]
        assert Counter(p["category"] for p in sampled) == +Counter(record["verdicts"])
        greedy = [p for p in programs if p["step"] == record["step"] and p["greedy"]]
        assert sum(p["status"] == "pass" for p in greedy) / len(greedy) == record["greedy_pass_rate"]
    assert all(isinstance(p["program"], str) and p["total"] > 0 for p in programs)
    checkpoint = full_run / "checkpoints" / "step-000003"
    assert sorted(p.name for p in (full_run / "checkpoints").iterdir()) == ["step-000003"]  # keep 1
    before, after = model_weights(full_run / "init-model"), model_weights(checkpoint / "model")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(checkpoint / "model")  # plain HF format
    AutoTokenizer.from_pretrained(checkpoint / "model")


def test_resume_after_interruption_matches_uninterrupted_run(full_run: Path, tmp_path: Path, tiny_config,
                                                             model_weights) -> None:
    run_dir = tmp_path / "run"
    assert Trainer(tiny_config(), run_dir, show_progress=False).run(stop_at=2) == 2
    # What a kill -9 can leave behind: a half-written checkpoint, the next step's metrics line, a torn line.
    (run_dir / "checkpoints" / ".tmp-step-000003").mkdir()
    with (run_dir / "metrics.jsonl").open("a") as sink:
        sink.write(json.dumps({"step": 3, "loss": 123.0}) + "\n" + '{"step": 4, "lo')
    with (run_dir / "samples.jsonl").open("a") as sink:  # step 3's programs, written before its checkpoint
        sink.write(json.dumps({"step": 3, "program": "half a step"}) + "\n")
    with pytest.raises(FileExistsError):
        Trainer(tiny_config(), run_dir, show_progress=False)
    resumed = Trainer(tiny_config(), run_dir, resume=True, show_progress=False)
    assert resumed.step == 2 and not (run_dir / "checkpoints" / ".tmp-step-000003").exists()
    assert resumed.run() == 3

    assert read_samples(run_dir) == read_samples(full_run)  # step 3's programs written once
    full, mine = read_metrics(full_run), read_metrics(run_dir)
    assert [r["step"] for r in mine] == [1, 2, 3]
    for a, b in zip(full, mine):
        for key in ("verdicts", "samples_new", "buffer_size", "buffer_added", "buffer_dropped", "reward_mean",
                    "gen_tokens", "train_tokens", "staleness_mean"):
            assert a[key] == b[key], key
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
    ref, got = [torch.load(d / "checkpoints" / "step-000003" / "buffer.pt", weights_only=True)
                for d in (full_run, run_dir)]
    assert [s["problem_id"] for s in ref["samples"]] == [s["problem_id"] for s in got["samples"]]
    for x, y in zip(ref["samples"], got["samples"]):
        assert torch.equal(x["completion_ids"], y["completion_ids"]) and torch.equal(x["returns"], y["returns"])
    assert ref["rng"] == got["rng"]
    state = [torch.load(d / "checkpoints" / "step-000003" / "trainer.pt", weights_only=True)
             for d in (full_run, run_dir)]
    assert state[0]["sampler"] == state[1]["sampler"] and state[0]["sl_rng"] == state[1]["sl_rng"]
    a, b = (model_weights(d / "checkpoints" / "step-000003" / "model") for d in (full_run, run_dir))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_a_finished_run_resumed_with_more_steps_is_the_longer_run(full_run: Path, tmp_path: Path, tiny_config,
                                                                  model_weights) -> None:
    # under a constant learning rate: what experiments/ablation-scaled-long relies on to continue 80-step runs
    run_dir = tmp_path / "run"
    assert Trainer(tiny_config("steps=2"), run_dir, show_progress=False).run() == 2
    assert Trainer(tiny_config(), run_dir, resume=True, show_progress=False).run() == 3
    assert read_samples(run_dir) == read_samples(full_run)
    assert [r["loss"] for r in read_metrics(run_dir)] == pytest.approx([r["loss"] for r in read_metrics(full_run)],
                                                                       rel=1e-4, abs=1e-5)
    a, b = (model_weights(d / "checkpoints" / "step-000003" / "model") for d in (full_run, run_dir))
    assert all(torch.allclose(a[key], b[key], atol=1e-6) for key in a)


def test_lost_metrics_line_comes_back_from_the_checkpoint(full_run: Path, tmp_path: Path, tiny_config) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(full_run, run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")  # killed after the rename
    Trainer(tiny_config(), run_dir, resume=True, show_progress=False)
    assert [r["step"] for r in read_metrics(run_dir)] == [1, 2, 3]


def test_offline_rloo_ppo_with_lora_checkpoints_adapter_and_merged_model(tmp_path: Path, tiny_config,
                                                                        model_weights) -> None:
    config = tiny_config("steps=2", "rollout.online=false", "data.limit=2", "feedback.baseline=rloo",
                         "model.lora.enabled=true", "model.lora.target_modules=[q_proj, v_proj]", "optim.sl_weight=0",
                         "optim.importance=ppo_clip", "optim.loss_aggregation=global_token_mean", "optim.grad_accum=2")
    trainer = Trainer(config, tmp_path, show_progress=False)
    assert trainer.run(stop_at=1) == 1
    records = read_metrics(tmp_path)
    assert records[0]["samples_new"] == 0 and records[0]["time_gen_s"] == 0  # no generation once offline
    assert records[0]["loss_sl"] is None and records[0]["buffer_size"] > 0
    checkpoint = tmp_path / "checkpoints" / "step-000001"
    assert (checkpoint / "adapter" / "adapter_config.json").is_file()
    merged = model_weights(checkpoint / "model")
    assert not any("lora" in k for k in merged)
    resumed = Trainer(config, tmp_path, resume=True, show_progress=False)
    assert len(resumed.buffer) == records[0]["buffer_size"] and resumed.offline_done
    assert resumed.run() == 2
    first, second = read_metrics(tmp_path)  # offline samples, importance-corrected against the learner
    # step 1: the learner is the sampling policy (LoRA starts at zero, the hf engine is exact), so the
    # ratio is 1 and nothing is clipped; step 2 scores the same samples after an update at lr 1e-3
    assert first["importance_ratio_mean"] == pytest.approx(1.0, abs=1e-4) and first["importance_clip_frac"] == 0
    assert second["kl_behaviour_current"] > 100 * first["kl_behaviour_current"]
    assert second["importance_ratio_mean"] != first["importance_ratio_mean"]


@pytest.mark.parametrize("engine", ["ct2", "llamacpp"])
def test_fast_engines_sync_every_n_steps_and_versions_are_what_they_served(tmp_path: Path, engine: str,
                                                                          tiny_config) -> None:
    config = tiny_config("steps=3", f"engine.name={engine}", "engine.compute_type=float32", "engine.workers=1",
                         "engine.sync_every=2", "model.lora.enabled=true", "model.lora.target_modules=[q_proj, v_proj]",
                         "optim.lr=0.05", "eval.at_end=false")
    trainer = Trainer(config, tmp_path, show_progress=False)
    versions: list[list[int]] = []
    stage = trainer.buffer.stage
    trainer.buffer.stage = lambda samples: (versions.append([s.policy_version for s in samples]), stage(samples))[1]
    assert trainer.run() == 3
    records = read_metrics(tmp_path)
    assert [r["engine_version"] for r in records] == [0, 2, 2]  # synced after step 2 only
    assert records[0]["time_sync_s"] == 0 and records[1]["time_sync_s"] > 0 and records[2]["time_sync_s"] == 0
    assert [set(v) for v in versions] == [{0}, {0}, {2}]  # step 2 sampled with step-0 weights
    assert records[0]["logprob_gap"] < 1e-3  # float32 engine, same weights: the learner's own log-probs
    assert records[1]["logprob_gap"] is None  # stale engine: no like-for-like comparison
    assert records[2]["logprob_gap"] < 1e-3  # LoRA merged into what the engine serves
    assert all(len(s.logprobs) == len(s.completion_ids) for s in trainer.buffer.samples)


def test_every_sample_is_compared_with_its_own_problems_baseline() -> None:
    from rltf.feedback import ProgramSpan
    from rltf.generation import Completion
    from rltf.judge.verdict import Verdict
    from rltf.problems import Problem
    from rltf.train.rewards import baselines
    from rltf.train.rollout import Group, Judged

    def judged(status: str, passed: int) -> Judged:
        verdict = Verdict(status=status, passed=passed, total=2)
        return Judged(Completion("x", (1,), ((0, 1),), (-0.1,), "eos"), ProgramSpan("", 0, 1), verdict)

    problems = [Problem(id=f"p{i}", source="mbpp", prompt="", tests={"kind": "assert", "cases": []}) for i in (0, 1)]
    groups = [Group(problems[0], judged("pass", 2), [judged("fail", 0), judged("fail", 1), judged("pass", 2)]),
              Group(problems[1], judged("fail", 1), [judged("pass", 2), judged("fail", 0), judged("fail", 1)])]
    for group in groups:
        assert baselines(group, "greedy") == [group.greedy.verdict] * 3
        loo = baselines(group, "rloo")
        for j, others in enumerate(loo):
            assert others == [s.verdict for k, s in enumerate(group.samples) if k != j]
        assert baselines(group, "grpo") == [[s.verdict for s in group.samples]] * 3
        assert baselines(group, "none") == [None] * 3
    assert baselines(groups[0], "greedy")[0] is not baselines(groups[1], "greedy")[0]


def test_judge_service_streams_and_a_timeout_holds_only_its_own_server() -> None:
    import time

    from rltf.judge import JudgeConfig, JudgeService
    from rltf.problems import Problem

    problem = Problem(id="p", source="mbpp", prompt="", tests={"kind": "assert", "setup": "",
                                                               "cases": ["assert f() == 1"]})
    with JudgeService(JudgeConfig(workers=2, timeout_s=1.5)) as judge:
        started = time.perf_counter()
        slow = judge.submit(problem, "import time\ndef f():\n    time.sleep(60)\n")
        quick = [judge.submit(problem, "def f():\n    return 1\n") for _ in range(6)]
        assert all(f.result().status == "pass" for f in quick)
        quick_s = time.perf_counter() - started
        assert not slow.done() and quick_s < 1.2  # the other server judged them meanwhile
        assert slow.result().error.phase == "timeout"
        assert time.perf_counter() - started < 1.5 + 2.0  # its own limit plus sandbox overhead
        assert [v.status for v in judge.run_many([(problem, "def f():\n    return 2\n")] * 2)] == ["fail", "fail"]


def test_groups_without_signal_are_counted_and_dropped_under_dynamic_sampling() -> None:
    from rltf.feedback import ProgramSpan
    from rltf.generation import Completion
    from rltf.judge.verdict import Verdict
    from rltf.problems import Problem
    from rltf.train.rewards import score
    from rltf.train.rollout import Group, Judged, Sampled

    def judged(status: str, passed: int) -> Judged:
        return Judged(Completion("x", (1,), ((0, 1),), (-0.1,), "eos"), ProgramSpan("", 0, 1),
                      Verdict(status=status, passed=passed, total=2))

    problem = Problem(id="p", source="mbpp", prompt="", tests={"kind": "assert", "cases": []})
    all_pass = Group(problem, None, [judged("pass", 2)] * 3)
    same_fail = Group(problem, None, [judged("fail", 1)] * 3)  # one adaptive reward: advantages all zero
    mixed = Group(problem, None, [judged("pass", 2), judged("fail", 1), judged("fail", 0)])
    for dynamic, kept in [(False, 9), (True, 3)]:
        config = load_config(None, ["feedback.baseline=grpo", f"rollout.dynamic_sampling={str(dynamic).lower()}"])
        rollout = score(Sampled([all_pass, same_fail, mixed]), [(5, 6)] * 3, config.feedback, step=0,
                        drop_without_signal=config.rollout.dynamic_sampling)
        assert rollout.groups == 3 and rollout.groups_without_signal == 2
        assert len(rollout.samples) == kept and rollout.programs == 9  # the verdict mix still counts them all
        assert any(r for s in rollout.samples[-3:] for r in s.returns)
        # the passing programs reach optim.sl_source's pool even when their group is dropped
        assert [s.verdict["status"] for s in rollout.passing] == ["pass"] * 4


def test_dynamic_sampling_draws_more_problems_up_to_max_rollouts(tmp_path: Path, tiny_config) -> None:
    # A random model writes no passing program and, with coarse rewards only, every group of it has one
    # reward: no group carries signal, so the step makes all its max_rollouts calls and keeps nothing.
    config = tiny_config("steps=1", "feedback.baseline=grpo", "feedback.fine_grained=false", "feedback.adaptive=false",
                         "rollout.dynamic_sampling=true", "rollout.max_rollouts=3", "eval.at_end=false",
                         "optim.sl_micro_batch=3")
    trainer = Trainer(config, tmp_path, show_progress=False)
    assert trainer.run() == 1
    record = read_metrics(tmp_path)[0]
    assert record["groups"] == 6 and record["groups_without_signal"] == 6, record["verdicts"]
    assert sum(record["verdicts"].values()) == 12 and record["samples_new"] == 0
    assert record["train_references"] == 6 and record["train_samples"] == 0  # 3 references x grad_accum 2
    assert trainer.sampler.pos == 6  # 3 calls x 2 problems


@pytest.mark.parametrize("lora", [False, True])
def test_kl_to_the_start_policy_starts_at_zero_grows_and_survives_a_resume(tmp_path: Path, lora: bool,
                                                                          tiny_config) -> None:
    extra = ["model.lora.enabled=true", "model.lora.target_modules=[q_proj, v_proj]"] if lora else []
    config = tiny_config("steps=2", "optim.kl_coef=0.5", "optim.sl_weight=0", "feedback.baseline=rloo",
                         "eval.at_end=false", *extra)
    Trainer(config, tmp_path / "full", show_progress=False).run()
    full = read_metrics(tmp_path / "full")
    trained = [r for r in full if r["train_samples"] > r["samples_skipped_zero_weight"]]
    assert trained and all(r["loss_kl"] is not None for r in full)
    # the learner is the start policy until its first update: every k3 term is 0 there
    first = next(r for r in trained if r["step"] == trained[0]["step"])
    assert first["kl_start"] == pytest.approx(0.0, abs=1e-6) and first["loss_kl"] == pytest.approx(0.0, abs=1e-6)
    if trained[-1]["step"] > first["step"]:
        assert trained[-1]["kl_start"] > 1e-6
    if not lora:  # a resumed run holds the learner to the same start, not to its checkpoint
        assert Trainer(config, tmp_path / "cut", show_progress=False).run(stop_at=1) == 1
        Trainer(config, tmp_path / "cut", resume=True, show_progress=False).run()
        resumed = read_metrics(tmp_path / "cut")
        for a, b in zip(full, resumed):
            assert (a["kl_start"] is None) == (b["kl_start"] is None)
            if a["kl_start"] is not None:
                assert a["kl_start"] == pytest.approx(b["kl_start"], rel=1e-3, abs=1e-7)


def test_rejection_sampling_trains_on_passing_programs_alone_within_the_budget(tmp_path: Path, tiny_config,
                                                                               model_weights) -> None:
    from rltf.buffer import Sample
    from rltf.config import ConfigError

    with pytest.raises(ConfigError, match="sl_source"):
        tiny_config("optim.sl_source=passing", "optim.rl_weight=0", "rollout.enabled=false")
    config = tiny_config("steps=2", "optim.rl_weight=0", "optim.sl_source=passing", "optim.sl_micro_batch=3",
                         "eval.at_end=false", "checkpoint.every=1", "log.learner_batches=true")
    # a random model passes nothing: the pool is empty, no step trains and the weights stay the start's
    empty = Trainer(config, tmp_path / "empty", show_progress=False)
    assert empty.run(stop_at=1) == 1
    record = read_metrics(tmp_path / "empty")[0]
    assert record["sl_passing_new"] == 0 and record["train_references"] == 0 and record["loss_sl"] is None
    start, after = (model_weights(tmp_path / "empty" / p) for p in ("init-model", "checkpoints/step-000001/model"))
    assert all(torch.equal(start[k], after[k]) for k in start)

    trainer = Trainer(config, tmp_path / "rft", show_progress=False)
    first, second = trainer.problems[:2]
    prompt = lambda problem: tuple(trainer.prompts(problem)[1])  # noqa: E731
    trainer.passing.add([Sample(first.id, prompt(first), (11, 12, 13), (0.0,) * 3, {"status": "pass"}, 1.0, 0),
                         Sample(first.id, prompt(first), (11, 12, 13), (0.0,) * 3, {"status": "pass"}, 1.0, 0),
                         Sample(second.id, prompt(second), (21, 22), (0.0,) * 2, {"status": "pass"}, 1.0, 0),
                         Sample(second.id, prompt(second), (31, 32), (0.0,) * 2, {"status": "fail"}, -0.3, 0)])
    assert trainer.run(stop_at=1) == 1
    record = read_metrics(tmp_path / "rft")[0]
    assert record["train_references"] == 6 and record["sl_passing_drawn"] == 6  # 3 a micro-batch x grad_accum 2
    assert record["sl_passing_pool"] == 2 and record["sl_passing_problems"] == 2 and record["loss_sl"] > 0
    step = json.loads((tmp_path / "rft" / "learner_batches.jsonl").read_text().splitlines()[0])
    targets = [(tuple(it["prompt_ids"]), tuple(it["target_ids"])) for items in step["sl"] for it in items]
    assert set(targets) <= {(prompt(first), (11, 12, 13)), (prompt(second), (21, 22))} and len(targets) == 6
    resumed = Trainer(config, tmp_path / "rft", resume=True, show_progress=False)
    assert resumed.passing.programs == trainer.passing.programs

    # ``both``: uniform over the references and the pool; ``references`` ignores the pool, draw for draw
    trainer.config.optim.sl_source = "both"
    items, passing = trainer._sl_items(800)
    assert len(items) == 800 and abs(passing / 800 - 2 / (len(trainer.references) + 2)) < 0.05
    trainer.config.optim.sl_source = "references"
    state = trainer.sl_rng.getstate()
    with_pool = trainer._sl_items(20)
    trainer.sl_rng.setstate(state)
    trainer.passing.programs = []
    assert trainer._sl_items(20) == with_pool and with_pool[1] == 0
