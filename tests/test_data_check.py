"""`vitlens data check` finds every injected problem in one pass, with the right severity and exit code."""

from __future__ import annotations

import json

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from tests.layout_fixtures import gray_mask, make_busi, make_coco, rect, rgb
from vitlens.cli import main
from vitlens.data import check_dataset
from vitlens.data.export import export_dataset


def _found(problems) -> set[tuple[str, str]]:
    return {(p.severity, p.where) for p in problems}


def _has(problems, severity: str, where: str, text: str) -> bool:
    return any(p.severity == severity and p.where == where and text in p.message for p in problems)


def _broken_csv(root):
    """A manifest with one injected problem per row (image 10x10 unless said otherwise)."""
    for name in (
        "ok1",
        "ok2",
        "ok3",
        "nomask",
        "bigmask",
        "badmask",
        "emptymask",
        "degenerate",
        "outside",
        "partial",
        "unlabelled",
        "typo",
        "normal",
        "d1",
    ):
        rgb(root / f"{name}.png", 10, 10)
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    gray_mask(root / "m_ok.png", rect(10, 10, 1, 1, 4, 4))
    gray_mask(root / "m_big.png", rect(12, 10, 1, 1, 4, 4))
    (root / "m_bad.png").write_bytes(b"garbage")
    gray_mask(root / "m_empty.png", np.zeros((10, 10), bool))
    (root / "manifest.csv").write_text(
        "path,label,mask_path,x0,y0,x1,y1\n"
        "ok1.png,cat,m_ok.png,1,1,4,4\n"
        "ok2.png,cat,,,,,\n"
        "ok3.png,cat,,,,,\n"
        "corrupt.png,cat,,,,,\n"
        "gone.png,cat,,,,,\n"
        "nomask.png,cat,missing_mask.png,,,,\n"
        "bigmask.png,cat,m_big.png,,,,\n"
        "badmask.png,cat,m_bad.png,,,,\n"
        "emptymask.png,cat,m_empty.png,,,,\n"
        "degenerate.png,dog,,5,5,5,8\n"
        "outside.png,dog,,20,20,30,30\n"
        "partial.png,dog,,8,8,12,12\n"
        "unlabelled.png,,,,,,\n"
        "ok1.png,cat,,,,,\n"
        "typo.png,cta,,,,,\n"
        "normal.png,normal,m_empty.png,,,,\n"
        "d1.png,dog,,1,1,2,2\n"
    )


EXPECTED_CSV = {
    ("error", "corrupt.png", "cannot be read as an image"),
    ("error", "gone.png", "no such file"),
    ("error", "nomask.png", "missing_mask.png does not exist"),
    ("error", "bigmask.png", "10x12 but its image is 10x10"),
    ("error", "badmask.png", "cannot be read"),
    ("warning", "emptymask.png", "empty mask"),
    ("error", "degenerate.png", "degenerate"),
    ("error", "outside.png", "wholly outside"),
    ("warning", "partial.png", "extends outside"),
    ("warning", "unlabelled.png", "no label"),
    ("error", "ok1.png", "2 records have this key"),
    ("error", "manifest.csv:16", "unknown label 'cta'"),
    ("warning", "typo.png", "no label"),
    ("warning", "class 'bird'", "empty class"),
    ("warning", "class 'normal'", "only 1 image"),
}


def test_check_finds_every_csv_problem_in_one_pass(tmp_path):
    _broken_csv(tmp_path)
    res = check_dataset(tmp_path, classes="cat,dog,normal,bird")
    for sev, where, text in EXPECTED_CSV:
        assert _has(res, sev, where, text), (sev, where, text, [str(p) for p in res])
    assert len(res) == len(EXPECTED_CSV)  # nothing else: the good rows, the normal empty mask are fine
    assert not _has(res, "warning", "normal.png", "empty mask")
    s = res.summary
    assert s["layout"] == "csv" and s["images"] == 17 and s["readable_images"] == 15
    assert s["classes"] == {"cat": 10, "dog": 4, "normal": 1, "bird": 0}
    assert s["masks"] == 6 and s["boxes"] == 5 and s["unlabelled"] == 2
    assert s["errors"] == 9 and s["warnings"] == 6


def test_cli_data_check_exit_codes(tmp_path, capsys):
    _broken_csv(tmp_path / "bad")
    code = main(["data", "check", str(tmp_path / "bad"), "--layout", "csv", "--option", "classes=cat,dog,normal,bird"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    problem_lines = [line for line in out if line.startswith(("error: ", "warning: "))]
    assert len(problem_lines) == len(EXPECTED_CSV)
    assert "error: gone.png: image" in "\n".join(problem_lines)
    assert any(line.startswith("layout: csv") for line in out) and out[-1] == "9 error(s), 6 warning(s)"

    export_dataset("ultrasound", 24, tmp_path / "good", seed=0)
    assert main(["data", "check", str(tmp_path / "good")]) == 0
    out = capsys.readouterr().out
    assert "error:" not in out and "warning:" not in out  # normal images' empty masks are expected
    assert "masks: 24 of 24 images" in out and "classes: 3 (normal" in out

    warn = tmp_path / "warn"  # warnings only -> 0
    for i in range(2):
        rgb(warn / "a" / f"{i}.png", 4, 4)
    for i in range(3):
        rgb(warn / "b" / f"{i}.png", 4, 4)
    assert main(["data", "check", str(warn)]) == 0
    assert "warning: class 'a': only 2 image(s)" in capsys.readouterr().out

    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["data", "check", str(warn), "--option", "nokey"]) == 2
    assert main(["data", "check", str(warn), "--layout", "nolayout"]) == 2


def test_check_coco_annotations_of_missing_images(tmp_path):
    make_coco(tmp_path, lambda m: {})  # the crowd RLE is replaced below
    path = tmp_path / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"].append({"id": 99, "image_id": 77, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1.0})
    data["annotations"].append({"id": 98, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1], "area": 1.0})
    data["annotations"][0]["bbox"] = [2, 1, 0, 4]  # the cat of image 1: zero width
    data["annotations"][2]["segmentation"] = {"size": [8, 10], "counts": [3, 2]}  # the crowd of image 2
    path.write_text(json.dumps(data))
    (tmp_path / "val2017" / "000000000003.jpg").unlink()  # listed in images, not on disk
    res = check_dataset(tmp_path)
    assert _has(res, "error", "instances_val2017.json: annotation 99", "image id 77, which is not in 'images'")
    assert _has(res, "error", "instances_val2017.json: annotation 98", "category_id 5")
    assert _has(res, "error", "val2017/000000000003.jpg", "no such file")
    assert _has(res, "error", "val2017/000000000001.jpg", "degenerate")
    # an RLE whose counts do not cover the image is reported, not decoded into garbage
    assert _has(res, "error", "val2017/000000000002.jpg", "bad segmentation (RLE counts sum to 5, not 8x10 = 80)")
    assert main(["data", "check", str(path)]) == 1


def test_check_busi_empty_masks_and_mask_sizes(tmp_path, capsys):
    make_busi(tmp_path)
    gray_mask(tmp_path / "benign" / "benign (2)_mask.png", np.zeros((12, 16), bool))  # lesion mask emptied
    gray_mask(tmp_path / "malignant" / "malignant (1)_mask_1.png", np.ones((6, 8), bool))  # a second, small mask
    res = check_dataset(tmp_path)
    assert _found(res) == {
        ("warning", "benign/benign (2).png"),
        ("error", "malignant/malignant (1).png"),
        ("warning", "class 'benign'"),
        ("warning", "class 'normal'"),
    }
    assert _has(res, "error", "malignant/malignant (1).png", "8x6 but its image is 16x12")
    assert _has(res, "warning", "benign/benign (2).png", "empty mask")
    assert res.summary["classes"] == {"benign": 2, "malignant": 3, "normal": 1}
    assert main(["data", "check", str(tmp_path)]) == 1


def _write_dicom(path, arr: np.ndarray) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = arr.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_check_decodes_dicom_and_16bit_images(tmp_path):
    """Images are decoded with load_image: DICOM and 16-bit PNG are fine, a broken DICOM is an error, and a
    mask is compared with the DICOM's size (Columns x Rows)."""
    scan = (np.arange(6 * 9).reshape(6, 9) * 70).astype(np.uint16)  # 12-bit values, 9 wide, 6 high
    _write_dicom(tmp_path / "scans" / "s1.dcm", scan)
    _write_dicom(tmp_path / "scans" / "s2.dcm", scan)
    Image.fromarray(scan).save(tmp_path / "scans" / "s3.png")  # 16-bit PNG
    (tmp_path / "scans" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 40)
    gray_mask(tmp_path / "m1.png", rect(6, 9, 2, 1, 5, 4))
    gray_mask(tmp_path / "m2.png", rect(9, 6, 2, 1, 5, 4))  # transposed: the wrong size
    (tmp_path / "manifest.csv").write_text(
        "path,label,mask_path\nscans/s1.dcm,lesion,m1.png\nscans/s2.dcm,lesion,m2.png\n"
        "scans/s3.png,lesion,m1.png\nscans/broken.dcm,lesion,\n"
    )
    res = check_dataset(tmp_path)
    assert _found(res) == {("error", "scans/s2.dcm"), ("error", "scans/broken.dcm")}
    assert _has(res, "error", "scans/s2.dcm", "6x9 but its image is 9x6")
    assert res.summary["readable_images"] == 3
