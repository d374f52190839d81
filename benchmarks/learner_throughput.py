"""How fast does the learner train a recorded step? Each lever on and off, against the per-micro-batch path.

    python benchmarks/learner_throughput.py                      # both recorded steps, the default levers
    python benchmarks/learner_throughput.py --steps ablation-rl --runs reference,packed --json OUT.json

A recorded step (``benchmarks/learner/<name>.json.gz``, written by a run with ``log.learner_batches=true``)
holds the RL micro-batches (prompt and completion ids, returns, the engine's log-probs) and the SL
micro-batches of one optimizer step: ``ablation-rl`` (step 1 of a run of the first ablation's RL
config: 32 samples), ``default`` (step 3 of the default run in ``experiments/train-runs/default-every-sample/``:
40 samples and 4 references) and ``default-micro4`` (step 1 of the previous default: 4 and 4). Each run
replays it on the embedded SmolLM2-135M: forward and backward of the whole step (no optimizer step),
once to warm up and then ``--repeat`` times, timed
(``--repeat 0`` times the warm-up itself: for the slow paths of a large step).

- ``reference``: the learner before packing: each micro-batch of ``micro_batch`` sequences padded to
  its longest row, every prompt run once per sequence, samples of zero returns run too;
- ``packed``: :mod:`rltf.train.packing` with every lever on (shared prompts, token-budget rows, zero-
  weight samples skipped); ``-share`` / ``-skip`` turn one lever off;
- each at ``float32`` or ``bfloat16`` autocast, and 1 or 2 torch threads; ``+compile`` wraps the
  model in ``torch.compile``.

It reports tokens fed per second, sampled programs trained per second (the step's RL samples over
its seconds) and the largest gradient difference from the reference path at float32 (relative to
the largest gradient). ``--json OUT`` writes ``{"baseline", "best", "max_grad_rel_diff", "runs"}`` for the
first step named, at the first dtype and thread count.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rltf.models import DEFAULT_MODEL, Policy
from rltf.train.losses import (
    TrainItem,
    collate,
    kept_target_tokens,
    policy_loss,
    sequence_factors,
    target_logprobs,
    weighted_nll,
)
from rltf.train.packing import build, order, packed_logprobs, plan, weigh, weighted_loss

STEPS_DIR = Path(__file__).parent / "learner"


def load_step(name: str) -> dict[str, Any]:
    record = json.loads(gzip.decompress((STEPS_DIR / f"{name}.json.gz").read_bytes()))
    record["rl"] = [[TrainItem(**s) for s in batch] for batch in record["rl"]]
    record["sl"] = [[TrainItem(**s, weights=[1.0] * len(s["target_ids"])) for s in batch] for batch in record["sl"]]
    return record


def reference(model: Any, step: dict[str, Any], chunk: int | None = None) -> int:
    """Forward and backward of every micro-batch as the learner ran them before packing; with ``chunk``,
    ``chunk`` sequences at a time, each chunk's token mean weighted by its share of the micro-batch's
    tokens (the same loss: a micro-batch of 40 padded sequences does not fit 24 GiB in float32)."""
    opt, tokens = step["optim"], 0
    kept = [[kept_target_tokens(len(it.prompt_ids), len(it.target_ids), opt["max_seq_len"], False) for it in batch]
            for batch in step["rl"]]
    step_tokens = sum(map(sum, kept))
    for batch, sizes, references in zip(step["rl"], kept, step["sl"], strict=True):
        if batch:
            factors = sequence_factors(sizes, opt["loss_aggregation"], step_tokens, opt["grad_accum"])
            scaled = [TrainItem(it.prompt_ids, it.target_ids, [f * r for r in it.weights], it.behaviour)
                      for it, f in zip(batch, factors, strict=True)]
            stored = all(it.behaviour for it in batch)
            for part in _chunks(scaled, chunk):
                padded = collate(part, 0, opt["max_seq_len"], False)
                loss = policy_loss(target_logprobs(model, padded), padded.weights,
                                   padded.behaviour if stored else None, opt["importance"], opt["clip_eps"],
                                   opt["tis_cap"])[0] * len(padded.weights) / sum(sizes)
                (opt["rl_weight"] * loss / opt["grad_accum"]).backward()
                tokens += padded.tokens
        if references:
            total = sum(kept_target_tokens(len(it.prompt_ids), len(it.target_ids), opt["max_seq_len"], False)
                        for it in references)
            for part in _chunks(references, chunk):
                padded = collate(part, 0, opt["max_seq_len"], False)
                loss = weighted_nll(target_logprobs(model, padded), padded.weights) * len(padded.weights) / total
                (opt["sl_weight"] * loss / opt["grad_accum"]).backward()
                tokens += padded.tokens
    return tokens


def _chunks(items: list[TrainItem], size: int | None) -> list[list[TrainItem]]:
    return [items] if not size else [items[i:i + size] for i in range(0, len(items), size)]


def packed(model: Any, step: dict[str, Any], share: bool = True, skip: bool = True) -> int:
    """The trainer's packed path (:meth:`rltf.train.Trainer._backward`)."""
    opt = step["optim"]
    kept = sum(kept_target_tokens(len(it.prompt_ids), len(it.target_ids), opt["max_seq_len"], False)
               for batch in step["rl"] for it in batch)
    weighted, _ = weigh(step["rl"], step["sl"], rl_weight=opt["rl_weight"], sl_weight=opt["sl_weight"],
                        grad_accum=opt["grad_accum"], ranks=1, aggregation=opt["loss_aggregation"],
                        importance=opt["importance"], step_tokens=kept, max_len=opt["max_seq_len"], skip_zero=skip)
    items, tokens = [w.item for w in weighted], 0
    for rows in plan(items, opt["max_seq_len"], opt.get("micro_batch_tokens", 4096), opt.get("pack_row_tokens", 1024),
                     share):
        batch = build(rows, items, opt["max_seq_len"], 0)
        loss, _, _ = weighted_loss(packed_logprobs(model, batch), batch.owner, batch.weights, batch.behaviour,
                                   [weighted[i] for i in order(rows)], opt["clip_eps"], opt["tis_cap"])
        loss.backward()
        tokens += batch.tokens
    return tokens


def run(model: Any, step: dict[str, Any], name: str, dtype: str, repeat: int,
        chunk: int | None = None) -> dict[str, Any]:
    base, *minus = name.split("-")
    compiled = base.endswith("+compile")
    base = base.removesuffix("+compile")
    target = torch.compile(model, dynamic=True) if compiled else model
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()

    def once() -> int:
        model.zero_grad(set_to_none=True)
        with cast:
            if base == "reference":
                return reference(target, step, chunk)
            return packed(target, step, share="share" not in minus, skip="skip" not in minus)

    started = time.perf_counter()
    tokens = once()  # warm-up (and compilation)
    warmup = time.perf_counter() - started
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        tokens = once()
        times.append(time.perf_counter() - started)
    seconds = min(times) if times else warmup  # --repeat 0: the warm-up is the measurement (a large step)
    programs = sum(map(len, step["rl"]))
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).clone()
    return {"run": name, "dtype": dtype, "threads": torch.get_num_threads(), "seconds": seconds,
            "seconds_all": times, "warmup_s": warmup, "tokens": tokens, "tokens_per_s": tokens / seconds,
            "programs": programs, "programs_per_s": programs / seconds, "grads": grads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="ablation-rl,default", help="recorded steps in benchmarks/learner/")
    parser.add_argument("--runs", default="reference,packed,packed-share,packed-skip")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs after the warm-up (0: time the warm-up)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recorded optim setting, e.g. --set pack_row_tokens=1024")
    parser.add_argument("--reference-chunk", type=int, default=None, metavar="N",
                        help="run the reference path N sequences at a time (same loss; for large micro-batches)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args(argv)
    model = Policy.load(args.model, device="cpu").model.train()  # CPU throughput, by threads
    results = []
    for step_name in args.steps.split(","):
        step = load_step(step_name)
        step["optim"].update({k: int(v) for k, v in (o.split("=", 1) for o in args.overrides)})
        exact = None
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            for dtype in args.dtypes.split(","):
                for name in args.runs.split(","):
                    result = run(model, step, name, dtype, args.repeat, args.reference_chunk)
                    if exact is None:  # the first run: the reference path at float32 (see --runs)
                        exact = result["grads"]
                    grads = result.pop("grads")
                    result["max_grad_rel_diff"] = float((grads - exact).abs().max() / exact.abs().max())
                    results.append({"step": step_name, **result})
                    print(json.dumps({k: v for k, v in results[-1].items() if k != "seconds_all"}), flush=True)
    table = markdown(results)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        first = [r for r in results if r["step"] == results[0]["step"] and r["dtype"] == results[0]["dtype"]
                 and r["threads"] == results[0]["threads"]]
        baseline = next((r for r in first if r["run"] == "reference"), first[0])  # else the first run named
        best = max(first, key=lambda r: r["programs_per_s"])
        args.json.write_text(json.dumps({
            "step": results[0]["step"], "dtype": results[0]["dtype"], "threads": results[0]["threads"],
            "baseline": {"programs_per_s": baseline["programs_per_s"], "seconds": baseline["seconds"]},
            "best": {"programs_per_s": best["programs_per_s"], "seconds": best["seconds"], "levers": best["run"]},
            "speedup": best["programs_per_s"] / baseline["programs_per_s"],
            "max_grad_rel_diff": max(r["max_grad_rel_diff"] for r in first), "runs": results}, indent=1) + "\n")
    return 0


def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| step | run | dtype | threads | seconds | tokens fed | tokens/s | programs/s | vs reference | "
             "max grad diff (rel.) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        base = next((x for x in results if x["step"] == r["step"] and x["run"] == "reference"
                     and x["dtype"] == r["dtype"] and x["threads"] == r["threads"]), None)
        speedup = f"{r['programs_per_s'] / base['programs_per_s']:.2f}x" if base else "-"
        lines.append(f"| {r['step']} | {r['run']} | {r['dtype']} | {r['threads']} | {r['seconds']:.1f} | "
                     f"{r['tokens']} | {r['tokens_per_s']:.0f} | {r['programs_per_s']:.2f} | "
                     f"{speedup} | {r['max_grad_rel_diff']:.1e} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
