"""Readers of the published data set layouts beyond class folders (registered in ``records.LAYOUTS``).

======== ===================================================================================================
layout   what is read
======== ===================================================================================================
``csv``  a manifest: ``path, label[, class_name][, mask_path][, x0, y0, x1, y1 | box][, split]``
``coco`` COCO instances JSON + image folder: polygons and RLE → masks, ``bbox`` → boxes (Lin et al. 2014)
``voc``  Pascal VOC: ``JPEGImages``, ``SegmentationClass``, ``Annotations`` XML, ``ImageSets``
         (Everingham et al. 2010)
``busi`` Breast Ultrasound Images (Al-Dhabyani et al. 2020): ``<class>/<name> (k).png`` + ``_mask`` files
``kvasir`` Kvasir-SEG (Jha et al. 2020): ``images/``, ``masks/``, ``kavsir_bboxes.json``
======== ===================================================================================================

Every reader describes the problems it meets (a row with an unknown label, an annotation of no image, an
image without its mask) as :class:`~vitlens.data.layouts.Problem` in ``Dataset.info["problems"]`` and goes on,
so that ``vitlens data check`` can report all of them at once; ``info["notes"]`` says what a reader chose
(which annotation file, which year, skipped images). Boxes are ``(x0, y0, x1, y1)`` in original pixels,
end-exclusive, as everywhere in vitlens.
"""

from __future__ import annotations

import csv
import json
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .records import (
    IMAGE_EXTS,
    Dataset,
    FileMask,
    MaskSource,
    Problem,
    Record,
    class_folders,
    register_layout,
    rel_key,
)

__all__ = ["VOC_CLASSES", "CocoMask"]

Box = tuple[float, float, float, float]

_SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
}


def _flat_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted, hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
    )


def _split_name(value: str) -> str | None:
    return _SPLIT_NAMES.get(value.strip().lower())


# ============================================================================================== CSV
_PATH_COLS = ("path", "image", "image_path", "filename", "file")
_LABEL_COLS = ("label", "class", "target")
_MASK_COLS = ("mask_path", "mask")
_MAX_HEADER = 64 * 1024
CLASSES_FILE = "classes.txt"


def _csv_dialect(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def _csv_header(path: Path) -> list[str] | None:
    """The lower-cased column names of a CSV/TSV file, or None when it is not one."""
    if not path.is_file() or path.suffix.lower() not in (".csv", ".tsv"):
        return None
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            first = fh.readline(_MAX_HEADER)
    except (OSError, UnicodeDecodeError):
        return None
    try:
        row = next(csv.reader([first], delimiter=_csv_dialect(path)))
    except (csv.Error, StopIteration):
        return None
    return [c.strip().lower() for c in row]


def _is_manifest(path: Path, strict: bool = False) -> bool:
    """A CSV with an image path column; ``strict`` (a CSV found in a directory, not named manifest.csv):
    also a label, class name, mask or box column, so that a metadata table is not taken for a manifest."""
    header = _csv_header(path)
    if header is None or not any(c in header for c in _PATH_COLS):
        return False
    return not strict or any(c in header for c in (*_LABEL_COLS, *_MASK_COLS, "class_name", "box", "x0"))


def _manifests(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if _is_manifest(root) else []
    if (root / "manifest.csv").is_file() and _is_manifest(root / "manifest.csv"):
        return [root / "manifest.csv"]
    return sorted(p for p in [*root.glob("*.csv"), *root.glob("*.tsv")] if _is_manifest(p, strict=True))


def _detect_csv(root: Path) -> bool:
    return bool(_manifests(root))


def _column(header: list[str], names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in header), None)


def _parse_box(text: str) -> Box:
    parts = [v for v in re.split(r"[\s,]+", text.strip()) if v]
    if len(parts) != 4:
        raise ValueError(f"box {text!r} is not 'x0 y0 x1 y1'")
    x0, y0, x1, y1 = (float(v) for v in parts)
    return (x0, y0, x1, y1)


def _as_int(text: str) -> int | None:
    """``"3"`` (or ``"3.0"``, as pandas writes integer columns with gaps) -> 3; anything else -> None."""
    m = re.fullmatch(r"([+-]?\d+)(?:\.0*)?", text)
    return int(m.group(1)) if m else None


@register_layout("csv", detect=_detect_csv)
def read_csv(root: Path, classes: list[str] | str | None = None, mask_column: str | None = None) -> Dataset:
    """A manifest CSV (a file, or a directory holding ``manifest.csv`` or a single ``*.csv`` with a ``path``
    column); vitlens' own ``vitlens data export`` manifest is one.

    Columns (case-insensitive; the first of the aliases present is used):

    - ``path`` (``image``, ``image_path``, ``filename``, ``file``): the image, relative to the CSV's folder
      or absolute;
    - ``label`` (``class``, ``target``): a class index or a class name; empty = no label;
    - ``class_name`` (optional): the name of the row's class;
    - ``mask_path`` (``mask``; or ``mask_column=``, e.g. ``marker_mask_path``): one or more mask files
      separated by ``;``, merged (non-zero = foreground); empty = no mask;
    - ``x0, y0, x1, y1`` (one box per row) or ``box`` (``"x0 y0 x1 y1"``, several separated by ``;``):
      end-exclusive pixel boxes; empty = none;
    - ``split`` (optional): ``train`` / ``val`` / ``test`` (``training``, ``validation``, ``valid``, ``dev``,
      ``testing`` are understood).

    Classes: ``classes=`` (a list or ``"a,b,c"``) when given, else ``classes.txt`` beside the manifest (one
    name per line, in index order) when there is one; a label is then a name of that list or an index into
    it. Otherwise, when every label is an integer, the class of index ``i`` is named by the ``class_name`` of
    its rows (or ``"i"`` when no row has that index), keeping the indices of the manifest (so a model's
    outputs keep their meaning); else the sorted set of label names (``class_name`` stands in for an empty
    label). A label that is not a known class is an error.
    """
    found = _manifests(root)
    if not found:
        raise DataError(f"{root}: no CSV manifest (a .csv with a 'path' column, e.g. manifest.csv)")
    if len(found) > 1:
        raise DataError(
            f"{root}: several CSV manifests ({', '.join(p.name for p in found)}); pass the one to read as the path"
        )
    manifest = found[0]
    base = manifest.parent
    problems: list[Problem] = []
    try:
        with manifest.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh, delimiter=_csv_dialect(manifest))
            reader.fieldnames = [c.strip().lower() for c in (reader.fieldnames or [])]
            header = list(reader.fieldnames)
            rows = list(enumerate(reader, start=2))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"manifest {manifest}: cannot be read ({type(e).__name__}: {e})") from e
    path_col = _column(header, _PATH_COLS)
    label_col = _column(header, _LABEL_COLS)
    name_col = "class_name" if "class_name" in header else None
    if mask_column is not None:
        mask_col: str | None = mask_column.strip().lower()
        if mask_col not in header:
            raise DataError(f"manifest {manifest}: no column {mask_column!r}; columns: {', '.join(header)}")
    else:
        mask_col = _column(header, _MASK_COLS)
    box_cols = ("x0", "y0", "x1", "y1") if all(c in header for c in ("x0", "y0", "x1", "y1")) else None
    box_col = "box" if "box" in header else None
    split_col = "split" if "split" in header else None

    def cell(row: dict, col: str | None) -> str:
        v = row.get(col) if col else None
        return v.strip() if isinstance(v, str) else ""

    parsed = []  # (where, image, label text, class name, mask paths, boxes, split)
    for line, row in rows:
        where = f"{manifest.name}:{line}"
        path_text = cell(row, path_col)
        if not path_text:
            problems.append(Problem("error", where, "no image path"))
            continue
        image = Path(path_text)
        image = image if image.is_absolute() else base / image
        masks = tuple(
            (base / m.strip()) if not Path(m.strip()).is_absolute() else Path(m.strip())
            for m in cell(row, mask_col).split(";")
            if m.strip()
        )
        boxes: list[Box] = []
        if box_cols:
            values = [cell(row, c) for c in box_cols]
            if any(values):
                try:
                    boxes.append(_parse_box(" ".join(values)) if all(values) else _parse_box(""))
                except ValueError:
                    problems.append(Problem("error", where, f"box x0,y0,x1,y1 = {values} is not four numbers"))
        for text in cell(row, box_col).split(";"):
            if text.strip():
                try:
                    boxes.append(_parse_box(text))
                except ValueError:
                    problems.append(Problem("error", where, f"box {text.strip()!r} is not 'x0 y0 x1 y1'"))
        split = None
        if cell(row, split_col):
            split = _split_name(cell(row, split_col))
            if split is None:
                problems.append(Problem("error", where, f"split {cell(row, split_col)!r} is not train, val or test"))
        parsed.append((where, image, cell(row, label_col), cell(row, name_col), masks, tuple(boxes), split))

    notes = [f"manifest {manifest.name}" + (f", masks from column {mask_col!r}" if mask_col else ", no mask column")]
    if classes is None and (base / CLASSES_FILE).is_file():
        classes = [c.strip() for c in (base / CLASSES_FILE).read_text(encoding="utf-8-sig").splitlines() if c.strip()]
        notes.append(f"classes from {CLASSES_FILE}")
    class_list, resolve = _csv_classes(classes, parsed, problems)
    records = []
    for where, image, label_text, name, masks, boxes, split in parsed:
        label = resolve(where, label_text, name)
        records.append(
            Record(
                key=rel_key(base, image),
                image=image.resolve(),
                label=label,
                boxes=boxes,
                mask=FileMask(tuple(m.resolve() for m in masks)) if masks else None,
                split=split,
            )
        )
    return Dataset(base, "csv", class_list, records, info={"problems": problems, "notes": notes})


def _csv_classes(classes, parsed, problems):
    """The class list and a ``(where, label text, class name) -> index | None`` resolver (see read_csv)."""
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    labels = [(w, lab, name) for w, _, lab, name, *_ in parsed]
    if classes is not None:
        class_list = list(classes)
        index_mode = False
    elif any(lab for _, lab, _ in labels) and all(_as_int(lab) is not None for _, lab, _ in labels if lab):
        index_mode = True
        n = max(_as_int(lab) for _, lab, _ in labels if lab) + 1
        names: dict[int, str] = {}
        for where, lab, name in labels:
            i = _as_int(lab) if lab else None
            if i is not None and i >= 0 and name and names.setdefault(i, name) != name:
                problems.append(
                    Problem(
                        "error",
                        where,
                        f"label {lab} is class {names[i]!r} in an earlier row but class_name {name!r} here",
                    )
                )
        class_list = [names.get(i, str(i)) for i in range(max(n, 0))]
    else:
        index_mode = False
        class_list = sorted({lab or name for _, lab, name in labels if lab or name})

    def resolve(where: str, lab: str, name: str) -> int | None:
        text = lab or name
        if not text:
            return None
        as_int = _as_int(text)
        if text in class_list and not (index_mode and lab):
            idx = class_list.index(text)
        elif as_int is not None and (index_mode or classes is not None) and 0 <= as_int < len(class_list):
            idx = as_int
        else:
            valid = f"0..{len(class_list) - 1} or " if classes is not None else ""
            problems.append(
                Problem(
                    "error", where, f"unknown label {text!r}; valid: {valid}{', '.join(class_list) or 'no classes'}"
                )
            )
            return None
        if lab and name and class_list[idx] != name and not index_mode:  # index mode checked it above
            problems.append(
                Problem("error", where, f"label {lab!r} is class {class_list[idx]!r} but class_name says {name!r}")
            )
        return idx

    return class_list, resolve


# ============================================================================================== COCO
_COCO_SNIFF = 1 << 20
_COCO_FULL_PARSE = 64 << 20


def _coco_like(path: Path) -> bool:
    """A JSON with ``images``, ``annotations`` and ``categories``: parsed when small, sniffed (head and tail)
    when large, so that detection does not load a 450 MB ``instances_train2017.json``."""
    if not path.is_file() or path.suffix.lower() != ".json":
        return False
    try:
        size = path.stat().st_size
        if size <= _COCO_FULL_PARSE:
            with path.open("rb") as fh:
                data = json.load(fh)
            return isinstance(data, dict) and all(
                isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
            )
        with path.open("rb") as fh:
            head = fh.read(_COCO_SNIFF)
            fh.seek(max(0, size - _COCO_SNIFF))
            tail = fh.read()
    except (OSError, ValueError):
        return False
    text = head + tail
    return all(k in text for k in (b'"images"', b'"annotations"', b'"categories"'))


def _coco_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root] if _coco_like(root) else []
    found = [
        p
        for folder in (root, root / "annotations")
        if folder.is_dir()
        for p in sorted(folder.glob("*.json"))
        if _coco_like(p)
    ]
    instances = [p for p in found if p.name.startswith("instances")]
    return instances or found


def _detect_coco(root: Path) -> bool:
    return bool(_coco_files(root))


@dataclass(frozen=True, eq=False)
class CocoMask(MaskSource):
    """The union of COCO segmentations of one image, decoded only when asked (a COCO image has its
    annotations in the JSON, not in a file).

    pycocotools (the COCO API, Lin et al. 2014) does the format work for us: ``frPyObjects`` rasterises
    polygons (a pixel is inside when its centre is, so polygon corners are pixel corners, as for boxes) and
    turns uncompressed RLE (``counts`` a list) into compressed RLE, ``merge`` unions the polygons of one
    instance, ``decode`` expands compressed RLE (``counts`` a string) to a column-major mask. We check what
    it does not: the RLE's ``size`` and total count against the image, polygons of at least 3 points.
    """

    segmentations: tuple  # COCO "segmentation" values: a list of polygons, or an RLE dict
    height: int
    width: int
    source: str  # e.g. "instances_val2017.json, image 397133, annotations [1, 7]"

    def load(self, size: tuple[int, int]) -> np.ndarray:
        from pycocotools import mask as mask_utils

        h, w = self.height, self.width
        if tuple(size) != (w, h):
            raise DataError(f"mask {self.source}: {w}x{h} in the JSON but the image is {size[0]}x{size[1]}")
        out = np.zeros((h, w), dtype=bool)
        for seg in self.segmentations:
            try:
                with warnings.catch_warnings():  # pycocotools' numpy-2 DeprecationWarning is not the user's
                    warnings.simplefilter("ignore", DeprecationWarning)
                    m = self._decode(seg, mask_utils, h, w)
            except (ValueError, TypeError, KeyError) as e:
                raise DataError(f"mask {self.source}: bad segmentation ({e})") from e
            out |= m.astype(bool).reshape(h, w)
        return out

    @staticmethod
    def _decode(seg, mask_utils, h: int, w: int) -> np.ndarray:
        if isinstance(seg, list):
            polys = [[float(v) for v in p] for p in seg]
            if not polys or any(len(p) < 6 or len(p) % 2 for p in polys):
                raise ValueError("a polygon needs at least 3 (x, y) points")
            rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if [int(v) for v in seg["size"]] != [h, w]:
                raise ValueError(f"RLE size {seg['size']} is not the image's [height, width] {[h, w]}")
            if isinstance(seg["counts"], list):
                if sum(int(c) for c in seg["counts"]) != h * w:
                    raise ValueError(f"RLE counts sum to {sum(seg['counts'])}, not {h}x{w} = {h * w}")
                rle = mask_utils.frPyObjects(seg, h, w)
            else:
                rle = seg
        else:
            raise ValueError(f"segmentation of type {type(seg).__name__} is neither polygons nor RLE")
        return mask_utils.decode(rle)

    def describe(self) -> str:
        return self.source


def _coco_image_dir(images_opt, json_path: Path, root: Path, names: list[str]) -> Path:
    if images_opt is not None:
        d = Path(images_opt)
        d = d if d.is_absolute() else root / d
        if not d.is_dir():
            raise DataError(f"COCO images= {d}: no such directory")
        return d
    stem = json_path.stem.removeprefix("instances_")
    cands = [
        json_path.parent,
        root,
        root / "images",
        json_path.parent / "images",
        root / stem,
        root / "images" / stem,
        json_path.parent.parent / stem,
    ]
    sample = names[:50]
    best = max(cands, key=lambda d: (sum((d / n).is_file() for n in sample), -cands.index(d)))
    return best


@register_layout("coco", detect=_detect_coco)
def read_coco(
    root: Path,
    annotations: str | Path | None = None,
    images: str | Path | None = None,
    keep_unannotated: bool = False,
    crowd: bool = True,
) -> Dataset:
    """COCO instances JSON (Lin et al. 2014) and its image folder.

    ``root`` is the JSON file itself or a directory with one COCO JSON at its top or in ``annotations/``
    (``instances_*.json`` preferred; with several, pass the file or ``annotations=``). The image folder is
    ``images=``, else the one of ``DIR``, ``DIR/images``, ``DIR/<split>`` (``instances_val2017`` →
    ``val2017``) ... that holds the most of the listed ``file_name``.

    One record per image; the classes are the categories in id order. The label is the category of the
    largest-area non-crowd annotation (``area``, else the box area; crowd annotations only when the image has
    nothing else); the mask is the union of that category's instances and its boxes are their ``bbox``
    ``[x, y, w, h]`` → ``(x, y, x + w, y + h)``. Crowd regions (``iscrowd``, RLE) belong to their category,
    so they are part of its mask and boxes unless ``crowd=False``. Images without annotations are skipped
    (a note says how many) unless ``keep_unannotated=True`` keeps them with no label and no mask.
    """
    if root.is_file():
        json_path = root
        root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    elif annotations is not None:
        json_path = Path(annotations) if Path(annotations).is_absolute() else root / annotations
        if not json_path.is_file():
            raise DataError(f"COCO annotations= {json_path}: no such file")
    else:
        files = _coco_files(root)
        if not files:
            raise DataError(f"{root}: no COCO JSON (with images, annotations, categories) here or in annotations/")
        if len(files) > 1:
            raise DataError(
                f"{root}: several COCO annotation files ({', '.join(p.name for p in files)}); pass "
                f"the one to read as the path (e.g. {files[0]}) or annotations="
            )
        json_path = files[0]
    try:
        with json_path.open("rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise DataError(f"COCO file {json_path}: cannot be read as JSON ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DataError(f"COCO file {json_path}: needs the lists 'images', 'annotations' and 'categories'")
    jname = json_path.name
    problems: list[Problem] = []

    cats = sorted(
        (c for c in data["categories"] if isinstance(c, dict) and "id" in c and "name" in c), key=lambda c: c["id"]
    )
    if len(cats) != len(data["categories"]):
        problems.append(Problem("error", jname, "a category without 'id' or 'name'"))
    classes = [str(c["name"]) for c in cats]
    cat_index = {c["id"]: i for i, c in enumerate(cats)}

    table: dict = {}
    for i, im in enumerate(data["images"]):
        if not isinstance(im, dict) or not all(k in im for k in ("id", "file_name", "width", "height")):
            problems.append(Problem("error", f"{jname}: images[{i}]", "needs id, file_name, width and height"))
        elif im["id"] in table:
            problems.append(Problem("error", f"{jname}: image id {im['id']}", "listed twice in 'images'"))
        else:
            table[im["id"]] = im

    by_image: dict = {i: [] for i in table}
    for j, ann in enumerate(data["annotations"]):
        aid = ann.get("id", f"#{j}") if isinstance(ann, dict) else f"#{j}"
        where = f"{jname}: annotation {aid}"
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            problems.append(Problem("error", where, "needs image_id and category_id"))
        elif ann["image_id"] not in table:
            problems.append(
                Problem(
                    "error", where, f"points to image id {ann['image_id']}, which is not in 'images' (a missing image)"
                )
            )
        elif ann["category_id"] not in cat_index:
            problems.append(Problem("error", where, f"category_id {ann['category_id']} is not in 'categories'"))
        else:
            by_image[ann["image_id"]].append(ann)

    image_dir = _coco_image_dir(images, json_path, root, [str(im["file_name"]) for im in table.values()])

    def area(ann: dict) -> float:
        if isinstance(ann.get("area"), (int, float)):
            return float(ann["area"])
        try:
            return float(ann["bbox"][2]) * float(ann["bbox"][3])
        except (KeyError, IndexError, TypeError, ValueError):
            return 0.0

    records, skipped = [], 0
    for iid, im in table.items():
        path = image_dir / str(im["file_name"])
        anns = by_image[iid]
        if not anns:
            if keep_unannotated:
                records.append(Record(key=rel_key(root, path), image=path.resolve(), label=None))
            else:
                skipped += 1
            continue
        plain = [a for a in anns if not a.get("iscrowd")]
        top = max(plain or anns, key=area)  # max keeps the first of equal areas: annotation order
        label = cat_index[top["category_id"]]
        mine = [a for a in anns if a["category_id"] == top["category_id"] and (crowd or not a.get("iscrowd"))]
        boxes: list[Box] = []
        for a in mine:
            b = a.get("bbox")
            if b is None:
                continue
            try:
                x, y, w, h = (float(v) for v in b)
            except (TypeError, ValueError):
                problems.append(Problem("error", f"{jname}: annotation {a.get('id')}", f"bbox {b!r} is not [x,y,w,h]"))
                continue
            boxes.append((x, y, x + w, y + h))
        segs = tuple(a["segmentation"] for a in mine if a.get("segmentation"))
        mask = None
        if segs:
            ids = [a.get("id") for a in mine if a.get("segmentation")]
            mask = CocoMask(segs, int(im["height"]), int(im["width"]), f"{jname}, image {iid}, annotations {ids}")
        records.append(
            Record(key=rel_key(root, path), image=path.resolve(), label=label, boxes=tuple(boxes), mask=mask)
        )
    records.sort(key=lambda r: r.key)
    notes = [f"annotations {json_path}", f"images from {image_dir}"]
    if skipped:
        notes.append(f"{skipped} image(s) without annotations skipped (keep_unannotated=True keeps them)")
    return Dataset(root, "coco", classes, records, info={"problems": problems, "notes": notes})


# ============================================================================================== VOC
VOC_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_BORDER = 255


def _is_voc_dir(d: Path) -> bool:
    return (d / "JPEGImages").is_dir() and ((d / "Annotations").is_dir() or (d / "SegmentationClass").is_dir())


def _voc_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    if _is_voc_dir(root):
        return [root]
    return [
        d
        for base in (root, root / "VOCdevkit")
        if base.is_dir()
        for d in sorted(base.glob("VOC*"))
        if d.is_dir() and _is_voc_dir(d)
    ]


def _read_split_lists(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in ("train", "val", "test"):
        f = folder / f"{name}.txt"
        if f.is_file():
            for line in f.read_text().split():
                out.setdefault(line.strip(), name)
    return out


def _voc_objects(xml_path: Path) -> list[tuple[str, Box, bool]]:
    """(class name, box, difficult) of each object; VOC's 1-based inclusive corners → 0-based end-exclusive."""
    tree = ET.parse(xml_path)
    out = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if bb is None:
            continue
        xmin, ymin, xmax, ymax = (float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        out.append((name, (xmin - 1.0, ymin - 1.0, xmax, ymax), difficult))
    return out


@register_layout("voc", detect=lambda root: bool(_voc_dirs(root)))
def read_voc(root: Path, year: int | str | None = None, images: str = "auto", difficult: bool = False) -> Dataset:
    """Pascal VOC (Everingham et al. 2010): ``VOCdevkit/VOC20xx``, ``VOC20xx`` or the year folder itself
    (the newest year when there are several, unless ``year=``).

    ``images``: ``segmentation`` = the images with a ``SegmentationClass`` PNG, ``all`` = every
    ``JPEGImages`` file, ``auto`` (default) = ``segmentation`` when there are such PNGs. The split comes from
    ``ImageSets/Segmentation`` (``ImageSets/Main`` for ``all``) ``train.txt`` / ``val.txt`` / ``test.txt``.

    The classes are the 20 VOC classes in the standard order (pixel value ``i + 1`` in the palette PNGs).
    The label is the class with the most mask pixels, or, without a segmentation, the class with the
    largest total box area; the mask is that class's pixels (the object border, value 255, is not part of
    it); the boxes are that class's ``Annotations`` boxes, without those marked ``difficult`` unless
    ``difficult=True``. XML corners are 1-based and inclusive; they become 0-based end-exclusive boxes.
    Reading the label needs every segmentation PNG once (about a second per thousand images).
    """
    from PIL import Image

    dirs = _voc_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no Pascal VOC folder (JPEGImages with Annotations or SegmentationClass)")
    notes: list[str] = []
    if year is not None:
        chosen = [d for d in dirs if d.name == f"VOC{year}" or d.name == str(year)]
        if not chosen:
            raise DataError(f"{root}: no VOC{year}; found {', '.join(d.name for d in dirs)}")
        voc = chosen[0]
    else:
        voc = dirs[-1]
        if len(dirs) > 1:
            notes.append(f"several VOC folders ({', '.join(d.name for d in dirs)}): read {voc.name} (year= picks)")
    if images not in ("auto", "segmentation", "all"):
        raise DataError(f"VOC images={images!r}: choose auto, segmentation or all")
    seg_dir, ann_dir, jpg_dir = voc / "SegmentationClass", voc / "Annotations", voc / "JPEGImages"
    seg_pngs = {p.stem: p for p in sorted(seg_dir.glob("*.png"))} if seg_dir.is_dir() else {}
    mode = ("segmentation" if seg_pngs else "all") if images == "auto" else images
    jpgs: dict[str, Path] = {}
    for p in _flat_images(jpg_dir):
        jpgs.setdefault(p.stem, p)
    if mode == "segmentation":
        stems = sorted(seg_pngs)
        splits = _read_split_lists(voc / "ImageSets" / "Segmentation")
    else:
        stems = sorted(jpgs)
        splits = _read_split_lists(voc / "ImageSets" / "Main")
    notes.append(f"{voc.name}: {mode} images" + (", split from ImageSets" if splits else ""))
    problems: list[Problem] = []
    records = []
    for stem in stems:
        jpg = jpgs.get(stem, jpg_dir / f"{stem}.jpg")  # a missing image is reported by `data check`
        key = rel_key(root, jpg)
        objects: list[tuple[str, Box, bool]] = []
        xml = ann_dir / f"{stem}.xml"
        if xml.is_file():
            try:
                objects = _voc_objects(xml)
            except (ET.ParseError, OSError, ValueError) as e:
                problems.append(Problem("error", rel_key(root, xml), f"annotation cannot be read ({e})"))
        for name, _, _ in objects:
            if name not in VOC_CLASSES:
                problems.append(
                    Problem("warning", rel_key(root, xml), f"object class {name!r} is not a VOC class; ignored")
                )
        objects = [o for o in objects if o[0] in VOC_CLASSES]
        label, png = None, seg_pngs.get(stem)
        if png is not None:
            try:
                with Image.open(png) as im:
                    if im.mode not in ("P", "L"):
                        raise ValueError(f"mode {im.mode}: class indices need a palette (P) or grayscale PNG")
                    counts = np.bincount(np.asarray(im).ravel(), minlength=256)[1 : len(VOC_CLASSES) + 1]
                if counts.max() > 0:
                    label = int(counts.argmax())
            except (OSError, ValueError, SyntaxError) as e:
                problems.append(Problem("error", rel_key(root, png), f"segmentation cannot be read ({e})"))
                png = None
        if label is None and objects:
            usable = [o for o in objects if not o[2]] or objects
            area = np.zeros(len(VOC_CLASSES))
            for name, (x0, y0, x1, y1), _ in usable:
                area[VOC_CLASSES.index(name)] += max(0.0, x1 - x0) * max(0.0, y1 - y0)
            label = int(area.argmax())
        boxes = (
            ()
            if label is None
            else tuple(b for name, b, diff in objects if name == VOC_CLASSES[label] and (difficult or not diff))
        )
        mask = None
        if png is not None and label is not None:
            mask = FileMask((png.resolve(),), values=(label + 1,), ignore=(VOC_BORDER,))
        records.append(
            Record(key=key, image=jpg.resolve(), label=label, boxes=boxes, mask=mask, split=splits.get(stem))
        )
    return Dataset(root, "voc", list(VOC_CLASSES), records, info={"problems": problems, "notes": notes})


# ============================================================================================== BUSI
_BUSI_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_(?P<k>\d+))?$", re.IGNORECASE)


def _busi_split(folder: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """Images and ``{image stem: mask files}`` of one class folder (mask files in ``_mask``, ``_mask_1``,
    ... order)."""
    imgs, masks = [], {}
    for p in _flat_images(folder):
        m = _BUSI_MASK.match(p.stem)
        if m:
            masks.setdefault(m.group("stem"), []).append((int(m.group("k") or 0), p))
        else:
            imgs.append(p)
    return imgs, {s: [p for _, p in sorted(v)] for s, v in masks.items()}


def _detect_busi(root: Path) -> bool:
    return any(_BUSI_MASK.match(p.stem) for f in class_folders(root) for p in f.glob("*_mask*.png"))


@register_layout("busi", detect=_detect_busi)
def read_busi(root: Path) -> Dataset:
    """Breast Ultrasound Images, Dataset_BUSI_with_GT (Al-Dhabyani et al. 2020): class folders (``benign``,
    ``malignant``, ``normal``) of ``<name> (k).png`` with the lesion masks ``<name> (k)_mask.png``,
    ``_mask_1.png``, ... beside them. Mask files are not records; the masks of one image are merged (several
    lesions). ``normal`` images come with all-black masks. An image without a mask file keeps no mask (a
    warning)."""
    folders = class_folders(root)
    problems: list[Problem] = []
    records = []
    for label, folder in enumerate(folders):
        imgs, masks = _busi_split(folder)
        for img in imgs:
            found = masks.pop(img.stem, [])
            if not found:
                problems.append(Problem("warning", rel_key(root, img), f"no mask file ({img.stem}_mask.png)"))
            records.append(
                Record(
                    key=rel_key(root, img),
                    image=img.resolve(),
                    label=label,
                    mask=FileMask(tuple(p.resolve() for p in found)) if found else None,
                )
            )
        for stem, files in masks.items():
            for f in files:
                problems.append(Problem("warning", rel_key(root, f), f"mask of no image ({stem}.png is missing)"))
    return Dataset(root, "busi", [f.name for f in folders], records, info={"problems": problems, "notes": []})


# ============================================================================================== Kvasir
_KVASIR_BOXES = "kavsir_bboxes.json"  # sic: the file name in the Kvasir-SEG archive


def _detect_kvasir(root: Path) -> bool:
    return (root / "images").is_dir() and (root / "masks").is_dir() and bool(_flat_images(root / "images"))


@register_layout("kvasir", detect=_detect_kvasir)
def read_kvasir(root: Path, bboxes: str | Path | None = None) -> Dataset:
    """Kvasir-SEG (Jha et al. 2020): ``images/<id>.jpg`` and ``masks/<id>.jpg`` (the same name; another
    image suffix is accepted), one class ``polyp``. Boxes come from ``kavsir_bboxes.json`` (or ``bboxes=``):
    ``{"<id>": {"height", "width", "bbox": [{"label", "xmin", "ymin", "xmax", "ymax"}, ...]}}``, taken as
    end-exclusive ``(xmin, ymin, xmax, ymax)``. The masks are JPEG: foreground is a value above 127."""
    problems: list[Problem] = []
    mask_files: dict[str, Path] = {}
    for p in _flat_images(root / "masks"):
        mask_files.setdefault(p.stem, p)
    box_path = Path(bboxes) if bboxes is not None else root / _KVASIR_BOXES
    if bboxes is not None and not box_path.is_absolute():
        box_path = root / box_path
    box_data: dict = {}
    if box_path.is_file():
        try:
            box_data = json.loads(box_path.read_text())
            if not isinstance(box_data, dict):
                raise ValueError("not a JSON object of image ids")
        except (OSError, ValueError) as e:
            problems.append(Problem("error", box_path.name, f"cannot be read ({e})"))
            box_data = {}
    elif bboxes is not None:
        raise DataError(f"Kvasir bboxes= {box_path}: no such file")
    records = []
    imgs = _flat_images(root / "images")
    for img in imgs:
        mask = mask_files.pop(img.stem, None)
        if mask is None:
            problems.append(Problem("warning", rel_key(root, img), f"no mask masks/{img.name}"))
        boxes: list[Box] = []
        entry = box_data.pop(img.stem, None)
        if entry is not None:
            try:
                for b in entry.get("bbox", []):
                    boxes.append(tuple(float(b[k]) for k in ("xmin", "ymin", "xmax", "ymax")))
            except (AttributeError, KeyError, TypeError, ValueError):
                problems.append(Problem("error", f"{box_path.name}: {img.stem}", f"bad bbox entry {entry!r}"))
        records.append(
            Record(
                key=rel_key(root, img),
                image=img.resolve(),
                label=0,
                boxes=tuple(boxes),
                mask=FileMask((mask.resolve(),)) if mask is not None else None,
            )
        )
    for stem, f in mask_files.items():
        problems.append(Problem("warning", rel_key(root, f), f"mask of no image (images/{stem}.* is missing)"))
    for stem in box_data:
        problems.append(Problem("warning", f"{box_path.name}: {stem}", "boxes of no image"))
    notes = [f"boxes from {box_path.name}" if box_path.is_file() else "no box file"]
    return Dataset(root, "kvasir", ["polyp"], records, info={"problems": problems, "notes": notes})
