"""Tiny data sets of every layout, written on the fly, with the ground truth they were written from.

Each ``make_*`` writes into a folder and returns a dict of what a reader must find there (hand-drawn masks,
boxes, labels), so that the tests compare against what was written, not against the reader's own output.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def rgb(path: Path, w: int, h: int, value: int = 128, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((h, w, 3), value, np.uint8)
    a[0, 0] = (value + 50) % 256  # not constant
    Image.fromarray(a).save(path, format=fmt)
    return path


def gray_mask(path: Path, mask: np.ndarray, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(path, format=fmt)
    return path


def rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


# ----------------------------------------------------------------------------------------------- BUSI
def make_busi(root: Path) -> dict:
    """benign: 2 images, the first with two lesion masks; malignant: 3 images; normal: 1 image, empty mask."""
    h, w = 12, 16
    truth = {}
    spec = {
        "benign": [
            ("benign (1)", [rect(h, w, 1, 1, 4, 4), rect(h, w, 10, 6, 14, 9)]),
            ("benign (2)", [rect(h, w, 2, 2, 6, 5)]),
        ],
        "malignant": [(f"malignant ({k})", [rect(h, w, k, k, k + 5, k + 3)]) for k in (1, 2, 3)],
        "normal": [("normal (1)", [np.zeros((h, w), bool)])],
    }
    for cls, items in spec.items():
        for stem, masks in items:
            rgb(root / cls / f"{stem}.png", w, h)
            for k, m in enumerate(masks):
                gray_mask(root / cls / (f"{stem}_mask.png" if k == 0 else f"{stem}_mask_{k}.png"), m)
            truth[f"{cls}/{stem}.png"] = (cls, np.logical_or.reduce(masks))
    return truth


# ----------------------------------------------------------------------------------------------- Kvasir
def make_kvasir(root: Path) -> dict:
    """3 JPEG images with JPEG masks (lossy: background not exactly 0) and a kavsir_bboxes.json."""
    h, w = 24, 32
    boxes = {"a1": (4, 2, 20, 14), "b2": (10, 8, 30, 22), "c3": (1, 1, 7, 6)}
    truth = {}
    bb = {}
    for stem, (x0, y0, x1, y1) in boxes.items():
        rgb(root / "images" / f"{stem}.jpg", w, h, fmt="JPEG")
        m = rect(h, w, x0, y0, x1, y1)
        gray_mask(root / "masks" / f"{stem}.jpg", m, fmt="JPEG")
        bb[stem] = {
            "height": h,
            "width": w,
            "bbox": [{"label": "polyp", "xmin": x0, "ymin": y0, "xmax": x1, "ymax": y1}],
        }
        truth[f"images/{stem}.jpg"] = (m, (float(x0), float(y0), float(x1), float(y1)))
    (root / "kavsir_bboxes.json").write_text(json.dumps(bb))
    return truth


# ----------------------------------------------------------------------------------------------- VOC
VOC_PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (3 * 250) + [224, 224, 192]


def voc_png(path: Path, labels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(VOC_PALETTE)
    im.save(path)
    return path


def voc_xml(path: Path, w: int, h: int, objects: list[tuple[str, tuple[int, int, int, int], int]]) -> Path:
    """objects: (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{d}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for n, b, d in objects
    )
    path.write_text(
        f"<annotation><folder>VOC2012</folder><filename>{path.stem}.jpg</filename><size>"
        f"<width>{w}</width><height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )
    return path


def make_voc(root: Path) -> dict:
    """VOCdevkit/VOC2012 with 3 segmented images (train, val, val) and 1 image with only an XML.

    A: person (15) 12 pixels with a 255 border ring around it, bird (3) 4 pixels -> label person (index 14);
    B: aeroplane (1) 6 pixels; C: a bicycle (2) 9 pixels and a car (7) 8 pixels -> bicycle. D: no PNG, XML
    with a cat box (the largest but for a difficult dog box) and a dog box."""
    voc = root / "VOCdevkit" / "VOC2012"
    h, w = 10, 12
    truth = {}
    a = np.zeros((h, w), np.uint8)
    a[2:5, 2:6] = 15  # 12 person pixels
    a[1, 1:7] = 255  # border pixels (ignored)
    a[5, 1:7] = 255
    a[8:10, 9:11] = 3  # 4 bird pixels
    b = np.zeros((h, w), np.uint8)
    b[0:2, 0:3] = 1
    c = np.zeros((h, w), np.uint8)
    c[0:3, 0:3] = 2
    c[6:8, 6:10] = 7
    for stem, lab in (("2008_000001", a), ("2008_000002", b), ("2008_000003", c)):
        rgb(voc / "JPEGImages" / f"{stem}.jpg", w, h, fmt="JPEG")
        voc_png(voc / "SegmentationClass" / f"{stem}.png", lab)
    voc_xml(
        voc / "Annotations" / "2008_000001.xml",
        w,
        h,
        [("person", (3, 3, 6, 5), 0), ("person", (1, 1, 12, 10), 1), ("bird", (10, 9, 11, 10), 0)],
    )
    voc_xml(voc / "Annotations" / "2008_000002.xml", w, h, [("aeroplane", (1, 1, 3, 2), 0)])
    voc_xml(voc / "Annotations" / "2008_000003.xml", w, h, [("bicycle", (1, 1, 3, 3), 0), ("car", (7, 7, 10, 8), 0)])
    rgb(voc / "JPEGImages" / "2008_000004.jpg", w, h, fmt="JPEG")
    voc_xml(
        voc / "Annotations" / "2008_000004.xml",
        w,
        h,
        [("dog", (1, 1, 3, 3), 0), ("cat", (2, 2, 10, 9), 0), ("dog", (1, 1, 12, 10), 1)],
    )
    sets = voc / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2008_000001\n")
    (sets / "val.txt").write_text("2008_000002\n2008_000003\n")
    (sets / "trainval.txt").write_text("2008_000001\n2008_000002\n2008_000003\n")
    truth["A"] = a == 15
    truth["B"] = b == 1
    truth["C"] = c == 2
    return truth


# ----------------------------------------------------------------------------------------------- COCO
def make_coco(root: Path, encode_rle) -> dict:
    """annotations/instances_val2017.json + val2017/ with 4 images:

    1: a cat rectangle polygon (area 20) and a dog triangle polygon (area 16) -> cat;
    2: a crowd person (compressed RLE, area 40) and a small person polygon (area 4) -> person, mask = both;
    3: an uncompressed-RLE dog (non-crowd) -> dog;
    4: no annotation (skipped unless keep_unannotated);
    5: a crowd cat covering the image (area 80) and a small dog polygon (area 4) -> dog: crowds do not pick
       the label;
    6: only a crowd cat (area 80) -> cat: a crowd picks the label when there is nothing else.
    Categories ids 18 (dog), 1 (person), 17 (cat): classes in id order person, cat, dog.
    """
    h, w = 8, 10
    img_dir = root / "val2017"
    for i in range(1, 7):
        rgb(img_dir / f"{i:012d}.jpg", w, h, fmt="JPEG")
    # hand-drawn expectations (pixel (x, y) is inside a polygon when its centre (x+.5, y+.5) is)
    cat = rect(h, w, 2, 1, 7, 5)  # polygon corners (2,1) (7,1) (7,5) (2,5)
    dog_tri = np.zeros((h, w), bool)  # polygon (0,0) (8,0) (0,4): inside iff x + 2y <= 6
    for y, n in enumerate((7, 5, 3, 1)):
        dog_tri[y, :n] = True
    crowd = rect(h, w, 0, 0, 5, 8)  # 40 pixels, compressed RLE
    small = rect(h, w, 7, 6, 9, 8)  # polygon (7,6) (9,6) (9,8) (7,8)
    # uncompressed RLE (column-major runs, starting with background): h=8; 9 zeros (column 0 and the top of
    # column 1), 3 ones (rows 1..3 of column 1), 5 zeros, 3 ones (rows 1..3 of column 2), the rest zeros.
    unc = np.zeros((h, w), bool)
    unc[1:4, 1] = True
    unc[1:4, 2] = True
    counts = [9, 3, 5, 3, h * w - 20]
    rle = encode_rle(crowd)
    data = {
        "info": {"description": "tiny"},
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": w, "height": h} for i in range(1, 7)],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 17,
                "iscrowd": 0,
                "area": 20.0,
                "bbox": [2, 1, 5, 4],
                "segmentation": [[2, 1, 7, 1, 7, 5, 2, 5]],
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 18,
                "iscrowd": 0,
                "area": 16.0,
                "bbox": [0, 0, 8, 4],
                "segmentation": [[0, 0, 8, 0, 0, 4]],
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 1,
                "iscrowd": 1,
                "area": 40.0,
                "bbox": [0, 0, 5, 8],
                "segmentation": rle,
            },
            {
                "id": 4,
                "image_id": 2,
                "category_id": 1,
                "iscrowd": 0,
                "area": 4.0,
                "bbox": [7, 6, 2, 2],
                "segmentation": [[7, 6, 9, 6, 9, 8, 7, 8]],
            },
            {
                "id": 5,
                "image_id": 3,
                "category_id": 18,
                "iscrowd": 0,
                "area": 6.0,
                "bbox": [1, 1, 2, 3],
                "segmentation": {"size": [h, w], "counts": counts},
            },
            {
                "id": 6,
                "image_id": 5,
                "category_id": 17,
                "iscrowd": 1,
                "area": 80.0,
                "bbox": [0, 0, 10, 8],
                "segmentation": encode_rle(np.ones((h, w), bool)),
            },
            {
                "id": 7,
                "image_id": 5,
                "category_id": 18,
                "iscrowd": 0,
                "area": 4.0,
                "bbox": [1, 1, 2, 2],
                "segmentation": [[1, 1, 3, 1, 3, 3, 1, 3]],
            },
            {
                "id": 8,
                "image_id": 6,
                "category_id": 17,
                "iscrowd": 1,
                "area": 80.0,
                "bbox": [0, 0, 10, 8],
                "segmentation": encode_rle(np.ones((h, w), bool)),
            },
        ],
        "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 17, "name": "cat"}],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return {"cat": cat, "dog_tri": dog_tri, "crowd": crowd, "small": small, "unc": unc, "data": data}


# ----------------------------------------------------------------------------------------------- CSV
def make_csv(root: Path) -> dict:
    """data/manifest.csv pointing to ../imgs (relative paths), names as labels, ';'-merged masks, a box
    column and split."""
    h, w = 10, 10
    d = root / "data"
    rgb(d / "imgs" / "a.png", w, h)
    rgb(d / "imgs" / "b.png", w, h)
    rgb(d / "imgs" / "sub" / "c.png", w, h)
    m1, m2 = rect(h, w, 0, 0, 3, 3), rect(h, w, 5, 5, 8, 9)
    gray_mask(d / "m" / "a1.png", m1)
    gray_mask(d / "m" / "a2.png", m2)
    (d / "manifest.csv").write_text(
        "path,label,mask_path,box,split\n"
        "imgs/a.png,zebra,m/a1.png;m/a2.png,0 0 3 3;5 5 8 9,train\n"
        "imgs/b.png,ant,,,validation\n"
        "imgs/sub/c.png,zebra,,1 2 3 4,test\n"
    )
    return {"mask_a": m1 | m2}
