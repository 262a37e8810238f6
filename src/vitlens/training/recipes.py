"""Training recipes of the builtin checkpoints (``vitlens train --recipe NAME --out DIR``) and fine-tuning
presets for data sets on disk (``vitlens train --preset NAME --data DIR --out DIR``).

Each recipe is a complete :class:`~vitlens.train.TrainConfig`; the builtin ``builtin:NAME`` is the output
of ``vitlens train --recipe NAME --out src/vitlens/models/weights/NAME`` (checkpoint files are not shipped).
ViTs: CLS token, patch 8 at 112 px (a 14x14 grid, the 196 tokens of ViT-B/16 at 224), width 192, 6 blocks,
3 heads. CNNs: timm ``resnet10t`` with ``output_stride=16`` so that its last stage, the Grad-CAM layer, has
the same 7x7 resolution as a ViT-B/16 and a finer one than the usual 4x4 at 112 px.

Presets (:data:`PRESETS`) are the models of arXiv:2503.09535's comparison (ViT-B/16 from random, supervised, DINO and
MAE initialisation, fine-tuned on medical data with grid-searched learning rates) plus DeiT and Swin: each a
:class:`~vitlens.train.TrainConfig` at 224 px with the timm pretrained tag (weights from the user's hub cache
or ``--pretrained-file``) and fine-tuning hyper-parameters from the papers named in the comments, scaled to
batch 32 with the linear rule (lr ∝ batch size; Goyal et al. 2017) that DeiT, Swin and MAE state. arXiv:2503.09535
grid-searched the learning rate: run a preset with ``--lr-grid 1e-5,3e-5,1e-4`` (:data:`DEFAULT_LR_GRID`).
"""

from __future__ import annotations

import dataclasses

from ..errors import VitlensError
from .config import TrainConfig

VIT_KWARGS = {"img_size": 112, "patch_size": 8, "embed_dim": 192, "depth": 6, "num_heads": 3}
CNN_KWARGS = {"output_stride": 16}

RECIPES: dict[str, TrainConfig] = {
    "cells_vit": TrainConfig(
        model="vit_small_patch16_224",
        model_kwargs=VIT_KWARGS,
        data="builtin:cells",
        epochs=12,
        samples_per_epoch=4096,
        lr=1e-3,
    ),
    "cells_cnn": TrainConfig(
        model="resnet10t",
        model_kwargs=CNN_KWARGS,
        data="builtin:cells",
        epochs=6,
        samples_per_epoch=4096,
        lr=2e-3,
        weight_decay=1e-4,
    ),
    # lr 1e-3 without clipping stayed at chance for 5 epochs on ultrasound (it worked on cells): 3e-4, 2 warm-up
    # epochs and clipping at 1.0
    "ultrasound_vit": TrainConfig(
        model="vit_small_patch16_224",
        model_kwargs=VIT_KWARGS,
        data="builtin:ultrasound",
        epochs=12,
        samples_per_epoch=4096,
        lr=3e-4,
        warmup_epochs=2.0,
        clip_grad=1.0,
    ),
    "ultrasound_cnn": TrainConfig(
        model="resnet10t",
        model_kwargs=CNN_KWARGS,
        data="builtin:ultrasound",
        epochs=6,
        samples_per_epoch=4096,
        lr=2e-3,
        weight_decay=1e-4,
    ),
    # fine-tuned from the cells ViT (a stand-in for supervised pretraining): from scratch at lr 1e-3 it stayed
    # at chance for 3 epochs
    "shortcut_vit": TrainConfig(
        model="vit_small_patch16_224",
        model_kwargs=VIT_KWARGS,
        data="builtin:shortcut",
        epochs=4,
        samples_per_epoch=4096,
        lr=3e-4,
        warmup_epochs=0.5,
        clip_grad=1.0,
        init_from="builtin:cells_vit",
    ),
}


# ------------------------------------------------------------------------------ fine-tuning presets
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INCEPTION_MEAN = INCEPTION_STD = (0.5, 0.5, 0.5)  # Google's ViT weights (augreg) normalise to [-1, 1]
DEFAULT_LR_GRID = (1e-5, 3e-5, 1e-4)

# Shared by every preset from pretrained weights:
# - AdamW, weight decay 0.05, cosine schedule with linear warm-up, label smoothing 0.1: the recipes of DeiT
#   (Touvron et al. 2021, Table 9) and MAE fine-tuning (He et al. 2022, Table 9); Swin (Liu et al. 2021,
#   App. A2.1) uses the same optimiser, decay and schedule. No weight decay on norms, biases, position
#   embedding and class token (as timm, BEiT and MAE do).
# - batch 32 (ViT-B/16 at 224 px fits a 16 GB GPU with bf16/fp16); 30 epochs, 3 of warm-up (Swin's 30-epoch
#   fine-tuning; small medical data sets converge in tens of epochs), early stop after 10 without a better
#   validation accuracy.
# - augmentation: random resized crop with timm's / torchvision's default scale (0.08, 1) and ratio (3/4, 4/3),
#   horizontal flip p=0.5 (the geometric part of the DeiT/MAE recipes; RandAugment, mixup, cutmix and random
#   erasing are left out). Turn it off with --no-augment (e.g. when left/right carries meaning).
# - drop path (stochastic depth) 0.1: DeiT-B and MAE ViT-B fine-tuning.
# - amp auto: bf16 on Ampere+ GPUs (and CPU); pass --amp fp16 on V100/T4.
_FINETUNE = dict(
    image_size=224,
    batch_size=32,
    epochs=30,
    warmup_epochs=3.0,
    patience=10,
    weight_decay=0.05,
    label_smoothing=0.1,
    filter_bias_and_bn=True,
    drop_path_rate=0.1,
    augment=True,
    crop_scale=(0.08, 1.0),
    hflip=0.5,
    amp="auto",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
)
# Learning rates, by the linear rule at batch 32:
SUPERVISED_LR = 3e-5  # DeiT: 5e-4 x batch/512 = 3.1e-5 (Swin: 1e-3 x batch/1024, the same)
SSL_LR = 6.25e-5  # MAE fine-tuning: base lr 5e-4 x batch/256, with layer decay
SSL_LAYER_DECAY = 0.65  # MAE's (and BEiT's) ViT-B value; applied to both self-supervised inits

PRESETS: dict[str, TrainConfig] = {
    # ViT-B/16 from random initialisation: no fine-tuning recipe exists; DeiT's from-scratch optimiser with a
    # larger lr (the top of the grid), 100 epochs, 10 warm-up, patience 20.
    "vit_b16_random": TrainConfig(
        model="vit_base_patch16_224",
        data="",
        **{**_FINETUNE, "lr": 1e-4, "epochs": 100, "warmup_epochs": 10.0, "patience": 20},
    ),
    # supervised ImageNet-21k pretraining, ImageNet-1k fine-tuned (Steiner et al. 2022, "augreg2"; timm's default
    # ViT-B/16 weights); they expect inputs normalised with mean = std = 0.5
    "vit_b16_supervised": TrainConfig(
        model="vit_base_patch16_224",
        data="",
        **{
            **_FINETUNE,
            "pretrained": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
            "lr": SUPERVISED_LR,
            "mean": INCEPTION_MEAN,
            "std": INCEPTION_STD,
        },
    ),
    # DINO (Caron et al. 2021), headless backbone: a new head, layer decay as for MAE
    "vit_b16_dino": TrainConfig(
        model="vit_base_patch16_224",
        data="",
        **{**_FINETUNE, "pretrained": "vit_base_patch16_224.dino", "lr": SSL_LR, "layer_decay": SSL_LAYER_DECAY},
    ),
    # MAE (He et al. 2022), headless encoder. MAE fine-tunes with global average pooling; vitlens keeps the class
    # token (timm's default for this tag), whose attention arXiv:2503.09535 and the attention explainers read.
    "vit_b16_mae": TrainConfig(
        model="vit_base_patch16_224",
        data="",
        **{**_FINETUNE, "pretrained": "vit_base_patch16_224.mae", "lr": SSL_LR, "layer_decay": SSL_LAYER_DECAY},
    ),
    # DeiT-B and DeiT-S (Touvron et al. 2021), ImageNet-1k supervised, without distillation token
    "deit_b16": TrainConfig(
        model="deit_base_patch16_224",
        data="",
        **{**_FINETUNE, "pretrained": "deit_base_patch16_224.fb_in1k", "lr": SUPERVISED_LR},
    ),
    "deit_s16": TrainConfig(
        model="deit_small_patch16_224",
        data="",
        **{**_FINETUNE, "pretrained": "deit_small_patch16_224.fb_in1k", "lr": SUPERVISED_LR},
    ),
    # Swin-T (ImageNet-1k) and Swin-B (ImageNet-22k, 1k fine-tuned) (Liu et al. 2021): drop path 0.2 (Swin-T's
    # value) and gradient clipping at 5 (their recipe)
    "swin_t": TrainConfig(
        model="swin_tiny_patch4_window7_224",
        data="",
        **{
            **_FINETUNE,
            "pretrained": "swin_tiny_patch4_window7_224.ms_in1k",
            "lr": SUPERVISED_LR,
            "drop_path_rate": 0.2,
            "clip_grad": 5.0,
        },
    ),
    "swin_b": TrainConfig(
        model="swin_base_patch4_window7_224",
        data="",
        **{
            **_FINETUNE,
            "pretrained": "swin_base_patch4_window7_224.ms_in22k_ft_in1k",
            "lr": SUPERVISED_LR,
            "drop_path_rate": 0.2,
            "clip_grad": 5.0,
        },
    ),
}


def _apply(kind: str, table: dict[str, TrainConfig], name: str, overrides: dict) -> TrainConfig:
    if name not in table:
        raise VitlensError(f"unknown {kind} {name!r}; available: {', '.join(sorted(table))}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise VitlensError(f"unknown training option(s) {bad}; options: {sorted(fields)}")
    return dataclasses.replace(table[name], **{k: v for k, v in overrides.items() if v is not None})


def get_recipe(name: str, **overrides) -> TrainConfig:
    """A builtin model's recipe; ``model_kwargs`` are merged into the recipe's (``depth=1`` keeps its
    ``img_size`` and ``patch_size``), other options given (not None) replace the recipe's."""
    if name in RECIPES and overrides.get("model_kwargs") is not None:
        overrides = {**overrides, "model_kwargs": {**RECIPES[name].model_kwargs, **overrides["model_kwargs"]}}
    return _apply("recipe", RECIPES, name, overrides)


def get_preset(name: str, **overrides) -> TrainConfig:
    """A fine-tuning preset; ``data`` (a data set directory) is required, ``model_kwargs`` are merged into the
    preset's (e.g. a smaller model for a quick check), other options (not None) replace the preset's."""
    if not overrides.get("data"):
        raise VitlensError(f"preset {name!r} needs data: a data set directory (vitlens train --data DIR)")
    if name in PRESETS and overrides.get("model_kwargs") is not None:
        overrides = {**overrides, "model_kwargs": {**PRESETS[name].model_kwargs, **overrides["model_kwargs"]}}
    return _apply("preset", PRESETS, name, overrides)
