"""Data sets on disk, read in their published layout without conversion.

A layout reader turns a directory into a :class:`Dataset`: a list of :class:`Record` (image file, label,
boxes, mask source) and the class names. Masks are read lazily (:class:`MaskSource`), at the image's
original size, so that a study can apply to them exactly the resize and crop its model applies to the
image (:func:`vitlens.data.geometry.transform_mask`).

Layouts (``open_dataset(DIR, layout="auto")`` picks one with :func:`detect_layout`):

``folders``  ``DIR/<class>/<image>`` (any depth below the class folder); no masks.
``pbc``      the same, the name of the peripheral-blood-cell data set (Acevedo et al. 2020) and others
             published as class folders without masks.

Every reader registers itself in :data:`~vitlens.data.records.LAYOUTS`; the record types and the two layouts
above live in :mod:`vitlens.data.records`, more layouts (``csv``, ``coco``, ``voc``, ``busi``, ``kvasir``) in
:mod:`vitlens.data.readers`. This module imports both, so that every layout is registered before a data set
is opened, and re-exports the record types.

Readers are lenient: a bad row, annotation or file becomes a :class:`Problem` in
``Dataset.info["problems"]`` instead of stopping at the first one, so that ``vitlens data check`` can list
them all in one pass. :func:`open_dataset` then raises a :class:`DataError` when any of them is an error
(``strict=False``, as ``data check`` uses, returns the data set with its problems).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from ..errors import DataError
from . import readers  # noqa: F401  (importing it registers the csv, coco, voc, busi and kvasir layouts)
from .records import (
    DETECTORS,
    FILE_LAYOUTS,
    IMAGE_EXTS,
    LAYOUTS,
    SPLITS,
    Dataset,
    FileMask,
    MaskSource,
    Problem,
    Record,
    class_folders,
    image_files,
    read_folders,
    register_layout,
    rel_key,
)

__all__ = [
    "DETECTORS",
    "FILE_LAYOUTS",
    "IMAGE_EXTS",
    "LAYOUTS",
    "SPLITS",
    "Dataset",
    "FileMask",
    "MaskSource",
    "Problem",
    "Record",
    "class_folders",
    "detect_layout",
    "image_files",
    "open_dataset",
    "read_folders",
    "register_layout",
    "rel_key",
]


def detect_layout(path: str | Path) -> str:
    """The first layout whose detector matches ``path`` (specific layouts are tried before ``folders``).

    ``path`` is a directory, or a file for the layouts that take one (a CSV manifest, a COCO JSON)."""
    root = Path(path)
    if root.is_file():
        for name, detect in DETECTORS:
            if name != "folders" and detect(root):
                return name
        raise DataError(f"data file {root}: neither a CSV manifest nor a COCO annotation file; pass a directory")
    if not root.is_dir():
        raise DataError(f"data directory {root}: no such directory")
    for name, detect in sorted(DETECTORS, key=lambda d: d[0] == "folders"):
        if detect(root):
            return name
    raise DataError(f"data directory {root}: layout not recognised; pass layout= one of {', '.join(sorted(LAYOUTS))}")


def open_dataset(path: str | Path, layout: str = "auto", *, strict: bool = True, **options) -> Dataset:
    """Read a data set directory (or a manifest / annotation file, for layouts that take one).

    ``options`` go to the layout's reader (see :mod:`vitlens.data.readers`). With ``strict`` (the default)
    a reader problem of severity ``error`` (an unknown label, an annotation of no image, two records with
    one key, ...) raises a :class:`DataError` naming the first and pointing to ``vitlens data check``;
    ``strict=False`` returns the data set with its problems in ``info["problems"]``."""
    root = Path(path)
    if not root.exists():
        raise DataError(f"data set {root}: no such file or directory")
    if layout == "auto":
        layout = detect_layout(root)
    if layout not in LAYOUTS:
        raise DataError(f"unknown data layout {layout!r}; available: {', '.join(sorted(LAYOUTS))}")
    if root.is_file() and layout not in FILE_LAYOUTS:
        raise DataError(
            f"data set {root}: a file, but layout {layout!r} reads a directory "
            f"(a file can be read by: {', '.join(sorted(FILE_LAYOUTS))})"
        )
    reader = LAYOUTS[layout]
    try:
        inspect.signature(reader).bind(root, **options)
    except TypeError:
        params = [n for n in list(inspect.signature(reader).parameters)[1:]]
        raise DataError(
            f"data layout {layout!r}: unknown option(s) {sorted(options)}; it takes {params or 'none'}"
        ) from None
    ds = reader(root, **options)
    if not ds.records:
        raise DataError(f"data set {root} ({layout}): no images found")
    problems = ds.info.setdefault("problems", [])
    seen: dict[str, int] = {}
    for r in ds.records:
        seen[r.key] = seen.get(r.key, 0) + 1
    for key, n in seen.items():
        if n > 1:
            problems.append(Problem("error", key, f"{n} records have this key (the same image listed {n} times)"))
    errors = [p for p in problems if p.severity == "error"]
    if strict and errors:
        raise DataError(
            f"data set {root} ({layout}): {len(errors)} error(s), the first: {errors[0]}; "
            f"`vitlens data check {root}` lists them all"
        )
    return ds
