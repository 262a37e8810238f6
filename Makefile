# Quick start: `make demo` (main job on the builtin default) and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint format demo bench clean builtin

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# every CPU test (gpu-marked tests skip without CUDA; benchmarks/gpu_check.sh runs them on a GPU)
test: lint
	$(BIN)/python -m pytest -q

# the quick loop while editing: everything but the tests marked slow
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

demo: $(STAMP)
	$(BIN)/vitlens demo --out out/demo

bench: $(STAMP)
	$(BIN)/python benchmarks/explainers.py

clean:
	rm -rf $(VENV) out .pytest_cache

# Retrain every builtin checkpoint from its committed recipe (about 45 min on 2 CPU cores).
RECIPES := cells_vit cells_cnn ultrasound_vit ultrasound_cnn shortcut_vit
builtin: $(STAMP)
	for r in $(RECIPES); do $(BIN)/vitlens train --recipe $$r --out src/vitlens/models/weights/$$r || exit 1; done
