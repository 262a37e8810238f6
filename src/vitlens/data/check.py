"""``vitlens data check DIR``: every problem of a data set, found in one pass.

The layout's reader is run leniently (``open_dataset(..., strict=False)``): its problems (unknown labels,
annotations of missing images, duplicate keys, ...) come first. Then every image is decoded with
:func:`vitlens.data.images.load_image` (what a study would do), every mask is read at its image's size and
every box is compared with the image. Severities:

``error``    the record cannot be used as it is: an unreadable or missing image, a missing / unreadable /
             mis-sized mask, a degenerate box or one wholly outside its image, an unknown label, a duplicate
             key, an annotation of no image. ``vitlens data check`` exits 1.
``warning``  suspicious but usable: a box partly outside its image (it is clipped), an image without a
             label, an empty mask in a class that is not a "normal" class (see :data:`NORMAL_CLASSES`), a
             class with no image or fewer than 3 (a stratified split cannot give it a val and a test image),
             an image without its mask file, a mask of no image.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import VitlensError
from .layouts import Dataset, FileMask, Problem, open_dataset

__all__ = ["NORMAL_CLASSES", "CheckResult", "Problem", "check_dataset", "format_summary"]

NORMAL_CLASSES = frozenset({"normal", "negative", "healthy", "no_finding", "no finding"})
MIN_CLASS_SIZE = 3


class CheckResult(list):
    """The problems (a ``list[Problem]``) with ``summary`` (a dict, see :func:`format_summary`) and the
    ``dataset`` that was checked."""

    def __init__(self, problems: list[Problem], summary: dict, dataset: Dataset) -> None:
        super().__init__(problems)
        self.summary = summary
        self.dataset = dataset

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self if p.severity == "warning"]


def _box_problems(box, size: tuple[int, int] | None) -> list[tuple[str, str]]:
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        return [("error", f"box {tuple(box)} is not four finite numbers")]
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return [("error", f"box {tuple(box)} is degenerate (needs x0 < x1 and y0 < y1)")]
    if size is None:
        return []
    w, h = size
    if x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        return [("error", f"box {tuple(box)} lies wholly outside the {w}x{h} image")]
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        return [("warning", f"box {tuple(box)} extends outside the {w}x{h} image (it will be clipped)")]
    return []


def check_dataset(path: str | Path, layout: str = "auto", *, progress: bool = False, **options) -> CheckResult:
    """Every problem of the data set at ``path`` (see the module docstring), in one pass.

    Returns a :class:`CheckResult`: a ``list[Problem]`` that also carries ``summary`` and ``dataset``.
    Raises :class:`~vitlens.errors.DataError` only when there is no data set to check (no such directory,
    an unrecognised layout, no images at all). ``options`` go to the layout reader."""
    from tqdm.auto import tqdm

    from .images import load_image

    ds = open_dataset(path, layout, strict=False, **options)
    problems: list[Problem] = list(ds.info.get("problems", []))
    normal = {i for i, c in enumerate(ds.classes) if c.strip().lower() in NORMAL_CLASSES}
    readable = 0
    for rec in tqdm(ds.records, desc="checking", disable=None if progress else True, leave=False):
        where = rec.key
        size = None
        try:
            size = load_image(rec.image).size
            readable += 1
        except VitlensError as e:
            problems.append(Problem("error", where, str(e)))
        if rec.label is None:
            problems.append(Problem("warning", where, "no label"))
        if rec.mask is not None:
            missing = [p for p in rec.mask.paths if not Path(p).is_file()] if isinstance(rec.mask, FileMask) else []
            for p in missing:
                problems.append(Problem("error", where, f"mask file {p} does not exist"))
            if not missing and size is not None:
                try:
                    m = rec.mask.load(size)
                except VitlensError as e:
                    problems.append(Problem("error", where, str(e)))
                else:
                    if not m.any() and rec.label not in normal:
                        cls = ds.classes[rec.label] if rec.label is not None else "no label"
                        problems.append(
                            Problem(
                                "warning",
                                where,
                                f"empty mask ({rec.mask.describe()}) for class {cls!r}, which is not a normal class",
                            )
                        )
        for box in rec.boxes:
            problems += [Problem(sev, where, msg) for sev, msg in _box_problems(box, size)]

    counts = [0] * len(ds.classes)
    for rec in ds.records:
        if rec.label is not None and 0 <= rec.label < len(counts):
            counts[rec.label] += 1
    for name, n in zip(ds.classes, counts, strict=True):
        if n == 0:
            problems.append(Problem("warning", f"class {name!r}", "no images (an empty class)"))
        elif n < MIN_CLASS_SIZE:
            problems.append(
                Problem(
                    "warning",
                    f"class {name!r}",
                    f"only {n} image(s); fewer than {MIN_CLASS_SIZE} cannot be split into train, val and test",
                )
            )
    splits: dict[str, int] = {}
    for rec in ds.records:
        if rec.split is not None:
            splits[rec.split] = splits.get(rec.split, 0) + 1
    summary = {
        "root": str(ds.root),
        "layout": ds.layout,
        "images": len(ds.records),
        "readable_images": readable,
        "classes": dict(zip(ds.classes, counts, strict=True)),
        "unlabelled": sum(r.label is None for r in ds.records),
        "masks": sum(r.mask is not None for r in ds.records),
        "boxes": sum(bool(r.boxes) for r in ds.records),
        "splits": splits,
        "split_complete": bool(ds.records) and all(r.split is not None for r in ds.records),
        "notes": list(ds.info.get("notes", [])),
        "errors": sum(p.severity == "error" for p in problems),
        "warnings": sum(p.severity == "warning" for p in problems),
    }
    return CheckResult(problems, summary, ds)


def format_summary(summary: dict) -> str:
    """The summary as a few human-readable lines."""
    n = summary["images"]
    classes = ", ".join(f"{c} {k}" for c, k in summary["classes"].items())
    lines = [
        f"layout: {summary['layout']} ({summary['root']})",
        f"images: {n} ({summary['readable_images']} readable, {summary['unlabelled']} without a label)",
        f"classes: {len(summary['classes'])} ({classes})",
        f"masks: {summary['masks']} of {n} images; boxes: {summary['boxes']} of {n} images",
    ]
    if summary["split_complete"]:
        lines.append("split: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["splits"].items())))
    elif summary["splits"]:
        lines.append(
            "split: only some images have one ("
            + ", ".join(f"{k} {v}" for k, v in sorted(summary["splits"].items()))
            + "); a seeded 80/10/10 split per class is used"
        )
    else:
        lines.append("split: none in the layout; a seeded 80/10/10 split per class is used")
    lines += [f"note: {note}" for note in summary["notes"]]
    lines.append(f"{summary['errors']} error(s), {summary['warnings']} warning(s)")
    return "\n".join(lines)
