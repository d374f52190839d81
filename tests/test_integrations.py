"""rltf's judge and rewards from TRL (reward functions by object and by dotted path, TRL's own grpo
script for a step) and verl (the batch and per-response compute_score, as verl's managers call them)."""

from __future__ import annotations

import importlib
import json
import pickle
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from trl.trainer.utils import get_callable_name

from rltf.datasets import load_dataset
from rltf.integrations import judging, verl
from rltf.integrations.trl import CodeReward, completion_text, dataset_rows, rltf_adaptive, rltf_binary, rltf_coarse
from rltf.judge import JudgeConfig, Verdict
from rltf.judge.verdict import VERDICT_KEYS
from rltf.problems import Problem

EXAMPLES = Path(__file__).parents[1] / "examples"
PROBLEM = Problem(id="mbpp/9001", source="mbpp", prompt="Write a function to sort a list.", entry_point="sort_it",
                  tests={"kind": "assert", "setup": "", "cases": [
                      "assert sort_it([3, 1, 2]) == [1, 2, 3]", "assert sort_it([5]) == [5]",
                      "assert sort_it([2, 1]) == [1, 2]"]},
                  solutions=["def sort_it(xs):\n    return sorted(xs)\n"])
RIGHT = "Here it is:\n```python\n" + PROBLEM.solutions[0] + "```\nDone."
WRONG = "```python\ndef sort_it(xs):\n    return xs\n```"  # passes [5] only
BROKEN = "```python\ndef sort_it(xs:\n```"
SLOW = "```python\nimport time\ndef sort_it(xs):\n    time.sleep(0.3)\n    return sorted(xs)\n```"


@pytest.fixture(scope="module", autouse=True)
def _close_pools():
    yield
    judging.close_shared_judges()


class Logs:
    """TRL's ``log_metric`` and ``log_extra`` hooks, recorded."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.extra: dict[str, list] = defaultdict(list)

    def hooks(self) -> dict:
        return {"log_metric": lambda name, value: self.metrics[name].append(value),
                "log_extra": lambda column, values: self.extra[column].extend(values)}


def test_trl_reward_functions_judge_each_row_against_its_own_problem_and_log_the_verdict_mix() -> None:
    other = load_dataset("mbpp", split="train", limit=1)[0]  # mbpp/601: max_chain_length
    rows = dataset_rows([PROBLEM, other])
    assert rows[0]["prompt"][-1]["role"] == "user" and "sort_it([3, 1, 2])" in rows[0]["prompt"][-1]["content"]
    prompts = [rows[0]["prompt"]] * 3 + [rows[1]["prompt"]]
    problems = [rows[0]["problem"]] * 3 + [rows[1]["problem"]]
    completions = [RIGHT, WRONG, BROKEN, RIGHT]  # the last answers another problem than its row's
    conversational = [[{"role": "assistant", "content": c}] for c in completions]
    logs = Logs()
    # as GRPOTrainer._calculate_rewards calls it: every other column and its hooks as keywords
    got = rltf_adaptive(prompts=prompts, completions=conversational, completion_ids=[[1]] * 4, problem=problems,
                        trainer_state=None, **logs.hooks())
    assert got == pytest.approx([1.0, -0.3 + 1.3 / 3, -1.0, -0.6])  # no max_chain_length: runtime error
    assert logs.extra == {"rltf_adaptive/verdict": ["pass", "fail", "compile", "runtime"]}
    shares = {key: values[0] for key, values in logs.metrics.items()}
    assert shares == {f"rltf_adaptive/verdicts/{key}": 0.25 if key in ("pass", "fail", "compile", "runtime") else 0.0
                      for key in VERDICT_KEYS}
    assert rltf_coarse(prompts, completions, problem=problems) == [1.0, -0.3, -1.0, -0.6]
    assert rltf_binary(prompts, completions, problem=[json.loads(p) for p in problems]) == [1.0, 0.0, 0.0, 0.0]
    custom = CodeReward("adaptive", judge=JudgeConfig(workers=1, timeout_s=0.1), name="fast_tests")
    assert custom(prompts[:1], [SLOW], problem=problems[:1], **logs.hooks()) == [-0.6]  # timed out
    assert logs.metrics["fast_tests/verdicts/timeout"] == [1.0] and completion_text([]) == ""


def test_trl_reward_reads_a_base_prompt_s_completion_as_the_rest_of_its_open_code_block() -> None:
    (base,) = dataset_rows([PROBLEM], style="base")
    assert isinstance(base["prompt"], str) and base["prompt"].endswith("```python\n")
    completion = PROBLEM.solutions[0] + "```\nThe function sorts."
    assert rltf_adaptive([base["prompt"]], [completion], problem=[base["problem"]]) == [1.0]
    assert CodeReward(style="chat")([base["prompt"]], [completion], problem=[base["problem"]]) == [-1.0]  # no block


def test_trl_s_cli_finds_the_reward_functions_by_dotted_path_under_their_log_names() -> None:
    for dotted in ("rltf.integrations.trl.rltf_adaptive", "rltf.integrations.trl.rltf_binary"):
        module, name = dotted.rsplit(".", 1)  # trl/scripts/grpo.py's resolution
        function = getattr(importlib.import_module(module), name)
        assert get_callable_name(function) == name and pickle.loads(pickle.dumps(function)) is function
    with pytest.raises(KeyError, match="dataset_rows"):
        rltf_adaptive(["p"], [RIGHT], prompt_id=[0])


def test_trl_reward_is_none_for_an_infra_error() -> None:
    class DeadJudge:  # the sandbox failed, not the program
        def run_many(self, pairs):
            return [Verdict.infra("sandbox server died", 3) for _ in pairs]

    logs = Logs()
    reward = CodeReward("adaptive", judge=DeadJudge())
    assert reward([None, None], [RIGHT, WRONG], problem=[PROBLEM.to_dict()] * 2, **logs.hooks()) == [None, None]
    assert logs.metrics["rltf_adaptive/verdicts/infra_error"] == [1.0]


def test_the_shared_judge_is_small_lazy_one_per_setting_and_overridable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(judging.WORKERS_ENV, raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert 1 <= judging.default_workers() <= min(judging.MAX_DEFAULT_WORKERS, judging.usable_cpus())
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(judging.usable_cpus() + 1))  # more ranks than cores: one each
    assert judging.default_workers() == 1
    monkeypatch.setenv(judging.WORKERS_ENV, "3")
    assert judging.default_workers() == 3
    monkeypatch.setenv(judging.WORKERS_ENV, "0")
    with pytest.raises(ValueError, match="at least 1"):
        judging.default_workers()
    one = JudgeConfig(workers=1)
    assert judging.shared_judge(one) is judging.shared_judge(JudgeConfig(workers=1))
    assert judging.shared_judge(one) is not judging.shared_judge(JudgeConfig(workers=1, timeout_s=1.0))


def test_verl_batched_score_as_the_batch_reward_manager_calls_it_with_its_reward_kwargs() -> None:
    # verl's BatchRewardManager.verify: compute_score(data_sources=, solution_strs=, ground_truths=, extra_infos=,
    # **reward_kwargs), the non-tensor columns as numpy object arrays, each extra_info with rollout_reward_scores
    truth = json.dumps(PROBLEM.to_dict())
    responses = [RIGHT, WRONG, BROKEN, BROKEN, SLOW, SLOW]
    extra_infos = np.array([{"index": i, "rollout_reward_scores": {}} for i in range(len(responses))], dtype=object)
    extra_infos[3]["reward"] = "binary"  # a row's own reward kind wins over the run's
    scores = verl.compute_score_batched(
        data_sources=np.array(["mbpp"] * len(responses), dtype=object), solution_strs=responses,
        ground_truths=[truth] * len(responses), extra_infos=extra_infos,
        reward="coarse", compile_error=-2.0, judge={"workers": 2, "timeout_s": 2.0})
    assert [s["score"] for s in scores] == [1.0, -0.3, -2.0, 0.0, 1.0, 1.0]
    assert scores[0] == {"score": 1.0, "infra_error": 0.0, "pass_ratio": 1.0, "passed": 1.0, "compile_error": 0.0}
    assert scores[1]["pass_ratio"] == pytest.approx(1 / 3) and scores[2]["compile_error"] == 1.0
    (hurried,) = verl.compute_score_batched(["mbpp"], [SLOW], [truth], [None], judge={"timeout_s": 0.1})
    assert hurried["score"] == -0.6 and hurried["passed"] == 0.0  # adaptive's runtime-error value: timed out
    with pytest.raises(ValueError, match="unknown reward"):
        verl.compute_score_batched(["mbpp"], [WRONG], [truth], [None], reward="dense")


def test_verl_compute_score_as_the_naive_reward_manager_calls_it() -> None:
    # verl's NaiveRewardManager: compute_score(data_source=, solution_str=, ground_truth=, extra_info=), with
    # custom_reward_function.reward_kwargs merged in; newer managers add step=, tokenizer=
    truth = json.dumps(PROBLEM.to_dict())
    right = verl.compute_score(data_source="mbpp", solution_str=RIGHT, ground_truth=truth,
                               extra_info={"index": 0, "num_turns": None, "rollout_reward_scores": {}})
    assert right == {"score": 1.0, "infra_error": 0.0, "pass_ratio": 1.0, "passed": 1.0, "compile_error": 0.0}
    broken = verl.compute_score(data_source="mbpp", solution_str=BROKEN, ground_truth=PROBLEM.to_dict(),
                                extra_info={"reward": "binary"}, step=3, tokenizer=None)
    assert broken["score"] == 0.0 and broken["compile_error"] == 1.0
    wrong = verl.compute_score("mbpp", WRONG, truth, None, reward="coarse", failed_tests=-0.5)
    assert wrong["score"] == -0.5 and wrong["passed"] == 0.0 and wrong["pass_ratio"] == pytest.approx(1 / 3)


def test_the_verl_example_scores_reference_solutions_above_wrong_answers() -> None:
    sys.path.insert(0, str(EXAMPLES))
    from verl_reward import main

    results = main(["--problems", "2", "--reward", "coarse"])
    assert [label for _, label, _ in results] == ["reference", "wrong"] * 2
    for _, label, score in results:
        assert (score["score"], score["passed"]) == ((1.0, 1.0) if label == "reference" else (-0.3, 0.0))


def test_the_trl_example_runs_trl_s_grpo_script_and_logs_the_verdict_mix(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLES))
    from trl_grpo import main

    history = main(["--out", str(tmp_path), "--steps", "1", "--problems", "2"])
    (step,) = [h for h in history if "rewards/rltf_adaptive/mean" in h]
    shares = {key: step[f"rltf_adaptive/verdicts/{key}"] for key in VERDICT_KEYS}
    assert sum(shares.values()) == pytest.approx(1.0)
    # TRL's reward mean is the verdict mix's: a wrong answer's adaptive reward lies in [-0.3, 1], every error
    # but a compile error's is -0.6, and infra errors (None) are left out
    bounds = {"pass": (1.0, 1.0), "fail": (-0.3, 1.0), "compile": (-1.0, -1.0)}
    judged = [k for k in VERDICT_KEYS if k != "infra_error"]
    low, high = (sum(shares[k] * bounds.get(k, (-0.6, -0.6))[end] for k in judged) / (1 - shares["infra_error"])
                 for end in (0, 1))
    assert low - 1e-6 <= step["rewards/rltf_adaptive/mean"] <= high + 1e-6
    assert (tmp_path / "trainer" / "model.safetensors").is_file()  # the script's final save_model
