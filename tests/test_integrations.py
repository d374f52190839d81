"""rltf's judge and rewards from TRL (reward functions, a real GRPOTrainer run) and verl (compute_score)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rltf.datasets import load_dataset
from rltf.integrations import verl
from rltf.integrations.trl import CodeReward, completion_text, dataset_rows
from rltf.judge import Verdict
from rltf.problems import Problem

PROBLEM = Problem(id="mbpp/9001", source="mbpp", prompt="Write a function to sort a list.", entry_point="sort_it",
                  tests={"kind": "assert", "setup": "", "cases": [
                      "assert sort_it([3, 1, 2]) == [1, 2, 3]", "assert sort_it([5]) == [5]",
                      "assert sort_it([2, 1]) == [1, 2]"]},
                  solutions=["def sort_it(xs):\n    return sorted(xs)\n"])
RIGHT = "Here it is:\n```python\n" + PROBLEM.solutions[0] + "```\nDone."
WRONG = "```python\ndef sort_it(xs):\n    return xs\n```"  # passes [5] only
BROKEN = "```python\ndef sort_it(xs:\n```"


def test_trl_reward_functions_judge_each_row_against_its_own_problem() -> None:
    other = load_dataset("mbpp", split="train", limit=1)[0]  # mbpp/601: max_chain_length
    rows = dataset_rows([PROBLEM, other])
    assert rows[0]["prompt"][-1]["role"] == "user" and "sort_it([3, 1, 2])" in rows[0]["prompt"][-1]["content"]
    problems = [rows[0]["problem"], rows[0]["problem"], rows[0]["problem"], rows[1]["problem"]]
    completions = [RIGHT, WRONG, BROKEN, RIGHT]  # the last answers another problem than its row's
    adaptive, coarse, binary = CodeReward("adaptive"), CodeReward("coarse"), CodeReward("binary")
    try:
        conversational = [[{"role": "assistant", "content": c}] for c in completions]
        got = adaptive(prompts=[r["prompt"] for r in rows] * 2, completions=conversational, problem=problems)
        assert got == pytest.approx([1.0, -0.3 + 1.3 / 3, -1.0, -0.6])  # no max_chain_length: runtime error
        assert coarse([None] * 4, completions, problem=problems) == [1.0, -0.3, -1.0, -0.6]
        assert binary([None] * 4, completions, problem=[json.loads(p) for p in problems]) == [1.0, 0.0, 0.0, 0.0]
    finally:
        for reward in (adaptive, coarse, binary):
            reward.close()
    assert adaptive.__name__ == "rltf_adaptive" and completion_text([]) == ""


def test_trl_reward_is_none_for_an_infra_error() -> None:
    class DeadJudge:  # the sandbox failed, not the program
        def run_many(self, pairs):
            return [Verdict.infra("sandbox server died", 3) for _ in pairs]

        def close(self) -> None:
            pass

    reward = CodeReward("adaptive")
    reward._judge = DeadJudge()
    assert reward([None, None], [RIGHT, WRONG], problem=[PROBLEM.to_dict()] * 2) == [None, None]


def test_verl_compute_score_as_the_naive_reward_manager_calls_it() -> None:
    # verl's NaiveRewardManager.__call__: compute_score(data_source=, solution_str=, ground_truth=, extra_info=)
    # with ground_truth from non_tensor_batch["reward_model"]["ground_truth"]; newer managers add step=, tokenizer=
    truth = json.dumps(PROBLEM.to_dict())
    right = verl.compute_score(data_source="mbpp", solution_str=RIGHT, ground_truth=truth,
                               extra_info={"index": 0, "num_turns": None, "rollout_reward_scores": {}})
    assert right == {"score": 1.0, "infra_error": 0.0, "pass_ratio": 1.0, "passed": 1.0, "compile_error": 0.0}
    broken = verl.compute_score(data_source="mbpp", solution_str=BROKEN, ground_truth=PROBLEM.to_dict(),
                                extra_info={"reward": "binary"}, step=3, tokenizer=None)
    assert broken["score"] == 0.0 and broken["compile_error"] == 1.0
    wrong = verl.compute_score("mbpp", WRONG, truth, {"reward": "coarse"})
    assert wrong["score"] == -0.3 and wrong["passed"] == 0.0 and wrong["pass_ratio"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="unknown reward"):
        verl.compute_score("mbpp", WRONG, truth, {"reward": "dense"})


def test_a_real_grpo_trainer_run_of_two_steps(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
    from trl_grpo import run

    history = run(tmp_path, steps=2)
    steps = [h for h in history if "rewards/rltf_adaptive/mean" in h]
    assert len(steps) == 2
    for record in steps:  # tiny random models write no valid program: compile or runtime errors
        assert -1.0 <= record["rewards/rltf_adaptive/mean"] <= 1.0
        assert 0.0 <= record["rewards/rltf_binary/mean"] <= 1.0
