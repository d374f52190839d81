"""The CI version of the RL learning test (``experiments/learning_test.py``): RL alone, from the
embedded SmolLM2-135M, must raise the pass share of sampled programs on a fixed set of synthetic
problems with one update (the same 8 problems are sampled before and after, so the rise is the
policy's, not a change of problems), and on a family the recipe was not built on (:mod:`rltf.families`)
one update must move likelihood from the step's failing programs to its passing ones."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from rltf.config import load_config
from rltf.datasets import load_dataset
from rltf.evaluation import train_evaluator
from rltf.problems import save_problems
from rltf.synthetic import TEMPLATES
from rltf.train import Trainer, read_evals, read_metrics
from rltf.train.losses import TrainItem, collate, target_logprobs

MARGIN = 0.10
"""Rise of the pass share of sampled programs (after one update, over the initial policy's; 32 each)
that the test demands. Measured with these settings on the 2-core AMD EPYC VM (fp32, no AVX-512):
+0.28, +0.28 and +0.44 for seeds 0, 1 and 2 (0.47 -> 0.75, 0.50 -> 0.78, 0.47 -> 0.91), 96-117 s
each, so the margin is about a third of the smallest rise seen. (The reward version it replaces
trained three steps where this trains one.)"""


def test_synthetic_family_splits_and_reference_solutions() -> None:
    train, heldout = load_dataset("synthetic", "train"), load_dataset("synthetic", "heldout")
    assert len(train) == 4 * len(TEMPLATES) >= 40 and len(heldout) == 2 * len(TEMPLATES) >= 20
    assert not {p.id for p in train} & {p.id for p in heldout}
    assert {p.prompt for p in train}.isdisjoint(p.prompt for p in heldout)
    assert all(p.solutions and p.tests["kind"] == "assert" and p.tests["cases"] for p in train + heldout)


def test_rl_alone_raises_the_pass_rate_on_fixed_problems(tmp_path: Path) -> None:
    """One RL update, then the same 8 problems sampled again: the end-of-run evaluation draws as many
    programs (4 each, same temperature) as the step's rollout drew from the initial policy."""
    config = load_config("learning-test", [
        "data.limit=8", "rollout.problems_per_step=8", "rollout.samples_per_problem=4", "optim.grad_accum=2",
        "steps=1", "eval.at_start=false", "eval.at_end=true", "eval.every=0", "eval.split=train", "eval.limit=8",
        "eval.samples=4", "checkpoint.every=1", "log.progress=false"])
    Trainer(config, tmp_path / "run", evaluator=train_evaluator(config)).run()
    records, evals = read_metrics(tmp_path / "run"), read_evals(tmp_path / "run")
    assert len(records) == 1 and records[0]["samples_trained_frac"] == 1.0
    ((step, after),) = evals
    assert step == 1 and after["problems"] == 8 and after["samples"] == 32
    before = records[0]["sample_pass_rate"]
    assert after["pass_at_k"]["1"] - before >= MARGIN, (before, after["pass_at_k"]["1"])


FAMILY_MARGIN = 2.0
"""How much more the mean log-likelihood (nats per program) of the step's failing programs must fall than
that of its passing ones after one RL update on the lists family. Measured with these settings on the
2-core AVX512-BF16 VM: passing -0.3 / -0.8 / -0.2, failing -6.7 / -7.8 / -7.0 for seeds 0 / 1 / 2
(differences 6.9, 7.0, 6.7); the margin is under a third of the smallest. The pass share of samples
drawn again after the update is too noisy to test at this size: +3, +3 and +19 points."""


def test_one_update_moves_likelihood_to_the_passing_programs_of_a_new_family(tmp_path: Path) -> None:
    """The lists family's ``scale`` and ``sum_first`` tasks (8 train problems the embedded model solves
    a quarter of the time): one RL step of 4 samples each, then every program of the step scored by the
    start policy and by the updated one."""
    problems = [p for p in load_dataset("family-lists", "train") if p.id.split("/")[1].rsplit("-", 1)[0]
                in ("scale", "sum_first")]
    save_problems(problems, tmp_path / "lists.jsonl")
    config = load_config("learning-test", [
        f"data.dataset={tmp_path / 'lists.jsonl'}", "rollout.problems_per_step=8", "rollout.samples_per_problem=4",
        "optim.grad_accum=2", "steps=1", "eval.at_start=false", "eval.at_end=false", "eval.every=0",
        "checkpoint.every=1", "log.progress=false"])
    trainer = Trainer(config, tmp_path / "run")
    start = copy.deepcopy(trainer.model)
    trainer.run()
    samples = list(trainer.buffer.samples)
    assert len(problems) == 8 and len(samples) == 32 and read_metrics(tmp_path / "run")[0]["samples_trained_frac"] == 1

    batch = collate([TrainItem(s.prompt_ids, s.completion_ids, [1.0] * len(s.completion_ids)) for s in samples],
                    trainer.policy.tokenizer.pad_token_id, config.optim.max_seq_len, False)

    def likelihood(model: torch.nn.Module) -> list[float]:
        """Each program's log-likelihood (its tokens' log-probs summed), one padded forward."""
        with torch.no_grad():
            return torch.zeros(len(samples)).index_add_(0, batch.owner, target_logprobs(model, batch)).tolist()

    change = [after - before for before, after in zip(likelihood(start), likelihood(trainer.model))]
    passing = [c for c, s in zip(change, samples) if s.verdict["status"] == "pass"]
    failing = [c for c, s in zip(change, samples) if s.verdict["status"] != "pass"]
    assert passing and failing, (len(passing), len(failing))
    assert sum(passing) / len(passing) - sum(failing) / len(failing) >= FAMILY_MARGIN, (passing, failing)
