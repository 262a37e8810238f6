#!/usr/bin/env bash
# The checks that need a CUDA device, in one run (about 5-8 minutes on one H100): the device, every test marked
# `gpu` (device moves, every explainer on CUDA equal to the CPU, a real out-of-memory backoff, a torchrun study
# on the GPU), then benchmarks/gpu.py (images/s and ratios to batched forwards, fp32 and bf16) as one table.
# Run from the repository root with vitlens and its test dependencies importable: bash benchmarks/gpu_check.sh
# On a machine without CUDA the tests skip and the benchmark runs on the CPU (FAST=1 makes it tiny, to try the
# script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
"$PY" -m pytest -q -p no:cacheprovider -m gpu tests
if [ "${FAST:-0}" = 1 ]; then
    "$PY" benchmarks/gpu.py --model deit_tiny_patch16_224 --img-size 64 --batch 2 --curve-images 1 --curve-batch 16 --repeats 1
else
    "$PY" benchmarks/gpu.py --model vit_base_patch16_224 --batch 32 --curve-images 8 --curve-batch 256 --repeats 3
fi
