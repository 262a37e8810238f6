"""Devices, precision and memory: the device rule, bf16 against fp32 on the builtin models, memory-budget
chunking and the out-of-memory backoff (an out-of-memory error raised on purpose by a model, on the CPU)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from torch import nn

import vitlens
from vitlens.bench.config import ConfigError, parse_config
from vitlens.bench.runner import explain_halving, run_study
from vitlens.cli import main
from vitlens.data.images import to_unit_tensor
from vitlens.data.synthetic import get_benchmark
from vitlens.devices import resolve_device
from vitlens.explainers import applicable_explainers
from vitlens.models import Preprocessing, wrap_module
from vitlens.models.memory import activation_bytes, chunk_for_budget

LIGHT = {"rise": {"n_masks": 500}, "smoothgrad": {"n_samples": 8}, "integrated_gradients": {"n_steps": 8}}
EXACT = {"chefer2021", "generic_attention", "attnlrp", "agcam", "legrad"}
# smallest per-image Pearson correlation of a bf16 map with its fp32 map allowed (measured on 4 builtin test
# images, 2026-12-07: >= 0.9993 for every attention/CAM method on the ViT, 0.965 occlusion (ViT),
# 0.967-0.992 for the pixel-gradient methods on the CNN, whose maps are noisy at full precision too)
MIN_CORR = {"occlusion": 0.95, "saliency": 0.95, "input_x_gradient": 0.95, "integrated_gradients": 0.95}


@pytest.fixture(scope="module")
def cells():
    bench = get_benchmark("cells")
    return np.stack([bench.sample(i, 0, "test").image for i in range(4)])


def test_device_rule():
    assert (
        resolve_device("auto") == resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    with pytest.raises(vitlens.InputError, match="not supported"):
        resolve_device("xla")
    with pytest.raises(vitlens.InputError, match="not valid"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(vitlens.InputError, match="CUDA is not available"):
            resolve_device("cuda:1")
    if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        with pytest.raises(vitlens.InputError, match="MPS"):
            resolve_device("mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a missing CUDA device")
@pytest.mark.parametrize(
    "argv",
    [
        ["explain", "x.png", "--model", "builtin:cells_vit", "--method", "rollout", "--out", "o", "--device", "cuda"],
        ["bench", "builtin:attention-study", "--out", "o", "--device", "cuda:0"],
        ["bench", "builtin:attention-study", "--out", "o", "--device", "cuda", "--nproc", "2"],
        ["demo", "--device", "tpu"],
        ["serve", "--device", "cuda"],
    ],
)
def test_missing_devices_are_one_line_errors(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.png").write_bytes(b"")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitlens: error: ") and "device" in err[0]
    assert not (tmp_path / "o").exists(), "nothing was written"


def test_precision_is_validated():
    model = vitlens.load_model("builtin:cells_vit")
    with pytest.raises(vitlens.InputError, match="precision"):
        model.to(precision="fp8")
    base = {
        "datasets": [{"name": "c", "builtin": "cells", "n": 2, "models": ["builtin:cells_vit"]}],
        "explainers": ["rollout"],
        "metrics": ["pointing_game"],
    }
    with pytest.raises(ConfigError, match="precision"):
        parse_config({**base, "precision": "half"})
    with pytest.raises(ConfigError, match="memory_budget_mb"):
        parse_config({**base, "memory_budget_mb": 0})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({**base, "devcie": "cpu"})
    cfg = parse_config({**base, "precision": "bf16", "device": "cpu", "memory_budget_mb": 64})
    assert (cfg.precision, cfg.device, cfg.memory_budget_mb) == ("bf16", "cpu", 64.0)
    # precision changes the numbers, so it is part of the run's identity; device and budget are not
    assert cfg.to_dict()["precision"] == "bf16" and "device" not in cfg.to_dict()
    assert "precision" not in parse_config(base).to_dict()  # runs made before precision existed keep theirs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cells_vit", "cells_cnn"])
def test_bf16_maps_stay_close_to_fp32_and_exact_methods_are_exact(name, cells):
    model = vitlens.load_model(f"builtin:{name}")
    x = model.preprocessing.normalise(to_unit_tensor(cells))
    for method in applicable_explainers(model):
        if method == "attention_flow":  # max-flow on attention: covered by the ViT attention methods' bound
            continue
        explainer = vitlens.get_explainer(method, model, **LIGHT.get(method, {}))
        model.to(precision="fp32")
        full = explainer(x)
        model.to(precision="bf16")
        low = explainer(x)
        model.to(precision="fp32")
        assert low.dtype == torch.float32 and torch.isfinite(low).all()
        if method in EXACT:  # relevance propagation runs its forward in float32 whatever the setting
            assert torch.equal(full, low), method
            continue
        assert not torch.equal(full, low), f"{method}: bf16 did not change anything (autocast not applied?)"
        corr = min(
            float(torch.corrcoef(torch.stack([f.flatten(), g.flatten()]))[0, 1]) for f, g in zip(full, low, strict=True)
        )
        assert corr >= MIN_CORR.get(method, 0.99), (method, corr)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cells_vit", "cells_cnn"])
def test_bf16_insertion_and_deletion_auc_within_0_005_of_fp32(name, cells):
    # measured 2026-12-07 (Grad-CAM maps, 16 steps, 4 images): ViT <= 7.2e-5, CNN <= 1.5e-3
    model = vitlens.load_model(f"builtin:{name}")
    x = model.preprocessing.normalise(to_unit_tensor(cells))
    maps = vitlens.get_explainer("gradcam", model)(x)
    for metric in ("deletion", "insertion"):
        m = vitlens.get_metric(metric, steps=16, progress=False)
        full = m(model.to(precision="fp32"), x, maps).scores
        low = m(model.to(precision="bf16"), x, maps).scores
        model.to(precision="fp32")
        assert (full - low).abs().max() <= 0.005, metric


class _Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 5)
        self.num_classes = 5

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1))


def test_activation_bytes_by_hand():
    model = wrap_module(_Convs(), preprocessing=Preprocessing(input_size=(8, 8)))
    # input 3*8*8, conv 2*8*8, pool 2, fc 5 and the root module's output 5, float32
    expected = 4 * (3 * 64 + 2 * 64 + 2 + 5 + 5)
    assert activation_bytes(model, (3, 8, 8)) == expected
    assert chunk_for_budget(model, (3, 8, 8), expected * 10 / 2**20) == 10
    assert chunk_for_budget(model, (3, 8, 8), 1e-9) == 1


class _FailsAbove(nn.Module):
    """Wraps a module; raises CUDA's out-of-memory error for batches larger than ``limit`` (and counts calls)."""

    def __init__(self, inner: nn.Module, limit: int):
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []
        self.num_classes = inner.num_classes

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.inner(x)


def _small_vit():
    return vitlens.load_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=3, seed=0)


def test_perturbation_chunks_halve_on_out_of_memory(caplog):
    model = _small_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    ref = vitlens.get_metric("deletion", batch_size=3, patch=8, progress=False)(model, x, maps)
    failing = wrap_module(_FailsAbove(model.module, 3), preprocessing=model.preprocessing)
    with caplog.at_level(logging.WARNING, logger="vitlens.metrics"):
        res = vitlens.get_metric("deletion", batch_size=16, patch=8, progress=False)(failing, x, maps)
    torch.testing.assert_close(res.scores, ref.scores, rtol=0, atol=1e-6)
    torch.testing.assert_close(res.curves, ref.curves, rtol=0, atol=1e-6, equal_nan=True)
    sizes = failing.module.sizes  # the unperturbed forward, then 16 -> 8 -> 4 fail, 2 fits and is kept
    assert sizes[:5] == [2, 16, 8, 4, 2] and max(sizes[5:]) == 2
    assert caplog.text.count("out of memory") == 3


def test_memory_budget_sets_the_chunk_and_not_the_result():
    model = _small_vit()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    ref = vitlens.get_metric("insertion", patch=8, progress=False)(model, x, maps)
    counting = wrap_module(_FailsAbove(model.module, 10**9), preprocessing=model.preprocessing)
    per_image = activation_bytes(counting, (3, 32, 32))
    counting.module.sizes.clear()
    res = vitlens.get_metric("insertion", patch=8, memory_mb=3 * per_image / 2**20, progress=False)(counting, x, maps)
    assert counting.module.sizes[0] == 2 and max(counting.module.sizes[1:]) == 3  # 3 images' activations fit
    torch.testing.assert_close(res.scores, ref.scores, rtol=0, atol=1e-6)


def test_explaining_a_unit_halves_the_batch_on_out_of_memory(caplog):
    model = _small_vit()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ref = vitlens.get_explainer("gradcam", model).explain(x)
    failing = wrap_module(_FailsAbove(model.module, 1), preprocessing=model.preprocessing)
    explainer = vitlens.get_explainer("saliency", failing)
    direct = vitlens.get_explainer("saliency", model).explain(x)
    with caplog.at_level(logging.WARNING, logger="vitlens.bench"):
        out = explain_halving(explainer, x, None, "unit-1")
    torch.testing.assert_close(out.maps, direct.maps, rtol=0, atol=1e-6)
    assert torch.equal(out.target, direct.target) and out.logits.shape == ref.logits.shape
    assert "out of memory" in caplog.text


def test_other_errors_are_not_taken_for_out_of_memory():
    model = _small_vit()

    class Broken(nn.Module):
        num_classes = 3

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    broken = wrap_module(Broken(), preprocessing=model.preprocessing)
    with pytest.raises(vitlens.InputError, match="shapes cannot be multiplied"):
        explain_halving(vitlens.get_explainer("saliency", broken), torch.zeros(2, 3, 32, 32), None, "u")


def test_study_records_device_budget_and_peak_memory(tmp_path):
    cfg = parse_config(
        {
            "name": "mem",
            "batch_size": 2,
            "device": "cpu",
            "memory_budget_mb": 16,
            "datasets": [{"name": "c", "builtin": "cells", "n": 2, "models": ["builtin:cells_vit"]}],
            "explainers": ["rollout"],
            "metrics": [{"name": "deletion", "params": {"steps": 4}}],
        }
    )
    run_study(cfg, tmp_path, progress=False)

    entry = json.loads((tmp_path / "logs" / "rank0.jsonl").read_text().splitlines()[0])
    assert entry["device"] == "cpu" and entry["peak_memory_bytes"] is None  # CPU: no device memory counter
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["memory_budget_mb"] == 16.0 and run["workers"] == 1
    if not torch.cuda.is_available():
        with pytest.raises(vitlens.InputError, match="CUDA is not available"):
            run_study(cfg, tmp_path / "other", progress=False, device="cuda")
        assert not (tmp_path / "other").exists()


def test_explain_cli_records_device_and_precision(tmp_path, cells):
    from PIL import Image

    Image.fromarray(cells[0]).save(tmp_path / "cell.png")
    argv = ["explain", str(tmp_path / "cell.png"), "--model", "builtin:cells_vit", "--method", "rollout,chefer2021"]
    assert main([*argv, "--out", str(tmp_path / "fp32"), "--device", "cpu"]) == 0
    assert main([*argv, "--out", str(tmp_path / "bf16"), "--device", "cpu", "--precision", "bf16"]) == 0
    summary = json.loads((tmp_path / "bf16" / "summary.json").read_text())
    assert (summary["device"], summary["precision"]) == ("cpu", "bf16")
    full, low = (np.load(tmp_path / p / "cell" / "chefer2021.npy") for p in ("fp32", "bf16"))
    assert np.array_equal(full, low)  # exact under any precision
    full, low = (np.load(tmp_path / p / "cell" / "rollout.npy") for p in ("fp32", "bf16"))
    assert not np.array_equal(full, low) and np.corrcoef(full.ravel(), low.ravel())[0, 1] > 0.999


def test_more_workers_than_gpus_is_refused(monkeypatch):
    from vitlens.bench import workers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(vitlens.InputError, match="no GPU: 1 CUDA device"):
        workers._device_for("cuda", 1, True)
    with pytest.raises(vitlens.InputError, match="needs 3 GPUs"):
        workers.launch_local(3, ["bench", "x.yaml"], "cuda")
