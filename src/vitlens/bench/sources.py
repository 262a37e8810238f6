"""Where a study's images come from: a builtin benchmark, or a data set on disk in any layout vitlens reads.

Both give a :class:`ModelBatch` on the model's input grid: the normalised input, the displayed crop, every
available ground-truth mask kind and the box, all put through the geometry the image went through, so that
a metric compares the map with the annotation of exactly the pixels the model saw.

Mask kinds of a data set on disk:

``evidence``    the layout's annotation mask (the union of the boxes when the layout has only boxes)
``box``         the union of the annotated boxes (arXiv:2503.09535 scores against expert boxes)
``foreground``  the cached Mask R-CNN masks of ``vitlens masks DIR`` (the FAF/BAF metric of Das & Huddar 2025)

A record without an annotation gets an empty mask of that kind, which every mask metric scores as NaN with a
warning (counted in the report), never as a miss.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.images import to_unit_tensor
from ..data.synthetic import get_benchmark
from ..errors import DataError
from ..models import Model


@dataclass
class ModelBatch:
    image_ids: list[int]
    keys: list[str]  # stable image names for tables
    x: torch.Tensor  # [B, C, H, W] normalised model input
    display: np.ndarray  # uint8 [B, H, W, 3], what the model sees, for overlays
    labels: np.ndarray  # int64 [B]; -1 where the image has no label
    masks: dict[str, torch.Tensor]  # kind -> bool [B, H, W] on the model input grid
    boxes: torch.Tensor  # int64 [B, 4] enclosing box of the annotated boxes; (-1,-1,-1,-1) where none


@dataclass
class Batch:
    image_ids: list[int]
    images: np.ndarray  # uint8 [B, H, W, 3]
    labels: np.ndarray  # int64 [B]
    masks: dict[str, np.ndarray]  # "evidence" and extra masks -> bool [B, H, W]
    boxes: np.ndarray  # int64 [B, 4]; -1 where the mask is empty


def load_batch(dataset, ids: list[int], seed: int) -> Batch:
    """Images, labels, masks and boxes of builtin-benchmark samples ``ids`` at the benchmark's own size."""
    bench = get_benchmark(dataset.builtin)
    samples = [bench.sample(i, seed, dataset.split) for i in ids]
    masks = {"evidence": np.stack([s.mask for s in samples])}
    for key in bench.extra_mask_keys:
        masks[key] = np.stack([s.extra_masks[key] for s in samples])
    boxes = np.array([s.bbox if s.bbox is not None else (-1, -1, -1, -1) for s in samples], dtype=np.int64)
    return Batch(ids, np.stack([s.image for s in samples]), np.array([s.label for s in samples]), masks, boxes)


def to_model_input(model: Model, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Normalise for the model; resize images (bilinear) and masks (nearest) if its input size differs."""
    pre = model.preprocessing
    x = to_unit_tensor(batch.images)
    masks = {k: torch.from_numpy(v) for k, v in batch.masks.items()}
    if tuple(x.shape[-2:]) != tuple(pre.input_size):
        x = F.interpolate(x, size=pre.input_size, mode="bilinear", align_corners=False)
        masks = {
            k: F.interpolate(v[:, None].float(), size=pre.input_size, mode="nearest")[:, 0] > 0.5
            for k, v in masks.items()
        }
    return pre.normalise(x), masks


class BuiltinSource:
    def __init__(self, spec) -> None:
        self.spec = spec
        self.bench = get_benchmark(spec.builtin)
        self.classes = list(self.bench.classes)
        self.mask_kinds = ["evidence", *self.bench.extra_mask_keys]

    def ids(self) -> list[int]:
        return list(range(self.spec.start, self.spec.start + (self.spec.n or 64)))

    def fingerprint(self) -> str:
        return f"builtin:{self.spec.builtin}:{self.spec.split}"

    def batch(self, ids: list[int], seed: int, model: Model) -> ModelBatch:
        b = load_batch(self.spec, ids, seed)
        x, masks = to_model_input(model, b)
        display = b.images
        if tuple(display.shape[1:3]) != tuple(x.shape[-2:]):
            t = torch.from_numpy(display).permute(0, 3, 1, 2).float()
            t = torch.nn.functional.interpolate(t, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
            display = t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        boxes = torch.from_numpy(b.boxes)
        if tuple(b.images.shape[1:3]) != tuple(x.shape[-2:]):  # boxes follow the resize
            sy, sx = x.shape[-2] / b.images.shape[1], x.shape[-1] / b.images.shape[2]
            scaled = (boxes.double() * torch.tensor([sx, sy, sx, sy])).round().long()
            boxes = torch.where(boxes < 0, boxes, scaled)
        keys = [f"{self.spec.builtin}/{self.spec.split}/{i}" for i in ids]
        return ModelBatch(ids, keys, x, display, b.labels.astype(np.int64), masks, boxes)


class DiskSource:
    """A data set directory: the records of ``split`` (``all`` = every record), optionally only of some
    classes, sorted by key, then ``start`` .. ``start + n``."""

    def __init__(self, spec) -> None:
        from ..data.layouts import open_dataset

        self.spec = spec
        self.dataset = open_dataset(spec.path, spec.layout)
        ds = self.dataset
        records = ds.records if spec.split == "all" else ds.split(spec.split, seed=spec.split_seed)
        if spec.classes:
            unknown = sorted(set(spec.classes) - set(ds.classes))
            if unknown:
                raise DataError(f"dataset {spec.name!r}: no class {unknown}; classes: {ds.classes}")
            wanted = {ds.classes.index(c) for c in spec.classes}
            records = [r for r in records if r.label in wanted]
        records = sorted(records, key=lambda r: r.key)
        stop = None if spec.n is None else spec.start + spec.n
        self.records = records[spec.start : stop]
        if not self.records:
            raise DataError(
                f"dataset {spec.name!r}: no images in split {spec.split!r} of {spec.path} "
                f"({ds.layout}; `vitlens data check {spec.path}` shows its splits; "
                "`split: all` takes every image)"
            )
        self.classes = list(ds.classes)
        self.foreground_dir = self._foreground_dir()
        kinds = []
        if ds.has_masks() or ds.has_boxes():
            kinds.append("evidence")
        if ds.has_boxes():
            kinds.append("box")
        if self.foreground_dir is not None:
            kinds.append("foreground")
        self.mask_kinds = kinds

    def _foreground_dir(self) -> Path | None:
        fg = self.spec.foreground_masks
        if fg in (None, "none"):
            return None
        from ..data.foreground import default_mask_dir

        path = default_mask_dir(self.dataset.root) if fg == "auto" else Path(fg)
        if fg != "auto" and not path.is_dir():
            raise DataError(
                f"dataset {self.spec.name!r}: foreground mask directory {path} does not exist; "
                f"write it with `vitlens masks {self.spec.path} --weights PATH --out {path}`"
            )
        return path if path.is_dir() else None

    def ids(self) -> list[int]:
        return list(range(len(self.records)))

    def fingerprint(self) -> str:
        """Changes when the selected images change on disk (added, removed, renamed)."""
        h = hashlib.sha1(json.dumps([r.key for r in self.records]).encode()).hexdigest()[:16]
        return f"{self.dataset.layout}:{len(self.records)}:{h}"

    def batch(self, ids: list[int], seed: int, model: Model) -> ModelBatch:
        from ..data.geometry import transform_boxes, transform_mask
        from ..data.images import load_image, prepare

        xs, displays, labels, boxes, keys = [], [], [], [], []
        masks: dict[str, list[np.ndarray]] = {k: [] for k in self.mask_kinds}
        for i in ids:
            rec = self.records[i]
            prep = prepare(load_image(rec.image), model.preprocessing)
            xs.append(prep.tensor)
            displays.append(prep.display)
            labels.append(-1 if rec.label is None else rec.label)
            keys.append(rec.key)
            size = prep.original_size
            box_mask = _boxes_mask(rec.boxes, size)
            if "evidence" in masks:
                m = rec.mask.load(size) if rec.mask is not None else box_mask
                masks["evidence"].append(transform_mask(m, prep))
            if "box" in masks:
                masks["box"].append(transform_mask(box_mask, prep))
            if "foreground" in masks:
                from ..data.foreground import load_foreground

                fg = load_foreground(self.foreground_dir, rec.key)
                if fg is None:
                    raise DataError(
                        f"no cached foreground mask for {rec.key} in {self.foreground_dir}; "
                        f"run `vitlens masks {self.spec.path} --weights PATH` again to complete it"
                    )
                masks["foreground"].append(transform_mask(fg, prep))
            tb = transform_boxes(np.asarray(rec.boxes, dtype=np.float64).reshape(-1, 4), prep)
            tb = tb[(tb >= 0).all(axis=1)]
            if len(tb):
                boxes.append([tb[:, 0].min(), tb[:, 1].min(), tb[:, 2].max(), tb[:, 3].max()])
            else:
                boxes.append([-1, -1, -1, -1])
        return ModelBatch(
            list(ids),
            keys,
            torch.stack(xs),
            np.stack(displays),
            np.array(labels, dtype=np.int64),
            {k: torch.from_numpy(np.stack(v)) for k, v in masks.items()},
            torch.tensor(np.array(boxes, dtype=np.int64).reshape(-1, 4)),
        )


def _boxes_mask(boxes, size: tuple[int, int]) -> np.ndarray:
    """The union of float boxes (end-exclusive) on a ``size`` = (W, H) image: a pixel is inside when its centre
    is, the convention of :func:`vitlens.data.geometry.transform_boxes`."""
    from ..metrics.base import box_masks

    w, h = size
    if not len(boxes):
        return np.zeros((h, w), dtype=bool)
    pixel = torch.from_numpy(np.ceil(np.asarray(boxes, dtype=np.float64) - 0.5).astype(np.int64))
    return box_masks(pixel, (h, w)).any(dim=0).numpy()


def make_source(spec):
    return BuiltinSource(spec) if spec.builtin else DiskSource(spec)
