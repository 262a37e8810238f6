#!/usr/bin/env bash
# The checks that need a CUDA device, in one run: the device, then every test marked `gpu` (skipped on
# machines without CUDA, so `make test` never runs them there). Run it on a GPU machine from the repository
# root, with vitlens and its test dependencies importable: bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} "$PY" -m pytest -q -p no:cacheprovider -m gpu tests
