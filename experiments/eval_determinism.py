"""Is a greedy evaluation repeatable? The same greedy evaluation twice, and once more at another batch size,
for each engine mode that a README table reports.

    python experiments/eval_determinism.py                       # all modes, OUT=runs/eval-determinism
    python experiments/eval_determinism.py --modes llamacpp/float16 --limit 20   # a dry run

Each mode evaluates the first ``--limit`` MBPP test problems greedily three times with a fresh engine:
``a`` and ``b`` at ``--batch`` sequences per call, ``c`` at ``--small-batch``. It counts the problems
whose program differs (a against b, a against c) and those whose verdict differs, and writes
``OUT/determinism.{json,md}``. A differing program comes from floating-point rounding: the kernels
reduce in an order that depends on which rows share a micro-batch, and greedy decoding turns a
near-tie between two tokens into another program from there on.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rltf._io import read_jsonl
from rltf.datasets import load_dataset
from rltf.evaluation import SAMPLES, EvalSettings, evaluate
from rltf.generation import EngineConfig, make_engine
from rltf.judge import Judge
from rltf.models import DEFAULT_MODEL, Policy, set_threads

MODES = ("llamacpp/float16", "llamacpp/bfloat16", "ct2/float32", "hf/float32")
"""The engine modes of the README's tables: the ablation's (float16), the default run's (bfloat16 on
AVX512-BF16), the engine comparison's (ct2) and the hf era's."""


def programs(out: Path) -> dict[str, tuple[str, str]]:
    """(program, verdict status) per problem of a greedy evaluation."""
    records = read_jsonl(out / SAMPLES)
    return {r["problem_id"]: (r["program"], r["verdict"]["status"]) for r in records}


def compare(a: dict[str, tuple[str, str]], b: dict[str, tuple[str, str]]) -> dict[str, object]:
    shared = sorted(set(a) & set(b))
    differ = [p for p in shared if a[p][0] != b[p][0]]
    return {"problems": len(shared), "programs_differ": len(differ),
            "verdicts_differ": sum(a[p][1] != b[p][1] for p in shared),
            "pass_a": sum(a[p][1] == "pass" for p in shared), "pass_b": sum(b[p][1] == "pass" for p in shared),
            "examples": differ[:5]}


def run_mode(mode: str, policy: Policy, problems: list, out: Path, batch: int, small: int, workers: int,
             max_new_tokens: int) -> dict[str, object]:
    engine_name, compute_type = mode.split("/")
    walls = {}
    with Judge(workers=workers) as judge:
        for run, size in (("a", batch), ("b", batch), ("c", small)):
            engine = make_engine(policy, EngineConfig(engine_name, compute_type, workers))  # a fresh engine each time
            settings = EvalSettings("mbpp", "test", policy.name, policy.style, n=1, temperature=0.0, top_p=1.0,
                                    max_new_tokens=max_new_tokens, batch_size=size, engine=engine.label)
            started = time.perf_counter()
            evaluate(engine, policy, problems, judge, out / mode.replace("/", "-") / run, settings, ks=(1,),
                     show_progress=False)
            walls[run] = time.perf_counter() - started
            engine.close()
    found = {run: programs(out / mode.replace("/", "-") / run) for run in "abc"}
    return {"mode": mode, "batch": batch, "small_batch": small, "wall_s": walls,
            "twice": compare(found["a"], found["b"]), "other_batch": compare(found["a"], found["c"])}


def markdown(results: list[dict[str, object]]) -> str:
    lines = ["| engine mode | problems | same run twice: programs differ | verdicts differ | "
             "batch a vs c: programs differ | verdicts differ | passes a / b / c |", "|---|---|---|---|---|---|---|"]
    for r in results:
        twice, other = r["twice"], r["other_batch"]
        lines.append(f"| {r['mode']} | {twice['problems']} | {twice['programs_differ']} | {twice['verdicts_differ']} | "
                     f"{other['programs_differ']} (batch {r['batch']} vs {r['small_batch']}) | "
                     f"{other['verdicts_differ']} | {twice['pass_a']} / {twice['pass_b']} / {other['pass_b']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--limit", type=int, default=100, help="the first N MBPP test problems")
    parser.add_argument("--hf-limit", type=int, default=30, help="fewer for the slow hf engine")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--small-batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="engine workers, judge workers and torch threads")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("runs/eval-determinism"))
    args = parser.parse_args(argv)
    set_threads(args.workers)
    policy = Policy.load(args.model, device="cpu")  # the README tables measure CPU kernels
    results = []
    for mode in args.modes:
        limit = args.hf_limit if mode.startswith("hf") else args.limit
        results.append(run_mode(mode, policy, load_dataset("mbpp", "test", limit=limit), args.out, args.batch,
                                args.small_batch, args.workers, args.max_new_tokens))
        print(markdown(results[-1:]), flush=True)
    (args.out / "determinism.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "determinism.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
