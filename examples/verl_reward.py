"""rltf's judge as verl's reward: ``compute_score`` called as verl's naive reward manager calls it.

    python examples/verl_reward.py

In a verl run, point the trainer at it instead::

    custom_reward_function.path=$(python -c "import rltf.integrations.verl as m; print(m.__file__)")
    custom_reward_function.name=compute_score

with each parquet row's ``reward_model.ground_truth`` set to the problem record as JSON (below:
:func:`row`). verl decodes every response to text and calls ``compute_score(data_source=,
solution_str=, ground_truth=, extra_info=)`` once per response; this script does the same for the
reference solution and a wrong answer of three MBPP problems.
"""

from __future__ import annotations

import json
from typing import Any

from rltf.datasets import load_dataset
from rltf.integrations.verl import compute_score
from rltf.problems import Problem
from rltf.prompts import user_prompt


def row(problem: Problem) -> dict[str, Any]:
    """One verl dataset row: the chat prompt, and the record the reward reads back."""
    return {"data_source": problem.source, "prompt": [{"role": "user", "content": user_prompt(problem, "chat").text}],
            "reward_model": {"style": "rule", "ground_truth": json.dumps(problem.to_dict())},
            "extra_info": {"reward": "adaptive"}}


def main() -> None:
    for problem in load_dataset("mbpp", split="validation", limit=3):
        data = row(problem)
        for label, response in (("reference", f"```python\n{problem.solutions[0]}\n```"),
                                ("wrong", f"```python\ndef {problem.entry_point}(*args):\n    return None\n```")):
            score = compute_score(data_source=data["data_source"], solution_str=response,
                                  ground_truth=data["reward_model"]["ground_truth"], extra_info=data["extra_info"])
            print(problem.id, label, score)


if __name__ == "__main__":
    main()
