"""``rltf ablate``: every arm of a spec, for every seed, trained and evaluated alike, then compared
with paired statistics.

An ablation is a claim about a difference ("full RLTF beats coarse feedback"), so each arm is the
same base config plus a few overrides, every arm runs the same seeds, steps and evaluations, and the
comparison is paired: arm and reference are judged on the same problems under the same seed. The
spec is YAML::

    base: mbpp-rl                       # a config name or file
    overrides: [model.name=runs/sft/checkpoints/step-12/model]
    arms:
      coarse: [feedback.adaptive=false, feedback.fine_grained=false]
      full: []
    seeds: [0, 1, 2]
    steps: 8
    reference: coarse
    eval: [{dataset: mbpp, split: test}, {dataset: mbpp-plus, split: test}, {dataset: humaneval}]

Each (arm, seed) is one ``rltf train`` run in ``OUT/ARM/seed-N`` followed by greedy pass@1 of its
last checkpoint on every eval target (``OUT/ARM/seed-N/ablate-eval/TARGET``). Runs go to a child
process each, pinned to its own cores with a matching thread count (``threads`` cores a run,
``parallel`` runs at once), so two cores run two single-thread runs instead of two runs whose OpenMP
pools fight over both cores. Everything resumes: a repeated command skips finished runs and
evaluations and continues the others where their checkpoints and samples end.

Modules: ``spec`` (the YAML and the run layout), ``runner`` (pinned child processes, resume),
``stats`` (bootstrap intervals, sign test) and ``report`` (rows, table, plot).

Outputs: ``ablation.json`` (one row per arm and eval target), ``ablation.md`` (the same as a table,
with the verdict mix and the compute each arm spent) and ``ablation.png``.
"""

from rltf.ablation.runner import cpu_slots, run_ablation
from rltf.ablation.spec import RESULT, AblationSpec, EvalTarget, WarmStart, load_spec
from rltf.ablation.stats import bootstrap_mean, sign_test

__all__ = ["RESULT", "AblationSpec", "EvalTarget", "WarmStart", "bootstrap_mean", "cpu_slots", "load_spec",
           "run_ablation", "sign_test"]
