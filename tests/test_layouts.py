"""Dataset layouts read without conversion: records, labels, classes, boxes and masks against hand-written
fixtures (tests/layout_fixtures.py), layout detection, splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from tests.layout_fixtures import make_busi, make_coco, make_csv, make_kvasir, make_voc, rect, rgb
from vitlens.data import Dataset, FileMask, Record, detect_layout, open_dataset
from vitlens.data.export import export_dataset
from vitlens.data.readers import VOC_CLASSES, CocoMask
from vitlens.data.synthetic import get_benchmark
from vitlens.errors import DataError


def _encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}  # as COCO JSON stores it


def _by_key(ds: Dataset) -> dict[str, Record]:
    return {r.key: r for r in ds.records}


def _mask(rec: Record) -> np.ndarray:
    w, h = Image.open(rec.image).size
    return rec.mask.load((w, h))


# ------------------------------------------------------------------------------------------- BUSI
def test_busi_merges_masks_and_skips_mask_files(tmp_path):
    truth = make_busi(tmp_path)
    assert detect_layout(tmp_path) == "busi"
    ds = open_dataset(tmp_path)
    assert ds.layout == "busi" and ds.classes == ["benign", "malignant", "normal"]
    recs = _by_key(ds)
    assert sorted(recs) == sorted(truth)  # mask files are not records
    assert not any("_mask" in k for k in recs)
    for key, (cls, mask) in truth.items():
        assert ds.classes[recs[key].label] == cls
        np.testing.assert_array_equal(_mask(recs[key]), mask)
    assert len(recs["benign/benign (1).png"].mask.paths) == 2
    assert _mask(recs["benign/benign (1).png"]).sum() == 9 + 12  # the two lesions together
    assert not _mask(recs["normal/normal (1).png"]).any()
    assert ds.has_masks() and not ds.has_boxes()


def test_busi_image_without_mask_keeps_no_mask_and_warns(tmp_path):
    make_busi(tmp_path)
    (tmp_path / "malignant" / "malignant (2)_mask.png").unlink()
    rgb(tmp_path / "benign" / "ghost (9)_mask.png", 16, 12)  # a mask of no image
    ds = open_dataset(tmp_path)  # warnings only: strict does not raise
    assert _by_key(ds)["malignant/malignant (2).png"].mask is None
    probs = {(p.severity, p.where) for p in ds.info["problems"]}
    assert ("warning", "malignant/malignant (2).png") in probs
    assert ("warning", "benign/ghost (9)_mask.png") in probs


# ------------------------------------------------------------------------------------------- Kvasir
def test_kvasir_images_masks_and_boxes(tmp_path):
    truth = make_kvasir(tmp_path)
    assert detect_layout(tmp_path) == "kvasir"
    ds = open_dataset(tmp_path)
    assert ds.classes == ["polyp"] and len(ds) == 3
    for key, (mask, box) in truth.items():
        rec = _by_key(ds)[key]
        assert rec.label == 0 and rec.boxes == (box,)
        got = _mask(rec)
        # JPEG masks: the reader thresholds at 127, so lossy ringing does not become foreground
        raw = np.asarray(Image.open(rec.mask.paths[0]).convert("L"))
        assert ((raw > 0) & ~mask).any(), "fixture should have JPEG noise in the background"
        np.testing.assert_array_equal(got, mask)


# ------------------------------------------------------------------------------------------- VOC
def test_voc_labels_masks_boxes_split(tmp_path):
    truth = make_voc(tmp_path)
    for path in (tmp_path, tmp_path / "VOCdevkit", tmp_path / "VOCdevkit" / "VOC2012"):
        assert detect_layout(path) == "voc"
    ds = open_dataset(tmp_path)
    assert ds.classes == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    assert ds.classes[0] == "aeroplane" and ds.classes[14] == "person" and ds.classes[19] == "tvmonitor"
    recs = _by_key(ds)
    base = "VOCdevkit/VOC2012/JPEGImages/"
    assert sorted(recs) == [base + f"2008_00000{i}.jpg" for i in (1, 2, 3)]  # segmentation images only
    a, b, c = (recs[base + f"2008_00000{i}.jpg"] for i in (1, 2, 3))
    assert (a.label, b.label, c.label) == (14, 0, 1)  # person (most pixels), aeroplane, bicycle (9 > 8 car)
    # 1-based inclusive XML corners -> 0-based end-exclusive; the difficult person box is left out
    assert a.boxes == ((2.0, 2.0, 6.0, 5.0),)
    assert b.boxes == ((0.0, 0.0, 3.0, 2.0),)
    assert c.boxes == ((0.0, 0.0, 3.0, 3.0),)
    np.testing.assert_array_equal(_mask(a), truth["A"])  # the 255 border is not foreground
    assert _mask(a).sum() == 12
    np.testing.assert_array_equal(_mask(b), truth["B"])
    np.testing.assert_array_equal(_mask(c), truth["C"])
    assert isinstance(a.mask, FileMask) and a.mask.values == (15,) and a.mask.ignore == (255,)
    assert (a.split, b.split, c.split) == ("train", "val", "val")
    assert [r.key for r in ds.split("val")] == [b.key, c.key]
    assert ds.split("test") == []
    with_difficult = _by_key(open_dataset(tmp_path, difficult=True))[a.key]
    assert with_difficult.boxes == ((2.0, 2.0, 6.0, 5.0), (0.0, 0.0, 12.0, 10.0))


def test_voc_all_images_label_from_box_area(tmp_path):
    make_voc(tmp_path)
    ds = open_dataset(tmp_path / "VOCdevkit" / "VOC2012", images="all")
    recs = _by_key(ds)
    assert len(recs) == 4
    d = recs["JPEGImages/2008_000004.jpg"]
    assert d.label == VOC_CLASSES.index("cat") and d.mask is None  # cat box 9x8 > dog box 3x3
    assert d.boxes == ((1.0, 1.0, 10.0, 9.0),)
    assert recs["JPEGImages/2008_000001.jpg"].label == 14  # a segmentation still decides where there is one
    assert all(r.split is None for r in ds.records)  # no ImageSets/Main


# ------------------------------------------------------------------------------------------- COCO
def test_coco_polygons_rle_crowd_labels_and_boxes(tmp_path):
    t = make_coco(tmp_path, _encode)
    assert detect_layout(tmp_path) == "coco"
    assert detect_layout(tmp_path / "annotations" / "instances_val2017.json") == "coco"
    ds = open_dataset(tmp_path)
    assert ds.classes == ["person", "cat", "dog"]  # categories in id order (1, 17, 18)
    recs = _by_key(ds)
    assert sorted(recs) == [f"val2017/{i:012d}.jpg" for i in (1, 2, 3, 5, 6)]  # image 4 has no annotation
    r1, r2, r3 = (recs[f"val2017/{i:012d}.jpg"] for i in (1, 2, 3))
    assert (r1.label, r2.label, r3.label) == (1, 0, 2)
    assert isinstance(r1.mask, CocoMask)
    # hand-drawn expectations, not pycocotools' own annToMask
    np.testing.assert_array_equal(_mask(r1), t["cat"])
    assert r1.boxes == ((2.0, 1.0, 7.0, 5.0),)
    # the label is person from the non-crowd instance; the mask is the union with the crowd region
    np.testing.assert_array_equal(_mask(r2), t["crowd"] | t["small"])
    assert r2.boxes == ((0.0, 0.0, 5.0, 8.0), (7.0, 6.0, 9.0, 8.0))
    np.testing.assert_array_equal(_mask(r3), t["unc"])
    assert r3.boxes == ((1.0, 1.0, 3.0, 4.0),)
    r5, r6 = recs["val2017/000000000005.jpg"], recs["val2017/000000000006.jpg"]
    assert r5.label == 2 and r5.boxes == ((1.0, 1.0, 3.0, 3.0),)  # the small dog, not the big crowd of cats
    np.testing.assert_array_equal(_mask(r5), rect(8, 10, 1, 1, 3, 3))
    assert r6.label == 1 and _mask(r6).all() and r6.boxes == ((0.0, 0.0, 10.0, 8.0),)  # only a crowd: it
    # the triangle: dog is not the label of image 1, so read it alone through the same class
    tri = CocoMask(([[0, 0, 8, 0, 0, 4]],), 8, 10, "triangle")
    np.testing.assert_array_equal(tri.load((10, 8)), t["dog_tri"])
    assert tri.load((10, 8)).sum() == 16

    no_crowd = _by_key(open_dataset(tmp_path, crowd=False))[r2.key]
    np.testing.assert_array_equal(_mask(no_crowd), t["small"])
    assert no_crowd.boxes == ((7.0, 6.0, 9.0, 8.0),)

    kept = _by_key(open_dataset(tmp_path, keep_unannotated=True))
    r4 = kept["val2017/000000000004.jpg"]
    assert r4.label is None and r4.mask is None and r4.boxes == ()
    assert any("1 image(s) without annotations skipped" in n for n in ds.info["notes"])


def test_coco_mask_size_mismatch_and_bad_rle(tmp_path):
    m = CocoMask(([[0, 0, 4, 0, 4, 4]],), 8, 10, "x")
    with pytest.raises(DataError, match="10x8 in the JSON but the image is 12x8"):
        m.load((12, 8))
    with pytest.raises(DataError, match="counts sum to 5"):
        CocoMask(({"size": [8, 10], "counts": [3, 2]},), 8, 10, "x").load((10, 8))
    with pytest.raises(DataError, match="at least 3"):
        CocoMask(([[0, 0, 4, 4]],), 8, 10, "x").load((10, 8))


def test_coco_several_files_need_a_choice(tmp_path):
    make_coco(tmp_path, _encode)
    src = tmp_path / "annotations" / "instances_val2017.json"
    (tmp_path / "annotations" / "instances_train2017.json").write_text(src.read_text())
    with pytest.raises(DataError, match="several COCO annotation files"):
        open_dataset(tmp_path)
    assert len(open_dataset(src)) == 5
    assert len(open_dataset(tmp_path, annotations="annotations/instances_val2017.json")) == 5


# ------------------------------------------------------------------------------------------- CSV
def test_csv_relative_paths_names_merged_masks_box_column_split(tmp_path):
    t = make_csv(tmp_path)
    d = tmp_path / "data"
    assert detect_layout(d) == "csv" and detect_layout(d / "manifest.csv") == "csv"
    ds = open_dataset(d)
    assert ds.root == d and ds.classes == ["ant", "zebra"]  # label names, sorted
    recs = _by_key(ds)
    assert sorted(recs) == ["imgs/a.png", "imgs/b.png", "imgs/sub/c.png"]
    a, b, c = recs["imgs/a.png"], recs["imgs/b.png"], recs["imgs/sub/c.png"]
    assert a.image == (d / "imgs" / "a.png").resolve()
    assert (a.label, b.label, c.label) == (1, 0, 1)
    assert a.boxes == ((0.0, 0.0, 3.0, 3.0), (5.0, 5.0, 8.0, 9.0)) and b.boxes == () and c.boxes == ((1, 2, 3, 4),)
    np.testing.assert_array_equal(_mask(a), t["mask_a"])
    assert b.mask is None
    assert (a.split, b.split, c.split) == ("train", "val", "test")
    assert ds.split("val") == [b]
    # a fixed class list: indices follow it
    ds2 = open_dataset(d, classes="zebra,ant,bee")
    assert ds2.classes == ["zebra", "ant", "bee"] and [r.label for r in ds2.records] == [0, 1, 0]


def test_csv_unknown_label_is_an_error(tmp_path):
    make_csv(tmp_path)
    with pytest.raises(DataError, match=r"unknown label 'ant'.*vitlens data check"):
        open_dataset(tmp_path / "data", classes=["zebra"])
    ds = open_dataset(tmp_path / "data", classes=["zebra"], strict=False)
    assert _by_key(ds)["imgs/b.png"].label is None


def test_csv_reads_the_export_manifest(tmp_path):
    manifest = export_dataset("ultrasound", 6, tmp_path, seed=0, split="test")
    bench = get_benchmark("ultrasound")
    rows = manifest.read_text().splitlines()
    assert rows[0].startswith("path,label,class_name,mask_path,x0,y0,x1,y1")
    assert detect_layout(tmp_path) == "csv"  # not kvasir, though it has images/ and masks/
    ds = open_dataset(tmp_path)
    assert ds.classes == list(bench.classes)  # index order of the benchmark, not sorted names
    assert [r.key for r in ds.records] == [f"images/ultrasound_test_{i:05d}.png" for i in range(6)]
    for i, rec in enumerate(ds.records):
        s = bench.sample(i, 0, "test")
        assert rec.label == s.label
        np.testing.assert_array_equal(_mask(rec), s.mask)
        assert rec.boxes == ((tuple(float(v) for v in s.bbox),) if s.bbox is not None else ())
    assert all(r.split is None for r in ds.records)


def test_csv_classes_txt_keeps_classes_absent_from_the_rows(tmp_path):
    export_dataset("cells", 4, tmp_path, seed=0)  # labels 2, 1, 2, 2: no neutrophil, no eosinophil
    assert (tmp_path / "classes.txt").read_text() == "\n".join(get_benchmark("cells").classes) + "\n"
    ds = open_dataset(tmp_path)
    assert ds.classes == ["neutrophil", "lymphocyte", "monocyte", "eosinophil"]
    assert [r.label for r in ds.records] == [2, 1, 2, 2]
    (tmp_path / "classes.txt").write_text("neutrophil\nmonocyte\nlymphocyte\neosinophil\n")  # disagrees
    with pytest.raises(DataError, match="label '2' is class 'lymphocyte' but class_name says 'monocyte'"):
        open_dataset(tmp_path)
    (tmp_path / "classes.txt").unlink()
    assert open_dataset(tmp_path).classes == ["0", "lymphocyte", "monocyte"]  # all the rows can tell


def test_csv_index_labels_with_class_names_and_conflicts(tmp_path):
    rgb(tmp_path / "x.png", 4, 4)
    (tmp_path / "labels.csv").write_text("path,label,class_name\nx.png,2,cow\nx.png,2,pig\n")
    ds = open_dataset(tmp_path / "labels.csv", strict=False)
    assert ds.classes == ["0", "1", "cow"]
    msgs = [(p.severity, p.message) for p in ds.info["problems"]]
    assert any(s == "error" and "'cow' in an earlier row but class_name 'pig'" in m for s, m in msgs)
    assert any(s == "error" and "2 records have this key" in m for s, m in msgs)


# ------------------------------------------------------------------------------------------- detection
def test_detection_does_not_confuse_layouts(tmp_path):
    folders = tmp_path / "folders"
    for cls in ("a", "b"):
        for i in range(2):
            rgb(folders / cls / f"{i}.png", 4, 4)
    assert detect_layout(folders) == "folders"
    meta = tmp_path / "meta"  # class folders plus a metadata table that is not a manifest
    for cls in ("a", "b"):
        rgb(meta / cls / "0.png", 4, 4)
    (meta / "info.csv").write_text("filename,age\na/0.png,3\n")
    assert detect_layout(meta) == "folders"
    make_busi(tmp_path / "busi")
    make_kvasir(tmp_path / "kvasir")
    make_voc(tmp_path / "voc")
    make_coco(tmp_path / "coco", _encode)
    make_csv(tmp_path / "csv")
    found = {name: detect_layout(tmp_path / name) for name in ("busi", "kvasir", "voc", "coco")}
    assert found == {"busi": "busi", "kvasir": "kvasir", "voc": "voc", "coco": "coco"}
    assert detect_layout(tmp_path / "csv" / "data") == "csv"
    assert open_dataset(folders, layout="pbc").layout == "pbc"
    with pytest.raises(DataError, match="no such directory"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown option"):
        open_dataset(folders, bogus=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="layout not recognised"):
        detect_layout(tmp_path / "empty")


def test_kavsir_json_is_not_coco(tmp_path):
    make_kvasir(tmp_path)
    assert json.loads((tmp_path / "kavsir_bboxes.json").read_text())
    assert detect_layout(tmp_path) == "kvasir"


# ------------------------------------------------------------------------------------------- splits
def test_seeded_split_when_the_layout_has_none(tmp_path):
    for cls, n in (("a", 20), ("b", 10), ("c", 2)):
        for i in range(n):
            rgb(tmp_path / cls / f"{i:02d}.png", 4, 4)
    ds = open_dataset(tmp_path)
    parts = {s: ds.split(s, seed=3) for s in ("train", "val", "test")}
    keys = [r.key for s in parts.values() for r in s]
    assert sorted(keys) == sorted(r.key for r in ds.records)  # a partition
    count = {s: [sum(r.label == k for r in recs) for k in range(3)] for s, recs in parts.items()}
    assert count["test"] == [2, 1, 0] and count["val"] == [2, 1, 0] and count["train"] == [16, 8, 2]
    assert [r.key for r in ds.split("test", seed=3)] == [r.key for r in parts["test"]]  # deterministic
    assert {r.key for r in ds.split("test", seed=4)} != {r.key for r in parts["test"]}
    with pytest.raises(DataError, match="unknown split"):
        ds.split("holdout")


def test_file_mask_values_size_and_missing(tmp_path):
    lab = np.array([[0, 1, 2], [255, 2, 2]], np.uint8)
    Image.fromarray(lab).save(tmp_path / "l.png")
    np.testing.assert_array_equal(FileMask((tmp_path / "l.png",), values=(2,)).load((3, 2)), lab == 2)
    np.testing.assert_array_equal(FileMask((tmp_path / "l.png",)).load((3, 2)), lab != 0)
    np.testing.assert_array_equal(
        FileMask((tmp_path / "l.png",), ignore=(255,)).load((3, 2)), (lab != 0) & (lab != 255)
    )
    with pytest.raises(DataError, match="3x2 but its image is 4x2"):
        FileMask((tmp_path / "l.png",)).load((4, 2))
    with pytest.raises(DataError, match="no such file"):
        FileMask((tmp_path / "nope.png",)).load((3, 2))
    assert rect(3, 3, 0, 0, 1, 1).sum() == 1
