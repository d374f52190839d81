"""The child process of one ablation run: ``python -m rltf.ablation SPEC OUT ARM SEED``."""

import sys
from pathlib import Path

from rltf.ablation.runner import run_one
from rltf.ablation.spec import load_spec

spec_file, out_dir, arm_name, seed_text = sys.argv[1:5]
run_one(load_spec(spec_file), Path(out_dir), arm_name, int(seed_text))
