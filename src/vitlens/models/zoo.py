"""Small random-init models of every family the adapters support, for the coverage matrix, tests and
benchmarks: the same code paths as the full-size models (timm ViT, DeiT distilled, ViT with registers,
Hugging Face ViT, Swin, ResNet-50), a few layers wide, built without downloads.

This module, like the rest of :mod:`vitlens.models`, is allowed to import timm and transformers; code above
the adapters asks for a family by :data:`SMALL_FAMILIES` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import VitlensError
from .base import Model
from .loading import load_model


@dataclass(frozen=True)
class Family:
    """A model family: its label in the coverage matrix, a factory for a small seeded model, its input size."""

    label: str
    make: Callable[[], Model]
    input_hw: tuple[int, int]


def small_timm_vit(**kw) -> Callable[[], Model]:
    """Factory for a 2-block timm ViT on 64x64 input (``kw`` overrides, e.g. ``reg_tokens=4``)."""

    def make() -> Model:
        torch.manual_seed(0)
        dims = dict(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=5)
        return load_model("timm:vit_small_patch16_224", **(dims | kw))

    return make


def small_deit_distilled() -> Model:
    torch.manual_seed(0)
    return load_model(
        "timm:deit_tiny_distilled_patch16_224", img_size=64, embed_dim=48, depth=2, num_heads=3, num_classes=5
    )


def small_hf_vit() -> Model:
    try:
        from transformers import ViTConfig, ViTForImageClassification
    except ImportError as e:  # pragma: no cover - transformers is in the test extra
        raise VitlensError("transformers is not installed (pip install 'vitlens[hf]')") from e
    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=64,
        patch_size=16,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        num_labels=5,
    )
    return load_model(ViTForImageClassification(cfg).eval())


def small_swin() -> Model:
    torch.manual_seed(0)
    return load_model(
        "timm:swin_tiny_patch4_window7_224", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=5
    )


def small_resnet50() -> Model:
    torch.manual_seed(0)
    return load_model("torchvision:resnet50", num_classes=5)


SMALL_FAMILIES: list[Family] = [
    Family("timm ViT", small_timm_vit(), (64, 64)),
    Family("DeiT distilled", small_deit_distilled, (64, 64)),
    Family("ViT + registers", small_timm_vit(reg_tokens=4), (64, 64)),
    Family("HF ViT", small_hf_vit, (64, 64)),
    Family("Swin", small_swin, (224, 224)),
    Family("ResNet-50", small_resnet50, (64, 64)),
]
