"""Checks that need a CUDA device (marker ``gpu``: skipped without one; ``benchmarks/gpu_check.sh`` runs them).

Expectations: every explainer gives on CUDA the map it gives on the CPU (same weights, same inputs; seeded
methods draw their masks/noise on the CPU, so they match too), within the tolerance of float32 reductions in
another order and of cuDNN's TF32 convolutions; a real CUDA out-of-memory error (under an artificially small
memory cap) halves the perturbation chunk and the scores stay those of an uncapped run; a study run by
torchrun on the GPU gives the rows of a CPU run (one worker: ``benchmarks/gpu_check.sh`` has one GPU, and
nccl wants a GPU per worker).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import vitlens
from vitlens.bench import run_study
from vitlens.bench.store import ResultsStore
from vitlens.data.images import to_unit_tensor
from vitlens.data.synthetic import get_benchmark
from vitlens.explainers import applicable_explainers

pytestmark = pytest.mark.gpu
LIGHT = {"rise": {"n_masks": 500}, "smoothgrad": {"n_samples": 8}, "integrated_gradients": {"n_steps": 8}}


def _images(n=4):
    bench = get_benchmark("cells")
    return np.stack([bench.sample(i, 0, "test").image for i in range(n)])


@pytest.mark.parametrize("name", ["cells_vit", "cells_cnn"])
def test_every_explainer_gives_the_cpu_map_on_cuda(name):
    model = vitlens.load_model(f"builtin:{name}")
    x = model.preprocessing.normalise(to_unit_tensor(_images()))
    for method in applicable_explainers(model):
        if method == "attention_flow":
            continue  # computed on the CPU from the recorded attention in any case
        cpu = vitlens.get_explainer(method, model.to("cpu"), **LIGHT.get(method, {}))(x)
        gpu = vitlens.get_explainer(method, model.to("cuda"), **LIGHT.get(method, {}))(x).cpu()
        corr = min(
            float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]) for a, b in zip(cpu, gpu, strict=True)
        )
        assert corr >= 0.999, (method, corr)
        scale = cpu.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
        assert ((cpu - gpu).abs() / scale).max() <= 2e-2, method
    model.to("cpu")


def test_real_out_of_memory_halves_the_chunk_and_keeps_the_scores():
    model = vitlens.load_model("timm:vit_base_patch16_224", seed=0)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 14, 14, generator=torch.Generator().manual_seed(1))
    metric = vitlens.get_metric("deletion", steps=196, batch_size=4096, progress=False)
    ref = vitlens.get_metric("deletion", steps=196, batch_size=64, progress=False)(model.to("cuda"), x, maps).scores
    _free, total = torch.cuda.mem_get_info()
    torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated() + 2 * 2**30) / total))
    try:
        scores = metric(model, x, maps).scores  # 392 perturbed images in one forward do not fit in 2 GiB
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        model.to("cpu")
    torch.testing.assert_close(scores, ref, rtol=0, atol=1e-4)


def test_torchrun_study_on_the_gpu_gives_the_cpu_rows(tmp_path):
    study = {
        "name": "gpu",
        "batch_size": 4,
        "datasets": [{"name": "c", "builtin": "cells", "n": 8, "models": ["builtin:cells_vit"]}],
        "explainers": ["rollout", "gradcam"],
        "metrics": ["pointing_game", {"name": "deletion", "params": {"steps": 16}}],
    }
    cfg = tmp_path / "s.yaml"
    cfg.write_text(yaml.safe_dump(study))
    run_study(cfg, tmp_path / "cpu", progress=False, device="cpu")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", "-m", "vitlens"]
    cmd += ["bench", str(cfg), "--out", str(tmp_path / "gpu"), "--quiet", "--device", "cuda"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    key = ["model", "explainer_key", "metric_key", "output", "image_id"]
    a = ResultsStore(tmp_path / "cpu").frame().sort_values(key).reset_index(drop=True)
    b = ResultsStore(tmp_path / "gpu").frame().sort_values(key).reset_index(drop=True)
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), atol=1e-3, equal_nan=True)
    entry = json.loads((tmp_path / "gpu" / "logs" / "rank0.jsonl").read_text().splitlines()[0])
    assert entry["device"].startswith("cuda") and entry["peak_memory_bytes"] > 0
