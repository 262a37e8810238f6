"""Weights and inputs behind ``tests/fixtures/chefer2021_reference.npz`` (see tests/fixtures/README.md).

Every parameter is drawn from NumPy's PCG64 generator (a bit stream NumPy keeps stable across versions)
rather than from timm's initialiser, so the same weights can be rebuilt on any machine and torch version.
Scales are chosen so that attention is far from uniform (``W ~ N(0, 1/fan_in)``, LayerNorm gains
``1 + 0.2·N``), which makes the maps depend on every rule of the propagation.
"""

from __future__ import annotations

import numpy as np
import torch

import vitlens

MODELS = {
    # fixture key -> (timm name, the reference VisionTransformer's constructor arguments)
    "vit_base_patch16_224": ("vit_base_patch16_224", dict(embed_dim=768, depth=12, num_heads=12)),
    "deit_small_patch16_224": ("deit_small_patch16_224", dict(embed_dim=384, depth=12, num_heads=6)),
}
N_IMAGES = 2
SEED = 2021


def seeded_state_dict(module: torch.nn.Module, seed: int = SEED) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, p in sorted(module.state_dict().items()):
        shape = tuple(p.shape)
        z = rng.standard_normal(shape)
        if name.endswith("bias"):
            v = 0.1 * z
        elif p.ndim == 1:  # LayerNorm gains
            v = 1.0 + 0.2 * z
        elif name.endswith(("cls_token", "pos_embed")):
            v = 0.5 * z
        else:  # linear and patch-embedding weights: fan-in scaling
            v = z / np.sqrt(np.prod(shape[1:]))
        out[name] = torch.from_numpy(v.astype(np.float32))
    return out


def fixture_model(key: str) -> vitlens.Model:
    name, _ = MODELS[key]
    model = vitlens.load_model(f"timm:{name}", pretrained=False)
    model.module.load_state_dict(seeded_state_dict(model.module))
    return model


def fixture_images(seed: int = SEED) -> torch.Tensor:
    rng = np.random.default_rng(seed + 1)
    return torch.from_numpy(rng.standard_normal((N_IMAGES, 3, 224, 224)).astype(np.float32))
