"""Write a synthetic benchmark to disk as PNG images, PNG masks and a CSV manifest.

Layout under ``out_dir`` (``<stem>`` is ``<name>_<split>_<i:05d>``)::

    images/<stem>.png          RGB image
    masks/<stem>.png           evidence mask, 8-bit 0/255
    masks_<key>/<stem>.png     each extra mask (e.g. masks_marker/ for 'shortcut')
    manifest.csv               path,label,class_name,mask_path,x0,y0,x1,y1[,<key>_mask_path...][,meta...]
    classes.txt                every class name, one per line, in label order (the CSV reader uses it, so that
                               a subset in which some class is absent keeps the model's label indices)

Paths in the manifest are relative to ``out_dir``; the bounding box columns are empty when the mask is
empty (e.g. ultrasound 'normal').
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from vitlens.data.synthetic import Sample, get_benchmark
from vitlens.errors import DataError

__all__ = ["MANIFEST_NAME", "export_dataset"]

MANIFEST_NAME = "manifest.csv"
_BASE_COLUMNS = ("path", "label", "class_name", "mask_path", "x0", "y0", "x1", "y1")


def _save_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path)


def _meta_column(key: str, taken: set[str]) -> str:
    return f"meta_{key}" if key in taken else key


def _row(sample: Sample, class_name: str, paths: dict[str, str]) -> dict[str, object]:
    bbox = sample.bbox if sample.bbox is not None else ("", "", "", "")
    row: dict[str, object] = {
        "path": paths["image"],
        "label": sample.label,
        "class_name": class_name,
        "mask_path": paths["mask"],
        **dict(zip(("x0", "y0", "x1", "y1"), bbox, strict=True)),
    }
    for key in sample.extra_masks:
        row[f"{key}_mask_path"] = paths[f"mask_{key}"]
    return row


def export_dataset(name: str, n: int, out_dir: str | Path, seed: int = 0, split: str = "test") -> Path:
    """Render samples ``0 .. n-1`` of benchmark ``name`` into ``out_dir``; returns the manifest path."""
    bench = get_benchmark(name)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")
    out = Path(out_dir)
    folders = {
        "image": "images",
        "mask": "masks",
        **{f"mask_{k}": f"masks_{k}" for k in bench.extra_mask_keys},
    }
    try:
        for folder in folders.values():
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create output folder {out}: {exc}") from None

    rows: list[dict[str, object]] = []
    columns = list(_BASE_COLUMNS) + [f"{k}_mask_path" for k in bench.extra_mask_keys]
    for i in range(int(n)):
        sample = bench.sample(i, seed, split)
        stem = f"{name}_{split}_{i:05d}.png"
        paths = {key: f"{folder}/{stem}" for key, folder in folders.items()}
        Image.fromarray(sample.image).save(out / paths["image"])
        _save_mask(sample.mask, out / paths["mask"])
        for key, mask in sample.extra_masks.items():
            _save_mask(mask, out / paths[f"mask_{key}"])
        row = _row(sample, bench.classes[sample.label], paths)
        for key, value in sample.meta.items():
            column = _meta_column(key, set(_BASE_COLUMNS))
            if column not in columns:
                columns.append(column)
            row[column] = value
        rows.append(row)

    (out / "classes.txt").write_text("\n".join(bench.classes) + "\n")
    manifest = out / MANIFEST_NAME
    with manifest.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return manifest
