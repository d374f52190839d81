"""Generation engines side by side on the same MBPP prompts: throughput, weight-sync cost, greedy agreement.

    python benchmarks/generation_throughput.py --json runs/gen.json --md runs/gen.md

Sampling as the trainer does it (T 0.6, top-p 0.95, K samples per prompt, stop at EOS or a closed
code block); tok/s = generated tokens / wall seconds of the generate call, prefill included.
``threads`` is the number of cores an engine uses: torch threads for hf, single-thread workers for
ct2 and llamacpp; ``batch`` is the sequences one worker decodes together (llamacpp refills a finished
row's slot at once; hf and ct2 run static batches). Greedy agreement compares each engine's greedy
completions with HF float32's, token by token.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from rltf.datasets import load_dataset
from rltf.generation import HFEngine, SamplingParams
from rltf.generation.ct2 import CT2Engine
from rltf.generation.llamacpp import LlamaCppEngine
from rltf.models import Policy, set_threads


def bf16_is_native() -> bool:
    """bf16 GEMM at least a quarter of fp32's speed (CPUs without AVX512-BF16/AMX emulate it, ~100x slower)."""
    a = torch.randn(512, 512)
    speed = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x
        started = time.perf_counter()
        for _ in range(3):
            x @ x
        speed[dtype] = 1 / (time.perf_counter() - started)
    return speed[torch.bfloat16] > speed[torch.float32] / 4


def engine(name: str, policies: dict[str, Policy], threads: int, batch: int):
    kind, mode = name.split("-")
    if kind == "hf":
        set_threads(threads)
        return HFEngine(policies[mode], batch_size=batch)
    set_threads(1)
    if kind == "llamacpp":
        return LlamaCppEngine(policies["float32"], mode, workers=threads, threads=1, batch_size=batch)
    return CT2Engine(policies["float32"], mode, workers=threads, threads=1, batch_size=batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", default="hf-float32,hf-bfloat16,ct2-float32,ct2-int8,llamacpp-float32,"
                                             "llamacpp-float16,llamacpp-bfloat16")
    parser.add_argument("--prompts", type=int, default=8, help="MBPP train prompts (task ids from 601)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--batches", default="10,40")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--greedy-prompts", type=int, default=8)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    args = parser.parse_args()

    problems = load_dataset("mbpp", "train", None, None)
    names = args.engines.split(",")
    native_bf16 = bf16_is_native()
    if not native_bf16:
        names = [n for n in names if not n.endswith("bfloat16")]
    hf_modes = {n.split("-")[1] for n in names if n.startswith("hf")}
    policies = {mode: Policy.load(dtype=mode, device="cpu") for mode in hf_modes}  # CPU throughput, by threads
    policies.setdefault("float32", Policy.load(device="cpu"))
    base = policies["float32"]
    prompts = [base.prompt(p) for p in problems[: args.prompts]]
    rows = []
    for name in names:
        for threads in map(int, args.threads.split(",")):
            for batch in map(int, args.batches.split(",")):
                gen = engine(name, policies, threads, batch)
                out = gen.generate(prompts, SamplingParams(args.samples, 0.6, 0.95, args.max_new_tokens, seed=0))
                done = [c for cs in out.completions for c in cs]
                rows.append({"engine": name, "threads": threads, "batch": batch, "sequences": len(done),
                             "tokens": out.new_tokens, "seconds": round(out.wall_s, 2),
                             "tok_s": round(out.tokens_per_s, 1),
                             "stopped": sum(c.finish_reason != "length" for c in done) / len(done)})
                print(json.dumps(rows[-1]), flush=True)
                gen.close()

    set_threads(2)
    greedy_prompts = [base.prompt(p) for p in problems[: args.greedy_prompts]]
    params = SamplingParams(1, 0.0, 1.0, args.max_new_tokens)
    reference = [cs[0].token_ids for cs in HFEngine(base, batch_size=8).generate(greedy_prompts, params).completions]
    agreement, syncs = {}, {}
    for name in [n for n in names if n != "hf-float32"]:
        gen = engine(name, policies, 2, 8)
        got = [cs[0].token_ids for cs in gen.generate(greedy_prompts, params).completions]
        first = [next((t for t, (a, b) in enumerate(zip(x, y)) if a != b), min(len(x), len(y)))
                 for x, y in zip(reference, got) if x != y]
        agreement[name] = {"identical": sum(x == y for x, y in zip(reference, got)), "of": len(reference),
                           "first_differing_token": first}
        if not name.startswith("hf"):
            syncs[name] = [round(gen.sync(i), 2) for i in range(1, 4)]
        print(name, agreement[name], syncs.get(name), flush=True)
    result = {"rows": rows, "greedy_agreement_with_hf_float32": agreement, "sync_s": syncs,
              "settings": vars(args) | {"json": None, "md": None}, "native_bf16": native_bf16,
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "torch": torch.__version__}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.md:
        lines = ["| engine | threads | batch | tok/s | tokens | seconds |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['engine']} | {r['threads']} | {r['batch']} | {r['tok_s']} | {r['tokens']} | {r['seconds']} |"
                  for r in rows]
        lines += ["", "| engine | greedy identical to HF float32 | first differing token | weight sync (s) |",
                  "|---|---|---|---|"]
        lines += [f"| {n} | {a['identical']}/{a['of']} | {a['first_differing_token']} | {syncs.get(n, '-')} |"
                  for n, a in agreement.items()]
        args.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
