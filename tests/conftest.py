"""Shared fixtures: small real models (timm, HF, torchvision) with random weights, seeded."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network in tests
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

import vitlens

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def make_timm(name: str, seed: int = 0, **kwargs) -> vitlens.Model:
    torch.manual_seed(seed)
    return vitlens.load_model(f"timm:{name}", **kwargs)


def make_hf(kind: str, seed: int = 0) -> vitlens.Model:
    from transformers import DeiTConfig, DeiTForImageClassificationWithTeacher, ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    common = dict(
        image_size=64,
        patch_size=16,
        hidden_size=48,
        num_hidden_layers=3,
        num_attention_heads=3,
        intermediate_size=96,
        num_labels=7,
    )
    if kind == "vit":
        module = ViTForImageClassification(ViTConfig(**common))
    else:
        module = DeiTForImageClassificationWithTeacher(DeiTConfig(**common))
    return vitlens.load_model(module.eval())


# name -> factory; the ViT-family zoo every attention explainer is checked on
VIT_ZOO = {
    "test_vit": lambda: make_timm("test_vit"),
    "test_vit2_avgpool": lambda: make_timm("test_vit2"),
    "deit_tiny": lambda: make_timm("deit_tiny_patch16_224"),
    "deit_tiny_distilled": lambda: make_timm("deit_tiny_distilled_patch16_224"),
    "vit_registers": lambda: make_timm(
        "vit_small_patch16_224",
        img_size=64,
        patch_size=8,
        embed_dim=48,
        depth=3,
        num_heads=3,
        reg_tokens=4,
        num_classes=5,
    ),
    "vit_p8_112": lambda: make_timm(
        "vit_small_patch16_224", img_size=112, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=4
    ),
    "hf_vit": lambda: make_hf("vit"),
    "hf_deit_distilled": lambda: make_hf("deit"),
}

_CACHE: dict[str, vitlens.Model] = {}


def zoo_model(name: str) -> vitlens.Model:
    if name not in _CACHE:
        _CACHE[name] = VIT_ZOO[name]()
    return _CACHE[name]


def images_for(model: vitlens.Model, batch: int = 3, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = model.preprocessing.input_size
    return torch.randn(batch, model.preprocessing.in_chans, h, w, generator=g)


@pytest.fixture(params=sorted(VIT_ZOO))
def vit_model(request) -> vitlens.Model:
    return zoo_model(request.param)


@pytest.fixture(scope="session")
def deit() -> vitlens.Model:
    return zoo_model("deit_tiny")


@pytest.fixture(scope="session")
def swin() -> vitlens.Model:
    torch.manual_seed(0)
    return vitlens.load_model(
        "timm:swin_tiny_patch4_window7_224", embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), num_classes=6
    )


@pytest.fixture(scope="session")
def resnet50() -> vitlens.Model:
    torch.manual_seed(0)
    return vitlens.load_model("torchvision:resnet50", num_classes=10)


# explainers whose cost is many forwards (occlusion, RISE) or a max-flow per patch (attention flow): every
# parametrised case that runs one is marked ``slow`` (``make test`` runs them, ``make test-fast`` does not)
SLOW_METHODS = frozenset({"attention_flow", "occlusion", "rise"})


def pytest_collection_modifyitems(config, items) -> None:
    """``gpu`` tests need a CUDA device: skipped where torch sees none (``make test`` runs every other test).
    Cases parametrised with a :data:`SLOW_METHODS` explainer get the ``slow`` marker."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(isinstance(v, str) and v in SLOW_METHODS for v in params.values()):
            item.add_marker(pytest.mark.slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker gpu); benchmarks/gpu_check.sh runs these on a GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
