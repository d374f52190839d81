"""GRPO through TRL's own ``trl grpo`` script, with rltf's sandboxed judge as the reward, on CPU.

    python examples/trl_grpo.py --out runs/trl-grpo            # a tiny random Llama, 4 MBPP problems, 2 steps
    python examples/trl_grpo.py --out DIR --model PATH         # any causal LM directory or hub id

It writes the dataset (each MBPP train problem as rltf's chat prompt and its record as JSON) to
OUT/data, then runs in this process the script that this command starts under ``accelerate launch``
(the script reads the same arguments; the reward function is found by its dotted path)::

    trl grpo --model_name_or_path MODEL --dataset_name OUT/data \\
        --reward_funcs rltf.integrations.trl.rltf_adaptive --output_dir OUT/trainer ...

and returns TRL's log history, read from the last checkpoint's ``trainer_state.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

REWARD = "rltf.integrations.trl.rltf_adaptive"


def write_dataset(out: Path, problems: int) -> Path:
    """OUT/train.jsonl, which ``datasets.load_dataset(OUT)`` (what ``--dataset_name`` does) reads as its train split."""
    from datasets import Dataset

    from rltf.datasets import load_dataset
    from rltf.integrations.trl import dataset_rows

    Dataset.from_list(dataset_rows(load_dataset("mbpp", split="train", limit=problems))).to_json(out / "train.jsonl")
    return out


def cli_args(model: str, data: Path, out: Path, steps: int) -> list[str]:
    """``trl grpo``'s arguments: 2 completions per prompt, 4 a step, 16 tokens each, on the CPU."""
    return ["--model_name_or_path", model, "--dataset_name", str(data), "--reward_funcs", REWARD,
            "--output_dir", str(out), "--max_steps", str(steps), "--per_device_train_batch_size", "4",
            "--num_generations", "2", "--max_completion_length", "16", "--learning_rate", "1e-4",
            "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true", "--seed", "0",
            "--save_strategy", "steps", "--save_steps", str(steps), "--save_only_model", "true"]


def run(out: Path, model: str | None = None, steps: int = 2, problems: int = 4) -> list[dict[str, Any]]:
    """Train ``steps`` GRPO steps with TRL's script; returns TRL's log history."""
    from trl.scripts import grpo

    from rltf.models import save_tiny_llama

    model = model or str(save_tiny_llama(out / "tiny-model"))
    args = cli_args(model, write_dataset(out / "data", problems), out / "trainer", steps)
    print("trl grpo " + shlex.join(args))
    grpo.main(*grpo.make_parser().parse_args_and_config(args))
    state = out / "trainer" / f"checkpoint-{steps}" / "trainer_state.json"
    return json.loads(state.read_text())["log_history"]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", help="a causal LM directory or hub id (default: a tiny random Llama)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--problems", type=int, default=4)
    args = parser.parse_args(argv)
    history = run(args.out, args.model, args.steps, args.problems)
    for record in history:
        print({k: v for k, v in record.items() if k.startswith(("rewards/", "rltf_", "step", "loss"))})
    return history


if __name__ == "__main__":
    main()
