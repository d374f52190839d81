"""Programs/s of the local judge pool and of the Ray judge with 1 and 2 actors.

    python benchmarks/judge_backends.py --json runs/judge_backends.json

All 974 MBPP reference solutions and 164 HumanEval canonical solutions, every test, on a local Ray
instance started here with one CPU per actor. The Ray overhead per program is the difference of
per-program wall times against the local pool with the same number of servers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ray

from rltf.datasets import load_dataset
from rltf.judge import JudgeConfig, open_judge


def programs_per_s(config: JudgeConfig, pairs: list) -> tuple[float, int]:
    with open_judge(config) as judge:
        judge.run_many(pairs[:8])  # servers and actors warm before the clock starts
        start = time.perf_counter()
        verdicts = judge.run_many(pairs)
        elapsed = time.perf_counter() - start
    return len(pairs) / elapsed, sum(v.status == "pass" for v in verdicts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pairs = [(p, p.solutions[0]) for p in load_dataset("mbpp") + load_dataset("humaneval")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows = {}
    for name, config in (("local, 1 server", JudgeConfig(workers=1)), ("local, 2 servers", JudgeConfig(workers=2)),
                         ("ray, 1 actor", JudgeConfig(workers=1, backend="ray")),
                         ("ray, 2 actors", JudgeConfig(workers=2, backend="ray"))):
        rate, passed = programs_per_s(config, pairs)
        rows[name] = {"programs_per_s": rate, "passed": passed, "programs": len(pairs)}
        print(f"{name}: {rate:.0f} programs/s, {passed}/{len(pairs)} pass")
    for n, local, remote in ((1, "local, 1 server", "ray, 1 actor"), (2, "local, 2 servers", "ray, 2 actors")):
        overhead = n * (1 / rows[remote]["programs_per_s"] - 1 / rows[local]["programs_per_s"]) * 1000
        rows[remote]["overhead_ms_per_program"] = overhead
        print(f"ray overhead with {n} actor(s): {overhead:.2f} ms per program (server time)")
    ray.shutdown()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
