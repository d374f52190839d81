"""Two GRPO steps of TRL's GRPOTrainer on CPU with rltf's sandboxed judge as the reward.

    python examples/trl_grpo.py --out /tmp/trl-grpo            # a tiny random Llama, 4 MBPP problems
    python examples/trl_grpo.py --model PATH --out DIR         # any causal LM directory

Each MBPP train problem becomes a row (rltf's chat prompt and the problem record as JSON); the
reward functions judge every completion against its own row's tests in the sandbox.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def run(out: Path, model: str | None = None, steps: int = 2) -> list[dict[str, Any]]:
    """Train ``steps`` GRPO steps; returns TRL's log history."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rltf.datasets import load_dataset
    from rltf.integrations.trl import CodeReward, dataset_rows
    from rltf.models import save_tiny_llama

    dataset = Dataset.from_list(dataset_rows(load_dataset("mbpp", split="train", limit=4)))
    rewards = [CodeReward("adaptive"), CodeReward("binary")]
    args = GRPOConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=16, learning_rate=1e-4, logging_steps=1, report_to=[], use_cpu=True,
                      save_strategy="no", seed=0)
    trainer = GRPOTrainer(model=model or str(save_tiny_llama(out / "tiny-model")), reward_funcs=rewards, args=args,
                          train_dataset=dataset)
    try:
        trainer.train()
    finally:
        for reward in rewards:
            reward.close()
    return trainer.state.log_history


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", help="a causal LM directory (default: a tiny random Llama)")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args(argv)
    for record in run(args.out, args.model, args.steps):
        print({k: v for k, v in record.items() if k.startswith(("reward", "step", "loss"))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
