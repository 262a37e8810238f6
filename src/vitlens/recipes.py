"""Training recipes of the builtin checkpoints: ``vitlens train --recipe NAME --out DIR``.

Each recipe is a complete :class:`~vitlens.train.TrainConfig`; the builtin ``builtin:NAME`` is the output
of ``vitlens train --recipe NAME --out src/vitlens/models/weights/NAME`` (checkpoint files are not shipped).
ViTs: CLS token, patch 8 at 112 px (a 14x14 grid, the 196 tokens of ViT-B/16 at 224), width 192, 6 blocks,
3 heads. CNNs: timm ``resnet10t`` with ``output_stride=16`` so that its last stage, the Grad-CAM layer, has
the same 7x7 resolution as a ViT-B/16 and a finer one than the usual 4x4 at 112 px.
"""

from __future__ import annotations

import dataclasses

from .errors import VitlensError
from .train import TrainConfig

VIT_KWARGS = {"img_size": 112, "patch_size": 8, "embed_dim": 192, "depth": 6, "num_heads": 3}
CNN_KWARGS = {"output_stride": 16}

RECIPES: dict[str, TrainConfig] = {
    "cells_vit": TrainConfig(model="vit_small_patch16_224", model_kwargs=VIT_KWARGS, data="builtin:cells",
                             epochs=12, samples_per_epoch=4096, lr=1e-3),
    "cells_cnn": TrainConfig(model="resnet10t", model_kwargs=CNN_KWARGS, data="builtin:cells",
                             epochs=6, samples_per_epoch=4096, lr=2e-3, weight_decay=1e-4),
    # lr 1e-3 without clipping stayed at chance for 5 epochs on ultrasound (it worked on cells): 3e-4, 2 warm-up
    # epochs and clipping at 1.0
    "ultrasound_vit": TrainConfig(model="vit_small_patch16_224", model_kwargs=VIT_KWARGS, data="builtin:ultrasound",
                                  epochs=12, samples_per_epoch=4096, lr=3e-4, warmup_epochs=2.0, clip_grad=1.0),
    "ultrasound_cnn": TrainConfig(model="resnet10t", model_kwargs=CNN_KWARGS, data="builtin:ultrasound",
                                  epochs=6, samples_per_epoch=4096, lr=2e-3, weight_decay=1e-4),
    # fine-tuned from the cells ViT (a stand-in for supervised pretraining): from scratch at lr 1e-3 it stayed
    # at chance for 3 epochs
    "shortcut_vit": TrainConfig(model="vit_small_patch16_224", model_kwargs=VIT_KWARGS, data="builtin:shortcut",
                                epochs=4, samples_per_epoch=4096, lr=3e-4, warmup_epochs=0.5, clip_grad=1.0,
                                init_from="builtin:cells_vit"),
}


def get_recipe(name: str, **overrides) -> TrainConfig:
    if name not in RECIPES:
        raise VitlensError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise VitlensError(f"unknown training option(s) {bad}; options: {sorted(fields)}")
    return dataclasses.replace(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
