"""How many programs sampled during training pass the benchmark's tests but fail the augmented ones?

    python experiments/augment_flips.py RUN_DIR... --augmented mbpp-augmented \
        --out experiments/augment/train-samples-flips.json

Reads each run's ``samples.jsonl`` (``log.samples``: every program its rollouts judged), keeps the
programs that passed the original tests at training time, and judges them again on the original
tests, on original + extra tests (``rltf augment``'s file) and, for MBPP tasks that MBPP+ covers,
on MBPP+'s tests (:func:`rltf.augment.flip_stats`). Sampled programs and greedy baselines are
counted apart; a program text written more than once for a problem is counted once.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rltf.augment import flip_stats
from rltf.problems import load_problems
from rltf.train import read_samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--augmented", type=Path, required=True, help="rltf augment's output for the train split")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    problems = {p.id: p for p in load_problems(args.augmented)}
    report: dict[str, object] = {"runs": [str(r) for r in args.runs], "augmented": str(args.augmented)}
    records = [r for run in args.runs for r in read_samples(run)]
    report["judged_in_training"] = len(records)
    for kind, greedy in (("sampled", False), ("greedy", True)):
        passing = {(r["problem_id"], r["program"]) for r in records
                   if r["greedy"] == greedy and r["status"] == "pass" and r["problem_id"] in problems}
        pairs = [(problems[pid], program) for pid, program in sorted(passing)]
        report[kind] = {"passed_in_training": sum(r["greedy"] == greedy and r["status"] == "pass" for r in records),
                        "distinct": len(pairs), **flip_stats(pairs, args.workers)}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
