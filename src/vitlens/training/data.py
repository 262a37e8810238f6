"""Training data: builtin benchmark splits (fresh samples each epoch) and data sets on disk (the layout's
split or a seeded stratified one, optional seeded augmentation), and the batches a run iterates over."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.images import to_unit_tensor
from ..errors import DataError, InputWarning
from ..models.base import Preprocessing
from .config import TrainConfig, is_builtin_data

SPLITS = ("train", "val", "test")


class Split:
    """A deterministic, indexable source of (normalised image tensor, label, meta) for one split."""

    classes: list[str]

    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
        raise NotImplementedError


class SyntheticSplit(Split):
    def __init__(self, name: str, split: str, n: int, seed: int, mean, std, start: int = 0) -> None:
        from ..data.synthetic import get_benchmark

        self.bench = get_benchmark(name)
        self.classes = list(self.bench.classes)
        self.split, self.n, self.seed, self.start = split, n, seed, start
        self.mean, self.std = mean, std
        self.pre = Preprocessing(input_size=(1, 1), mean=tuple(mean), std=tuple(std))  # only its normalise

    def __len__(self) -> int:
        return self.n

    def batch(self, indices):
        samples = [self.bench.sample(self.start + i, self.seed, self.split) for i in indices]
        x = self.pre.normalise(to_unit_tensor(np.stack([s.image for s in samples])))
        y = torch.tensor([s.label for s in samples], dtype=torch.long)
        return x, y, [s.meta for s in samples]


def random_resized_crop(
    rng: np.random.Generator,
    width: int,
    height: int,
    scale: tuple[float, float],
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

    def __init__(
        self,
        items: list[tuple[Path, int]],
        classes: list[str],
        size: int,
        mean,
        std,
        *,
        augment: tuple[tuple[float, float], float] | None = None,
        seed: int = 0,
        epoch: int = 0,
    ) -> None:
        self.items, self.classes = items, classes
        self.pre = Preprocessing(
            input_size=(size, size), mean=tuple(mean), std=tuple(std), crop_pct=1.0, interpolation="bilinear"
        )
        self.augment, self.seed, self.epoch = augment, seed, epoch

    def at_epoch(self, epoch: int) -> RecordSplit:
        return RecordSplit(
            self.items,
            self.classes,
            self.pre.input_size[0],
            self.pre.mean,
            self.pre.std,
            augment=self.augment,
            seed=self.seed,
            epoch=epoch,
        )

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int) -> torch.Tensor:
        from ..data.images import load_image, prepare

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


def hold_out(records: list, fraction: float, seed: int) -> tuple[list, list]:
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
    from ..data.layouts import open_dataset

    ds = open_dataset(cfg.data, cfg.layout)
    where = f"data set {ds.root} ({ds.layout})"
    errors = [p for p in ds.info.get("problems", []) if getattr(p, "severity", "") == "error"]
    if errors:
        warnings.warn(
            f"{where}: {len(errors)} problem(s) the reader skipped, e.g. {errors[0]}; training on the "
            f"rest (see `vitlens data check {ds.root}`)",
            InputWarning,
            stacklevel=2,
        )
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
        parts["train"], parts["val"] = hold_out(parts["train"], 0.1, cfg.seed)
        how += f"; val = 10% of its train split per class (seed {cfg.seed}), as it has none"
    for s in SPLITS:
        if not parts[s]:
            hint = (
                f"the layout assigns no labelled image to {s}"
                if own
                else "a class needs 3 or more images to give validation and test images"
            )
            raise DataError(
                f"{where}: the {s} split is empty ({how}; labelled images per class: "
                f"{dict(zip(ds.classes, counts.tolist(), strict=True))}); {hint}"
            )
    items = {s: [(r.image, int(r.label)) for r in parts[s]] for s in SPLITS}
    info = {
        "root": str(Path(ds.root).resolve()),
        "layout": ds.layout,
        "classes": list(ds.classes),
        "split": how,
        "split_sizes": {s: len(items[s]) for s in SPLITS},
        "skipped_problems": len(errors),
        "class_counts": {s: np.bincount([y for _, y in items[s]], minlength=len(ds.classes)).tolist() for s in SPLITS},
    }
    return list(ds.classes), items, info


def record_splits(cfg: TrainConfig, classes, items, epoch: int = 0) -> dict[str, Split]:
    augment = (tuple(cfg.crop_scale), float(cfg.hflip)) if cfg.augment else None
    return {
        s: RecordSplit(
            items[s],
            classes,
            cfg.image_size,
            cfg.mean,
            cfg.std,
            seed=cfg.seed,
            epoch=epoch,
            augment=augment if s == "train" else None,
        )
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
    return record_splits(cfg, classes, items, epoch or 0)


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
        _Batches(split, index_batches),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
    )
    yield from loader


class _FirstItems(Split):
    def __init__(self, split: Split, n: int) -> None:
        self.split, self.n, self.classes = split, min(n, len(split)), split.classes

    def __len__(self) -> int:
        return self.n

    def batch(self, indices):
        return self.split.batch(indices)


def first_items(split: Split, n: int) -> Split:
    """The first ``n`` items of a split."""
    return _FirstItems(split, n)
