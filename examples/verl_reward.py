"""rltf's judge as verl's reward: ``compute_score_batched`` called as verl's batch reward manager calls it.

    python examples/verl_reward.py

In a verl run, point the trainer at it instead::

    reward_model.reward_manager=batch
    custom_reward_function.path=$(python -c "import rltf.integrations.verl as m; print(m.__file__)")
    custom_reward_function.name=compute_score_batched
    +reward_model.reward_kwargs.reward=coarse +reward_model.reward_kwargs.judge.workers=8

with each parquet row's ``reward_model.ground_truth`` set to the problem record as JSON (below:
:func:`row`). Once per batch, verl's ``BatchRewardManager.verify`` decodes every response, collects
the rows' ``data_source``, ``ground_truth`` and ``extra_info`` and calls ``compute_score(data_sources=,
solution_strs=, ground_truths=, extra_infos=, **reward_kwargs)``; :func:`score_batch` does the same
for the reference solution and a wrong answer of a few MBPP problems.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from rltf.datasets import load_dataset
from rltf.integrations.verl import compute_score_batched
from rltf.problems import Problem
from rltf.prompts import user_prompt


def row(problem: Problem) -> dict[str, Any]:
    """One verl dataset row: the chat prompt, and the record the reward reads back."""
    return {"data_source": problem.source, "prompt": [{"role": "user", "content": user_prompt(problem, "chat").text}],
            "reward_model": {"style": "rule", "ground_truth": json.dumps(problem.to_dict())},
            "extra_info": {"index": problem.id}}


def score_batch(rows: list[dict[str, Any]], responses: list[str], **reward_kwargs: Any) -> list[dict[str, float]]:
    """What ``BatchRewardManager.verify`` passes: numpy object arrays for the non-tensor columns (a
    ``DataProto``'s ``non_tensor_batch``), a list of ground truths, each ``extra_info`` with the
    rollout's ``rollout_reward_scores`` added, and the manager's ``reward_kwargs``."""
    extra_infos = np.array([{**r["extra_info"], "rollout_reward_scores": {}} for r in rows], dtype=object)
    return compute_score_batched(data_sources=np.array([r["data_source"] for r in rows], dtype=object),
                                 solution_strs=responses,
                                 ground_truths=[r["reward_model"].get("ground_truth") for r in rows],
                                 extra_infos=extra_infos, **reward_kwargs)


def main(argv: list[str] | None = None) -> list[tuple[str, str, dict[str, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--reward", default="adaptive", choices=("adaptive", "coarse", "binary"))
    args = parser.parse_args(argv)
    rows, responses, labels = [], [], []
    for problem in load_dataset("mbpp", split="validation", limit=args.problems):
        for label, response in (("reference", f"```python\n{problem.solutions[0]}\n```"),
                                ("wrong", f"```python\ndef {problem.entry_point}(*args):\n    return None\n```")):
            rows.append(row(problem))
            responses.append(response)
            labels.append((problem.id, label))
    scores = score_batch(rows, responses, reward=args.reward, judge={"workers": 2})
    results = [(pid, label, score) for (pid, label), score in zip(labels, scores, strict=True)]
    for result in results:
        print(*result)
    return results


if __name__ == "__main__":
    main()
