"""What a data set on disk is made of: :class:`Record` (image file, label, boxes, mask source), :class:`Dataset`,
lazily read masks (:class:`MaskSource`, :class:`FileMask`), reader :class:`Problem` reports, and the layout
registry (:data:`LAYOUTS`, :func:`register_layout`) with the class-folder layouts ``folders`` and ``pbc``.

The readers of the other published layouts are in :mod:`vitlens.data.readers`; :mod:`vitlens.data.layouts`
detects a layout and opens a data set with the reader registered for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom"}
SPLITS = ("train", "val", "test")
FILE_LAYOUTS = {"csv", "coco"}  # layouts that can be given a file (a manifest, an annotation JSON) for a directory


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a data set: ``error`` makes (part of) it unusable, ``warning`` is suspicious."""

    severity: str  # "error" | "warning"
    where: str  # a record key, a file name, "manifest.csv:12", or the class / data set concerned
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.where}: {self.message}"


class MaskSource:
    """Where the ground-truth mask of one image comes from; read lazily at the image's size."""

    def load(self, size: tuple[int, int]) -> np.ndarray:
        """``size`` = (W, H) of the image; returns bool ``[H, W]``; :class:`DataError` if unreadable."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class FileMask(MaskSource):
    """The union of one or more mask image files (BUSI has several per image).

    A pixel is foreground where the file's value is non-zero, or, with ``values``, where it is one of them
    (a label map such as Pascal VOC's ``SegmentationClass``). ``ignore`` values (VOC's 255 object border)
    count as background. JPEG masks (Kvasir-SEG ships them) are lossy, so their background is not exactly
    0: for them, and wherever ``threshold`` is given, foreground is ``value > threshold`` (default 127 for
    JPEG). A file of another size than the image is a :class:`DataError`, never resized.
    """

    paths: tuple[Path, ...]
    values: tuple[int, ...] | None = None
    ignore: tuple[int, ...] = ()
    threshold: int | None = None  # None: non-zero for lossless files, > 127 for JPEG

    def load(self, size: tuple[int, int]) -> np.ndarray:
        from PIL import Image

        out = np.zeros((size[1], size[0]), dtype=bool)
        for p in self.paths:
            if not Path(p).is_file():
                raise DataError(f"mask {p}: no such file")
            try:
                with Image.open(p) as im:
                    im.load()
                    a = np.asarray(im if im.mode in ("P", "L", "I", "I;16", "1") else im.convert("L"))
            except (OSError, ValueError, SyntaxError) as e:
                raise DataError(f"mask {p}: cannot be read ({type(e).__name__}: {e})") from e
            if a.ndim == 3:
                a = a.max(axis=-1)
            if a.shape != out.shape:
                raise DataError(f"mask {p}: {a.shape[1]}x{a.shape[0]} but its image is {size[0]}x{size[1]}")
            threshold = self.threshold
            if threshold is None and self.values is None and Path(p).suffix.lower() in (".jpg", ".jpeg"):
                threshold = 127
            if self.values is not None:
                keep = np.isin(a, self.values)
            else:
                keep = a > threshold if threshold is not None else a != 0
            if self.ignore:
                keep &= ~np.isin(a, self.ignore)
            out |= keep
        return out

    def describe(self) -> str:
        names = ", ".join(p.name for p in self.paths)
        return names + (f" (values {list(self.values)})" if self.values is not None else "")


@dataclass(frozen=True)
class Record:
    key: str  # image path relative to the dataset root (POSIX); stable id used for cache names
    image: Path  # absolute path of the image file
    label: int | None  # index into Dataset.classes; None when the layout has no label for it
    boxes: tuple[tuple[float, float, float, float], ...] = ()  # (x0, y0, x1, y1) original pixels, end-exclusive
    mask: MaskSource | None = None  # None: no annotation mask for this image
    split: str | None = None  # "train" / "val" / "test" when the layout defines one


@dataclass
class Dataset:
    root: Path
    layout: str
    classes: list[str]
    records: list[Record]
    info: dict = field(default_factory=dict)  # layout-specific notes (e.g. skipped files), shown by `data check`

    def __len__(self) -> int:
        return len(self.records)

    def has_masks(self) -> bool:
        return any(r.mask is not None for r in self.records)

    def has_boxes(self) -> bool:
        return any(r.boxes for r in self.records)

    def split(self, name: str, seed: int = 0) -> list[Record]:
        """The layout's own split when every record has one, else a seeded stratified 80/10/10 split per
        class (at least one validation and one test image per class of 3 or more images)."""
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        if self.records and all(r.split is not None for r in self.records):
            return [r for r in self.records if r.split == name]
        by_class: dict[int | None, list[Record]] = {}
        for r in self.records:
            by_class.setdefault(r.label, []).append(r)
        out: list[Record] = []
        for label in sorted(by_class, key=lambda v: -1 if v is None else v):
            items = sorted(by_class[label], key=lambda r: r.key)
            order = np.random.default_rng([seed, -1 if label is None else label]).permutation(len(items))
            n_hold = max(1, len(items) // 10) if len(items) >= 3 else 0
            parts = {"test": order[:n_hold], "val": order[n_hold : 2 * n_hold], "train": order[2 * n_hold :]}
            out += [items[i] for i in sorted(parts[name])]
        return out


# ------------------------------------------------------------------------------------------- helpers
def image_files(folder: Path) -> list[Path]:
    """Image files below ``folder`` (recursive, sorted, hidden files and folders skipped)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def rel_key(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` (POSIX). A file outside ``root`` (a manifest may point anywhere) gets
    its absolute path without the leading ``/`` (or drive), so that a key never climbs out of a cache folder."""
    path = Path(path).resolve()
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return "/".join(path.parts[1:])


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# ------------------------------------------------------------------------------------------- readers
Reader = Callable[..., Dataset]
LAYOUTS: dict[str, Reader] = {}
# detectors: (layout, predicate) tried in order; the first that matches names the layout
DETECTORS: list[tuple[str, Callable[[Path], bool]]] = []


def register_layout(name: str, detect: Callable[[Path], bool] | None = None):
    def deco(fn: Reader) -> Reader:
        LAYOUTS[name] = fn
        if detect is not None:
            DETECTORS.append((name, detect))
        return fn

    return deco


def read_folders(root: Path, layout: str = "folders") -> Dataset:
    folders = class_folders(root)
    classes = [f.name for f in folders]
    records = []
    for label, folder in enumerate(folders):
        for p in image_files(folder):
            records.append(Record(key=rel_key(root, p), image=p.resolve(), label=label))
    if not records:
        raise DataError(f"data directory {root}: no class folders with images ({', '.join(sorted(IMAGE_EXTS))})")
    return Dataset(root, layout, classes, records)


@register_layout("folders", detect=lambda root: bool(class_folders(root)))
def _folders(root: Path) -> Dataset:
    return read_folders(root, "folders")


@register_layout("pbc")
def _pbc(root: Path) -> Dataset:
    return read_folders(root, "pbc")
