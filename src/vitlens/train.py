"""``vitlens train``: train a timm model on a builtin benchmark, or fine-tune one on a data set on disk.

What a run writes to its output directory:
  ``checkpoint.pt``       model, optimiser, schedule (and fp16 loss-scaler) state after the last finished epoch
                          (resume point; plain tensors and numbers, readable with ``torch.load(weights_only=True)``)
  ``model.safetensors``   the weights with the best validation accuracy
  ``card.json``           the model card: architecture, classes, preprocessing, test accuracy (and, for the
                          shortcut benchmark, accuracy on marker-consistent vs marker-broken test images),
                          training config and per-epoch history; for data on disk also the data set (root,
                          layout, split and its sizes) and the pretrained weights (timm tag, file, sha256)
The directory then loads with ``vitlens.load_model(DIR)``, and a copy in ``vitlens/models/weights/NAME``
is the builtin ``builtin:NAME``. A learning-rate grid (:func:`train_grid`) trains one such run per rate in
``OUT/lr-<rate>/`` and writes the run with the best validation accuracy to ``OUT`` itself, plus
``OUT/grid.json``.

Builtin benchmarks have unlimited data: epoch ``e`` trains on samples ``e·S … (e+1)·S − 1`` of the
``train`` split (``S = samples_per_epoch``), so no sample is seen twice and no augmentation is needed;
validation and test use fixed samples of the ``val`` and ``test`` splits. Everything is seeded, and a
resumed run gives the same weights as an uninterrupted one.

Data on disk (``data`` = a directory) is read with :func:`vitlens.data.layouts.open_dataset` in any layout
(class folders, CSV, COCO, VOC, BUSI, Kvasir, ...): the layout's own train/val/test split when it has one
(a missing val split is carved from its train split, 10 % per class), else a seeded stratified 80/10/10
split per class; images that carry no class label are left out. Images go through
:func:`vitlens.data.images.load_image` (DICOM, 16-bit, grayscale handled there) and a plain resize to
``image_size``. Optional train-time augmentation (``augment=True``): a random resized crop (the sampling of
torchvision's ``RandomResizedCrop``, scale ``crop_scale``, aspect ratio 3/4..4/3) and a horizontal flip with
probability ``hflip``, drawn from a generator seeded by (seed, epoch, image index), so that augmentation is
reproducible, independent of the number of loader processes, and identical after a resume.

Fine-tuning from pretrained weights (``pretrained`` = a timm tag such as ``vit_base_patch16_224.dino``, and/or
``pretrained_file`` = a local weights file) goes through timm's own loader (``pretrained_cfg_overlay=
dict(file=PATH)``), so that timm does what it does for its own weights: unwraps the checkpoint
(``model``/``state_dict``/EMA nesting, DDP prefixes), converts foreign formats with the model's checkpoint
filter (original DINO/MAE/DeiT/Swin/JAX checkpoints), resamples the position embedding and patch
embedding to the model's image and patch size, adapts the input channels, and drops the classifier so that
the model gets a fresh head of ``num_classes`` = the data set's classes (headless DINO/MAE checkpoints
included). A tag's file comes from the user's Hugging Face hub cache (or the torch hub cache), never from
the network. After loading, every weight outside the classifier must have come from the file, else
:class:`~vitlens.errors.ModelError`.

Optimiser: AdamW. With ``layer_decay`` (0 = off) timm's ``param_groups_layer_decay`` (Bao et al. 2022,
BEiT; used by He et al. 2022, MAE) scales the learning rate of layer ``i`` by ``layer_decay ** (L + 1 - i)``
(embeddings are layer 0, block ``k`` layer ``k + 1``, the head layer ``L + 1``; deviation: timm groups the
final norm with the last block, ``L``, where MAE's reference code puts it with the head) and the schedule
multiplies every group's ``lr_scale``; for Swin timm's groups are the stages' blocks. With ``layer_decay`` or
``filter_bias_and_bn`` weight decay skips 1-d parameters (norms, biases) and the model's
``no_weight_decay()`` set (position embedding, class token), as timm does. Without either, one parameter
group with weight decay on every parameter (the builtin recipes). Mixed precision: ``amp`` = ``auto``
(bf16 where supported: CPU, Ampere+ GPUs; otherwise fp32), ``bf16``, ``fp16`` (CUDA only, with
``torch.amp.GradScaler`` whose state is checkpointed) or ``off``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError, InputWarning, ModelError, VitlensError
from .models.base import Preprocessing
from .models.loading import CARD_NAME, WEIGHTS_NAME, _create_timm

CHECKPOINT_NAME = "checkpoint.pt"
GRID_NAME = "grid.json"
SPLITS = ("train", "val", "test")


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
    # --- fine-tuning options (issue 7); the defaults reproduce the builtin recipes exactly
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


def _normalised(d: dict[str, Any]) -> Any:
    """A config dict as JSON sees it (tuples -> lists), for comparisons."""
    return json.loads(json.dumps(d, default=list))


def is_builtin_data(data: str) -> bool:
    kind, _, ref = data.partition(":")
    return kind == "builtin" and bool(ref)


# --------------------------------------------------------------------------------------------- data
class Split:
    """A deterministic, indexable source of (normalised image tensor, label, meta) for one split."""

    classes: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        raise NotImplementedError


def _normalise(images: np.ndarray, mean, std) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return (x - m) / s


class SyntheticSplit(Split):
    def __init__(self, name: str, split: str, n: int, seed: int, mean, std, start: int = 0) -> None:
        from .data.synthetic import get_benchmark

        self.bench = get_benchmark(name)
        self.classes = list(self.bench.classes)
        self.split, self.n, self.seed, self.start = split, n, seed, start
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return self.n

    def batch(self, indices):
        samples = [self.bench.sample(self.start + i, self.seed, self.split) for i in indices]
        x = _normalise(np.stack([s.image for s in samples]), self.mean, self.std)
        y = torch.tensor([s.label for s in samples], dtype=torch.long)
        return x, y, [s.meta for s in samples]


def random_resized_crop(
    rng: np.random.Generator, width: int, height: int, scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """Crop box ``(left, top, right, bottom)``: the sampling of torchvision's ``RandomResizedCrop.get_params``
    (10 tries of a random area fraction in ``scale`` and a log-uniform aspect ratio in ``ratio``, then the
    centre crop clamped to ``ratio``), drawn from ``rng`` instead of torch's global generator."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class RecordSplit(Split):
    """Images of a data set on disk: ``(path, label)`` items, read with ``load_image`` and resized to the
    model's input (``crop_pct=1``: nothing cut off); train-time augmentation when ``augment`` is given."""

    def __init__(self, items: list[tuple[Path, int]], classes: list[str], size: int, mean, std, *,
                 augment: tuple[tuple[float, float], float] | None = None, seed: int = 0, epoch: int = 0) -> None:
        self.items, self.classes = items, classes
        self.pre = Preprocessing(input_size=(size, size), mean=tuple(mean), std=tuple(std), crop_pct=1.0,
                                 interpolation="bilinear")
        self.augment, self.seed, self.epoch = augment, seed, epoch

    def at_epoch(self, epoch: int) -> RecordSplit:
        return RecordSplit(self.items, self.classes, self.pre.input_size[0], self.pre.mean, self.pre.std,
                           augment=self.augment, seed=self.seed, epoch=epoch)

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> torch.Tensor:
        from .data.images import load_image, prepare

        img = load_image(self.items[i][0])
        if self.augment is None:
            return prepare(img, self.pre).tensor
        scale, hflip = self.augment
        rng = np.random.default_rng([self.seed, self.epoch, i])
        img = img.crop(random_resized_crop(rng, img.width, img.height, scale))
        x = prepare(img, self.pre).tensor
        return x.flip(-1) if rng.random() < hflip else x

    def batch(self, indices):
        x = torch.stack([self.image(i) for i in indices])
        return x, torch.tensor([self.items[i][1] for i in indices], dtype=torch.long), [{} for _ in indices]


def _hold_out(records: list, fraction: float, seed: int) -> tuple[list, list]:
    """Split records into (rest, held out): ``fraction`` of each class (at least one of 3 or more), seeded."""
    by_class: dict[int, list] = {}
    for r in records:
        by_class.setdefault(r.label, []).append(r)
    rest, held = [], []
    for label in sorted(by_class):
        items = sorted(by_class[label], key=lambda r: r.key)
        order = np.random.default_rng([seed, label, 1]).permutation(len(items))
        n = max(1, int(len(items) * fraction)) if len(items) >= 3 else 0
        held += [items[i] for i in sorted(order[:n])]
        rest += [items[i] for i in sorted(order[n:])]
    return rest, held


def open_training_data(cfg: TrainConfig) -> tuple[list[str], dict[str, list[tuple[Path, int]]], dict[str, Any]]:
    """Class names, ``(image path, label)`` items per split, and the card's description of the data."""
    from .data.layouts import open_dataset

    ds = open_dataset(cfg.data, cfg.layout)
    where = f"data set {ds.root} ({ds.layout})"
    errors = [p for p in ds.info.get("problems", []) if getattr(p, "severity", "") == "error"]
    if errors:
        warnings.warn(f"{where}: {len(errors)} problem(s) the reader skipped, e.g. {errors[0]}; training on the "
                      f"rest (see `vitlens data check {ds.root}`)", InputWarning, stacklevel=2)
    if len(ds.classes) < 2:
        raise DataError(f"{where}: training needs at least two classes, found {ds.classes}")
    labelled = [r for r in ds.records if r.label is not None]
    if not labelled:
        raise DataError(f"{where}: no image has a class label; training needs labelled images")
    counts = np.bincount([r.label for r in labelled], minlength=len(ds.classes))
    empty = [c for c, n in zip(ds.classes, counts, strict=True) if n == 0]
    if empty:
        raise DataError(f"{where}: class(es) {empty} have no labelled images")
    own = bool(ds.records) and all(r.split is not None for r in ds.records)
    parts = {s: [r for r in ds.split(s, cfg.seed) if r.label is not None] for s in SPLITS}
    how = "the layout's split" if own else f"stratified 80/10/10 per class (seed {cfg.seed})"
    if own and not parts["val"] and parts["train"]:
        parts["train"], parts["val"] = _hold_out(parts["train"], 0.1, cfg.seed)
        how += f"; val = 10% of its train split per class (seed {cfg.seed}), as it has none"
    for s in SPLITS:
        if not parts[s]:
            hint = (f"the layout assigns no labelled image to {s}" if own else
                    "a class needs 3 or more images to give validation and test images")
            raise DataError(
                f"{where}: the {s} split is empty ({how}; labelled images per class: "
                f"{dict(zip(ds.classes, counts.tolist(), strict=True))}); {hint}"
            )
    items = {s: [(r.image, int(r.label)) for r in parts[s]] for s in SPLITS}
    info = {
        "root": str(Path(ds.root).resolve()), "layout": ds.layout, "classes": list(ds.classes), "split": how,
        "split_sizes": {s: len(items[s]) for s in SPLITS},
        "skipped_problems": len(errors),
        "class_counts": {s: np.bincount([y for _, y in items[s]], minlength=len(ds.classes)).tolist()
                         for s in SPLITS},
    }
    return list(ds.classes), items, info


def _record_splits(cfg: TrainConfig, classes, items, epoch: int = 0) -> dict[str, Split]:
    augment = (tuple(cfg.crop_scale), float(cfg.hflip)) if cfg.augment else None
    return {
        s: RecordSplit(items[s], classes, cfg.image_size, cfg.mean, cfg.std, seed=cfg.seed, epoch=epoch,
                       augment=augment if s == "train" else None)
        for s in SPLITS
    }


def make_splits(cfg: TrainConfig, epoch: int | None = None) -> dict[str, Split]:
    """Train split of ``epoch`` (fresh synthetic samples, or fresh augmentation, each epoch), and the fixed
    val/test splits."""
    if is_builtin_data(cfg.data):
        ref = cfg.data.partition(":")[2]
        start = (epoch or 0) * cfg.samples_per_epoch
        return {
            "train": SyntheticSplit(ref, "train", cfg.samples_per_epoch, cfg.seed, cfg.mean, cfg.std, start),
            "val": SyntheticSplit(ref, "val", cfg.val_size, cfg.seed, cfg.mean, cfg.std),
            "test": SyntheticSplit(ref, "test", cfg.test_size, cfg.seed, cfg.mean, cfg.std),
        }
    classes, items, _ = open_training_data(cfg)
    return _record_splits(cfg, classes, items, epoch or 0)


def batches(n: int, batch_size: int, order: np.ndarray | None = None) -> Iterator[list[int]]:
    idx = np.arange(n) if order is None else order
    for s in range(0, n, batch_size):
        yield [int(i) for i in idx[s : s + batch_size]]


class _Batches(torch.utils.data.Dataset):
    def __init__(self, split: Split, index_batches: list[list[int]]) -> None:
        self.split, self.index_batches = split, index_batches

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, i: int):
        return self.split.batch(self.index_batches[i])


def iter_batches(split: Split, index_batches: list[list[int]], workers: int = 0, pin_memory: bool = False):
    """``split.batch`` of each index list, in order; image data on disk is read by ``workers`` processes.

    The loader gets its own generator, so that it never draws from torch's global RNG (a resumed or
    multi-process run sees the same random numbers as a plain one)."""
    if workers <= 0 or not isinstance(split, RecordSplit) or len(index_batches) < 2:
        for idx in index_batches:
            yield split.batch(idx)
        return
    loader = torch.utils.data.DataLoader(
        _Batches(split, index_batches), batch_size=None, shuffle=False, num_workers=workers,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(0),
    )
    yield from loader


# ------------------------------------------------------------------------------------------- training
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast: on this project's 2-core EPYC CPU it trains the builtin ViT 2.5x faster than fp32.

    ``fp16`` is for GPUs without bf16 (V100, T4); it needs loss scaling (:func:`make_scaler`) and is
    refused off CUDA, where fp16 autocast is slow and bf16 does the job without a scaler."""
    if amp == "off":
        return None
    if amp == "fp16":
        if device.type != "cuda":
            raise VitlensError(
                f"amp=fp16 needs a CUDA device, the run is on {device}; use amp=bf16 (or auto) or off there"
            )
        return torch.float16
    if amp not in ("auto", "bf16"):
        raise VitlensError(f"amp={amp!r} is not valid; choose auto, bf16, fp16 or off")
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16


def make_scaler(amp: torch.dtype | None, device: torch.device) -> torch.amp.GradScaler | None:
    """The fp16 loss scaler (Micikevicius et al. 2018) for CUDA fp16 autocast; None otherwise."""
    if amp is torch.float16 and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    x,
    y,
    label_smoothing: float = 0.0,
    amp: torch.dtype | None = None,
    clip_grad: float = 0.0,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[float, int]:
    """One optimiser step. With a ``scaler`` the loss is scaled before backward, the gradients unscaled
    before clipping, and the step skipped when they overflowed (``GradScaler.step``)."""
    model.train()
    with torch.autocast(x.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        logits = model(x)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        opt.step()
    else:
        scaler.scale(loss).backward()
        if clip_grad > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad)
        scaler.step(opt)
        scaler.update()
    return float(loss.detach()), int((logits.detach().argmax(-1) == y).sum())


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, device, workers: int = 0) -> dict[str, Any]:
    """Accuracy and mean cross-entropy on a split; for the shortcut benchmark also the accuracy on
    marker-consistent vs marker-broken images."""
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    groups: dict[str, list[int]] = {"consistent": [0, 0], "broken": [0, 0]}
    index_batches = list(batches(len(split), batch_size))
    for x, y, meta in iter_batches(split, index_batches, workers, pin_memory=torch.device(device).type == "cuda"):
        logits = model(x.to(device)).float().cpu()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        ok = (logits.argmax(-1) == y).tolist()
        correct += sum(ok)
        total += len(ok)
        for m, hit in zip(meta, ok, strict=True):
            if "marker_consistent" in m:
                g = groups["consistent" if m["marker_consistent"] else "broken"]
                g[0] += int(hit)
                g[1] += 1
    out: dict[str, Any] = {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total), "n": total}
    if groups["consistent"][1] + groups["broken"][1] > 0:
        out["marker_consistent_accuracy"] = groups["consistent"][0] / max(1, groups["consistent"][1])
        out["marker_consistent_n"] = groups["consistent"][1]
        out["marker_broken_accuracy"] = groups["broken"][0] / max(1, groups["broken"][1])
        out["marker_broken_n"] = groups["broken"][1]
    return out


SAMPLE_CHECK_SIZE = 200


class _Head(Split):
    def __init__(self, split: Split, n: int) -> None:
        self.split, self.n, self.classes = split, min(n, len(split)), split.classes

    def __len__(self) -> int:
        return self.n

    def batch(self, indices):
        return self.split.batch(indices)


def _head(split: Split, n: int) -> Split:
    """The first ``n`` items of a split."""
    return _Head(split, n)


def init_weights(model: nn.Module, source: str) -> None:
    """Load every weight of ``source`` except the classifier head (fine-tuning from a trained model)."""
    from .models.builtin import builtin_path
    from .models.loading import load_state_dict

    if source.startswith("builtin:"):
        path = builtin_path(source.split(":", 1)[1]) / WEIGHTS_NAME
    elif Path(source).is_dir():
        path = Path(source) / WEIGHTS_NAME
    else:
        path = Path(source)
    sd = load_state_dict(path)
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_params = {id(p) for p in head.parameters()} if head is not None else set()
    head_keys = {n for n, p in model.named_parameters() if id(p) in head_params}
    own = model.state_dict()
    keep = {k: v for k, v in sd.items() if k not in head_keys and k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(keep) - head_keys)
    if missing:
        raise VitlensError(
            f"init_from={source}: weights do not fit the model ({len(missing)} missing, e.g. {missing[:3]})"
        )
    model.load_state_dict(keep, strict=False)


# ------------------------------------------------------------------------------------ pretrained weights
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _how_to_provide(tag: str) -> str:
    return (
        "vitlens never downloads weights while training. On a machine with network run "
        f"`python -c \"import timm; timm.create_model('{tag}', pretrained=True)\"` and copy its Hugging Face "
        "cache (~/.cache/huggingface/hub, or $HF_HUB_CACHE) here, or pass the weights file with "
        "--pretrained-file PATH (TrainConfig.pretrained_file; safetensors or a weights-only torch file)"
    )


def _pretrained_cfg(tag: str) -> tuple[str, Any]:
    """``(full tag, timm PretrainedCfg)`` of a tag; :class:`ModelError` naming the valid tags otherwise."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, _ = split_model_name_tag(tag)
    if not timm.is_model(arch):
        raise ModelError(f"pretrained={tag!r}: {arch!r} is not a timm architecture")
    try:
        pcfg = get_pretrained_cfg(tag)
    except RuntimeError:
        pcfg = None
    if pcfg is None:
        tags = timm.list_pretrained(f"{arch}.*")
        raise ModelError(f"pretrained={tag!r}: timm has no such weights; tags of {arch}: {tags[:12] or 'none'}")
    return (f"{arch}.{pcfg.tag}" if pcfg.tag else arch), pcfg


def resolve_pretrained(tag: str, cache_dir: str | Path | None = None) -> tuple[str, Path, str]:
    """``(full tag, weights file, where it was found)`` for a timm pretrained tag, from the local caches only.

    Looks in the Hugging Face hub cache (``cache_dir`` or ``$HF_HUB_CACHE``) for the tag's ``hf_hub_id``
    (``model.safetensors``, then ``pytorch_model.bin``, or the tag's own file name), then in the torch hub
    cache for the tag's URL. A tag without ``.name`` means timm's default weights of that architecture."""
    full, pcfg = _pretrained_cfg(tag)
    looked: list[str] = []
    if pcfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache
        from timm.models._hub import hf_split

        repo, revision = hf_split(pcfg.hf_hub_id)
        names = [pcfg.hf_hub_filename] if getattr(pcfg, "hf_hub_filename", None) else [
            "model.safetensors", "pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir, revision=revision)
            if isinstance(hit, str) and Path(hit).is_file():
                return full, Path(hit), "huggingface hub cache"
        looked.append(f"{repo} in the Hugging Face hub cache {cache_dir or constants.HF_HUB_CACHE}")
    if pcfg.url:
        from urllib.parse import urlparse

        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(pcfg.url).path).name
        if cached.is_file():
            return full, cached, "torch hub cache"
        looked.append(str(cached))
    raise ModelError(
        f"pretrained weights {full!r} are not available offline (looked for {'; '.join(looked) or 'nothing'}). "
        + _how_to_provide(full)
    )


class _TimmLoadLog(logging.Handler):
    """Collects the keys timm reports as missing when it loads pretrained weights (non-strict when the
    classifier is dropped), so that a file that does not fit the architecture is not silently ignored."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.missing: list[str] = []
        self.unexpected: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        for prefix, dest in (("Missing keys (", self.missing), ("Unexpected keys (", self.unexpected)):
            if msg.startswith(prefix) and ")" in msg:
                dest.extend(k.strip() for k in msg[len(prefix) : msg.index(")")].split(",") if k.strip())


@contextmanager
def _capture_timm_load() -> Iterator[_TimmLoadLog]:
    logger = logging.getLogger("timm.models._builder")
    handler, level = _TimmLoadLog(), logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def create_model(cfg: TrainConfig, num_classes: int, *, load_pretrained: bool = True) -> tuple[nn.Module, dict | None]:
    """The timm model of ``cfg`` with a ``num_classes`` head, and a description of its pretrained weights.

    ``pretrained`` / ``pretrained_file``: timm creates the model with ``pretrained=True`` and
    ``pretrained_cfg_overlay=dict(file=PATH, num_classes=0)`` — the file is the user's or the tag's cached
    one; ``num_classes=0`` tells timm that the file's classifier (ImageNet's, or none for DINO/MAE) never
    fits, so it always drops it and the head stays freshly initialised. ``load_pretrained=False``
    (resuming: the checkpoint holds the weights) builds the same model without reading any file.
    """
    import timm
    from timm.models import split_model_name_tag

    kwargs = dict(cfg.model_kwargs)
    if cfg.drop_path_rate:
        kwargs["drop_path_rate"] = cfg.drop_path_rate
    if not cfg.pretrained and not cfg.pretrained_file:
        return _create_timm(cfg.model, False, num_classes, kwargs), None
    check_config(cfg)
    arch = split_model_name_tag(cfg.model)[0]
    name = cfg.pretrained or arch
    if split_model_name_tag(name)[0] != arch:
        raise VitlensError(f"pretrained={cfg.pretrained!r} is not a tag of model {cfg.model!r}; "
                           f"use {arch}.<tag> (timm.list_pretrained('{arch}.*'))")
    if not timm.is_model(name):
        raise ModelError(f"unknown timm model {name!r}")
    if cfg.pretrained:
        _pretrained_cfg(cfg.pretrained)  # a valid tag, also when the weights come from pretrained_file
    if not load_pretrained:
        return _create_timm(name, False, num_classes, kwargs), None
    if cfg.pretrained_file:
        file = Path(cfg.pretrained_file)
        if not file.is_file():
            raise ModelError(f"pretrained_file {file}: no such file")
        info = {"tag": cfg.pretrained, "file": str(file.resolve()), "source": "file"}
    else:
        full, file, source = resolve_pretrained(name)
        info = {"tag": full, "file": str(file), "source": source}
        name = full
    overlay = {"file": str(file), "num_classes": 0, "custom_load": file.suffix == ".npz"}
    try:
        with _capture_timm_load() as log:
            model = timm.create_model(name, pretrained=True, num_classes=num_classes,
                                      pretrained_cfg_overlay=overlay, **kwargs)
    except TypeError as e:
        raise ModelError(f"timm model {name!r} does not accept {sorted(kwargs)}: {e}") from e
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ModelError(
            f"pretrained weights {file} do not load into timm model {name!r} with {kwargs or 'default kwargs'} "
            f"({type(e).__name__}: {first}); is it a checkpoint of this architecture?"
        ) from e
    classifier = model.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    missing = [k for k in log.missing if not any(k == c or k.startswith(c + ".") for c in classifier)]
    if missing:
        raise ModelError(
            f"pretrained weights {file} do not fit timm model {name!r}: {len(missing)} weights outside the "
            f"classifier are not in the file (e.g. {missing[:3]}); is it a checkpoint of this architecture "
            "(key names as timm's, or a format timm's checkpoint filter converts)?"
        )
    info.update(sha256=sha256_file(file), head="new", unused_keys=len(log.unexpected))
    return model, info


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; timm's parameter groups (layer decay, no decay on 1-d parameters) when asked for, else one
    group with decay on everything (the builtin recipes, unchanged)."""
    if cfg.layer_decay or cfg.filter_bias_and_bn:
        from timm.optim import create_optimizer_v2

        return create_optimizer_v2(model, "adamw", lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   layer_decay=cfg.layer_decay or None, filter_bias_and_bn=True)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled rate times each group's ``lr_scale`` (layer decay; 1 without it)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


def _save_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _write_json_atomic(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def _write_card(out: Path, cfg: TrainConfig, classes: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    from timm.models import split_model_name_tag

    from . import __version__

    card = {
        "name": out.name,
        "vitlens_version": __version__,
        "architecture": {"timm_name": split_model_name_tag(cfg.model)[0], "kwargs": cfg.model_kwargs},
        "classes": classes,
        "preprocessing": Preprocessing(
            input_size=(cfg.image_size, cfg.image_size), mean=tuple(cfg.mean), std=tuple(cfg.std),
            interpolation="bilinear", crop_pct=1.0,
        ).to_dict(),
        "data": cfg.data,
        "training": cfg.to_dict(),
        **extra,
    }
    _write_json_atomic(card, out / CARD_NAME)
    return card


def _finished(cfg: TrainConfig, state: dict[str, Any]) -> bool:
    return state["epoch"] >= cfg.epochs or bool(cfg.patience and state["stale"] >= cfg.patience)


def _load_checkpoint(path: Path, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    ckpt = torch.load(path, map_location=device, weights_only=True)
    defaults = {  # options added after the checkpoint was written count with their default value
        f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING
    }
    if _normalised({**defaults, **ckpt["config"]}) != _normalised(cfg.to_dict()):
        raise VitlensError(f"{path} was written with another training config; use a new --out or --no-resume")
    return ckpt


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = True, progress: bool = True,
          workers: int = 0) -> dict[str, Any]:
    """Train, checkpoint every epoch, stop early, evaluate the best weights on the test split; returns the card.

    ``resume``: continue from ``OUT/checkpoint.pt`` (same config required); a run that already finished
    returns its card without computing anything. ``workers``: processes that read images from disk."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    check_config(cfg)
    out = Path(out)
    builtin = is_builtin_data(cfg.data)
    if not builtin and out.resolve().is_relative_to(Path(cfg.data).resolve()):
        raise VitlensError(f"output directory {out} lies inside the data set {cfg.data}; choose one outside it")
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.amp, device)
    out.mkdir(parents=True, exist_ok=True)
    pin = device.type == "cuda"
    data_info: dict[str, Any] | None = None
    if builtin:
        splits = make_splits(cfg, 0)
        classes = splits["train"].classes
    else:
        classes, items, data_info = open_training_data(cfg)
        splits = _record_splits(cfg, classes, items, 0)

    ckpt_path, card_path = out / CHECKPOINT_NAME, out / CARD_NAME
    ckpt = None
    if resume and ckpt_path.is_file():
        ckpt = _load_checkpoint(ckpt_path, cfg, device)
        if _finished(cfg, ckpt["state"]) and card_path.is_file():
            try:
                card = json.loads(card_path.read_text())
            except ValueError:
                card = {}
            if card.get("training") == _normalised(cfg.to_dict()) and card.get("epochs_run") == ckpt["state"]["epoch"]:
                return card  # finished earlier: nothing to compute
    elif ckpt_path.exists():
        ckpt_path.unlink()

    torch.manual_seed(cfg.seed)
    model, pretrained_info = create_model(cfg, len(classes), load_pretrained=ckpt is None)
    if cfg.init_from:
        init_weights(model, cfg.init_from)
    model = model.to(device)
    opt = make_optimizer(model, cfg)
    scaler = make_scaler(amp, device)
    steps_per_epoch = math.ceil(len(splits["train"]) / cfg.batch_size)
    total_steps, warmup = cfg.epochs * steps_per_epoch, int(cfg.warmup_epochs * steps_per_epoch)
    state: dict[str, Any] = {"epoch": 0, "step": 0, "best_acc": -1.0, "best_epoch": -1, "stale": 0, "history": []}
    if pretrained_info is not None:
        state["pretrained"] = pretrained_info

    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        torch.set_rng_state(ckpt["rng"].cpu())  # map_location moved it to the device; RNG states live on the CPU
        if device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu(), device)
        if scaler is not None and "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])

    epoch = state["epoch"]
    while not _finished(cfg, {**state, "epoch": epoch}):
        train_split = make_splits(cfg, epoch)["train"] if builtin else splits["train"].at_epoch(epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(train_split))
        index_batches = list(batches(len(train_split), cfg.batch_size, order))
        bar = tqdm(
            iter_batches(train_split, index_batches, workers, pin), total=len(index_batches),
            desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False,
        )
        loss_sum, correct, seen = 0.0, 0, 0
        t_epoch = time.time()
        for x, y, _ in bar:
            set_lr(opt, lr_at(state["step"], total_steps, warmup, cfg.lr))
            loss, hits = train_step(model, opt, x.to(device), y.to(device), cfg.label_smoothing, amp, cfg.clip_grad,
                                    scaler)
            state["step"] += 1
            loss_sum += loss * len(y)
            correct += hits
            seen += len(y)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        val = evaluate(model, splits["val"], cfg.batch_size * 2, device, workers)
        epoch += 1
        rec = {"epoch": epoch, "train_loss": loss_sum / max(1, seen), "train_acc": correct / max(1, seen),
               "val_acc": val["accuracy"], "val_loss": val["loss"]}
        state["history"].append(rec)
        if val["accuracy"] > state["best_acc"]:
            state.update(best_acc=val["accuracy"], best_loss=val["loss"], best_epoch=epoch, stale=0)
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(out / WEIGHTS_NAME))
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        state["train_seconds"] = state.get("train_seconds", 0.0) + (time.time() - t_epoch)
        saved = {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                 "rng": torch.get_rng_state(), "config": cfg.to_dict()}
        if device.type == "cuda":
            saved["cuda_rng"] = torch.cuda.get_rng_state(device)
        if scaler is not None:
            saved["scaler"] = scaler.state_dict()
        _save_atomic(saved, ckpt_path)
        if progress:
            print(f"epoch {epoch}: loss {rec['train_loss']:.4f} train acc {rec['train_acc']:.3f} "
                  f"val acc {rec['val_acc']:.3f}", flush=True)

    model.load_state_dict(load_file(str(out / WEIGHTS_NAME), device=str(device)))
    test = evaluate(model, splits["test"], cfg.batch_size * 2, device, workers)
    check = evaluate(model, _head(splits["test"], SAMPLE_CHECK_SIZE), cfg.batch_size * 2, device, workers)
    extra = {
        "test_accuracy": test["accuracy"],
        "test_size": test["n"],
        # accuracy on the first SAMPLE_CHECK_SIZE test images: the figure the test suite reproduces
        "sample_check": {"split": "test", "first": check["n"], "accuracy": check["accuracy"]},
        "val_accuracy": state["best_acc"],
        "val_loss": state.get("best_loss"),  # at the best epoch
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "history": state["history"],
        "train_seconds": round(state.get("train_seconds", 0.0), 1),  # summed over resumed sessions
        "device": str(device),
    }
    extra.update({k: v for k, v in test.items() if k.startswith("marker_")})
    if data_info is not None:
        extra["dataset"] = data_info
    if state.get("pretrained") is not None:
        extra["pretrained"] = state["pretrained"]
    return _write_card(out, cfg, classes, extra)


# ------------------------------------------------------------------------------------ learning-rate grid
def lr_dir_name(lr: float) -> str:
    return f"lr-{lr:g}"


def train_grid(cfg: TrainConfig, lrs: list[float], out: str | Path, *, resume: bool = True,
               progress: bool = True, workers: int = 0) -> dict[str, Any]:
    """One run per learning rate in ``OUT/lr-<rate>/`` (each resumable; finished ones are not recomputed),
    then the run with the best validation accuracy (on a tie the lower validation loss at its best epoch,
    then the first in ``lrs`` order) is copied to
    ``OUT`` (``card.json`` + ``model.safetensors``: ``vitlens.load_model(OUT)`` loads it) and every run's
    validation and test accuracy is written to ``OUT/grid.json``. Selection never looks at test accuracy.
    Returns the winner's card (with a ``grid`` entry)."""
    from .models.loading import load_card_dir

    lrs = [float(v) for v in lrs]
    if not lrs or any(not (v > 0 and math.isfinite(v)) for v in lrs):
        raise VitlensError(f"learning-rate grid {lrs}: give one or more positive learning rates")
    if len({lr_dir_name(v) for v in lrs}) != len(lrs):
        raise VitlensError(f"learning-rate grid {lrs}: a rate is listed twice")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cards = []
    for i, lr in enumerate(lrs):
        if progress:
            print(f"learning rate {lr:g} ({i + 1}/{len(lrs)})", flush=True)
        cards.append(train(dataclasses.replace(cfg, lr=lr), out / lr_dir_name(lr), resume=resume,
                           progress=progress, workers=workers))
    def rank(i: int) -> tuple[float, float, int]:
        loss = cards[i].get("val_loss")
        return cards[i]["val_accuracy"], -(math.inf if loss is None else loss), -i

    best = max(range(len(lrs)), key=rank)
    runs = [{"lr": lr, "dir": lr_dir_name(lr), "val_accuracy": c["val_accuracy"], "val_loss": c.get("val_loss"),
             "test_accuracy": c["test_accuracy"], "best_epoch": c["best_epoch"], "epochs_run": c["epochs_run"]}
            for lr, c in zip(lrs, cards, strict=True)]
    grid = {"metric": "val_accuracy", "selected_lr": lrs[best], "selected_dir": lr_dir_name(lrs[best]), "runs": runs}
    src = out / lr_dir_name(lrs[best])
    tmp = out / (WEIGHTS_NAME + ".tmp")
    shutil.copyfile(src / WEIGHTS_NAME, tmp)
    os.replace(tmp, out / WEIGHTS_NAME)
    card = {**cards[best], "name": out.name, "grid": grid}
    _write_json_atomic(grid, out / GRID_NAME)
    _write_json_atomic(card, out / CARD_NAME)
    load_card_dir(out, name=out.name)  # the directory must load as a model
    return card
