"""The training configuration (:class:`TrainConfig`) and its checks."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ..errors import VitlensError


@dataclass
class TrainConfig:
    model: str  # timm model name (architecture, without a pretrained tag)
    data: str  # "builtin:<benchmark>" or a data set directory (any layout open_dataset reads)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 30
    samples_per_epoch: int = 4096  # builtin benchmarks only
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    clip_grad: float = 0.0  # max global gradient norm; 0 = no clipping
    init_from: str | None = None  # start from these weights (builtin:NAME, a train dir or a weights file), new head
    patience: int = 6  # early stop after this many epochs without a better validation accuracy; 0 = off
    val_size: int = 500
    test_size: int = 1000
    image_size: int = 112
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # autocast: "auto" (bf16 where supported: CPU, Ampere+ GPUs) | "bf16" | "fp16" (CUDA) | "off"
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    # --- fine-tuning options; the defaults reproduce the builtin recipes exactly
    layout: str = "auto"  # data layout of a directory (open_dataset); ignored for builtin data
    pretrained: str | None = None  # timm pretrained tag, e.g. "vit_base_patch16_224.dino" (user's hub cache)
    pretrained_file: str | None = None  # local weights file loaded through timm (with the tag's config if given)
    layer_decay: float = 0.0  # layer-wise lr decay factor (timm param_groups_layer_decay); 0 = off
    filter_bias_and_bn: bool = False  # no weight decay on norms, biases, pos-embed, tokens (implied by layer_decay)
    drop_path_rate: float = 0.0  # stochastic depth during training (timm drop_path_rate); 0 = off
    augment: bool = False  # random resized crop + horizontal flip on the train split (data on disk only)
    crop_scale: tuple[float, float] = (0.08, 1.0)  # area fraction range of the random resized crop
    hflip: float = 0.5  # probability of a horizontal flip when augment is on

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["mean"], d["std"], d["crop_scale"] = list(self.mean), list(self.std), list(self.crop_scale)
        return d


def check_config(cfg: TrainConfig) -> None:
    """Refuse fine-tuning options out of range, naming the option and what is valid."""
    lo, hi = (float(v) for v in cfg.crop_scale)
    if not 0 < lo <= hi <= 1:
        raise VitlensError(f"crop_scale={tuple(cfg.crop_scale)}: give (min, max) area fractions, 0 < min <= max <= 1")
    if not 0 <= cfg.hflip <= 1:
        raise VitlensError(f"hflip={cfg.hflip}: a probability in [0, 1]")
    if not 0 <= cfg.layer_decay <= 1:
        raise VitlensError(f"layer_decay={cfg.layer_decay}: a factor in (0, 1], or 0 for none")
    if cfg.init_from and (cfg.pretrained or cfg.pretrained_file):
        raise VitlensError("init_from and pretrained / pretrained_file exclude each other; give one of them")


def as_json(d: dict[str, Any]) -> Any:
    """A config dict as JSON sees it (tuples -> lists), for comparisons."""
    return json.loads(json.dumps(d, default=list))


def is_builtin_data(data: str) -> bool:
    kind, _, ref = data.partition(":")
    return kind == "builtin" and bool(ref)
