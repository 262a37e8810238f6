"""Foreground masks from torchvision's Mask R-CNN (`vitlens masks`, the FAF/BAF metric of Das & Huddar 2025).

A random-init Mask R-CNN with a fixed seed stands in for the COCO weights (no download). The reference is the
torchvision model itself, built and loaded here independently, run image by image on the same pixels: the
cached PNG must be the union of its instance masks (> 0.5) with score >= the threshold, at the image's size.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import vitlens
from tests.dicom_fixtures import write_dicom
from vitlens.cli import main
from vitlens.data.foreground import (
    coco_categories,
    default_mask_dir,
    foreground_mask_path,
    generate_masks,
    load_foreground,
    run_masks,
    weights_file_name,
)
from vitlens.data.images import load_image, prepare
from vitlens.data.layouts import Dataset, open_dataset
from vitlens.errors import DataError, InputError, ModelError

MIN, MAX = 64, 96  # a small detector resize keeps each image at a fraction of a second on 2 CPU cores
SCORE = 0.5  # this seed's random-init heads score up to ~0.7; 0.5 keeps a handful (< torchvision's cap of 100)
KW = dict(min_size=MIN, max_size=MAX, device="cpu", progress=False)
V1_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A seeded random-init maskrcnn_resnet50_fpn state dict (~170 MB), once per module."""
    from safetensors.torch import save_file
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    path = tmp_path_factory.mktemp("w") / "maskrcnn_random.safetensors"
    save_file(m.state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def reference(weights):
    """The torchvision model, built and loaded without vitlens, with torchvision's default score filter."""
    from safetensors.torch import load_file
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    m = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=MIN, max_size=MAX)
    m.load_state_dict(load_file(str(weights)))
    return m.eval()


def ref_output(reference, path):
    x = torch.from_numpy(np.asarray(load_image(path)).copy()).permute(2, 0, 1).float() / 255.0
    with torch.no_grad():
        return reference([x])[0]


def ref_union(out, shape, score=SCORE, labels=None):
    keep = out["scores"] >= score
    if labels is not None:
        keep &= torch.isin(out["labels"], torch.tensor(labels))
    soft = out["masks"][keep, 0]
    union = (soft > 0.5).any(0).numpy() if len(soft) else np.zeros(shape, bool)
    # pixels where a kept instance's probability is within 1e-4 of 0.5 may flip with float rounding (batching)
    unsure = ((soft - 0.5).abs() < 1e-4).any(0).numpy() if len(soft) else np.zeros(shape, bool)
    return union, unsure, keep


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Class folders: two same-size RGB images (batched together), an EXIF-rotated JPEG, 16-bit grayscale PNG,
    12-bit DICOM.
    Noise, because the random-init detector finds more instances in it than in smooth images."""
    d = tmp_path_factory.mktemp("ds")
    rng = np.random.default_rng(0)
    (d / "cats").mkdir()
    (d / "dogs").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(d / "cats" / name)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 72x50, read as 50x72
    Image.fromarray(rng.integers(0, 255, (50, 72, 3), dtype=np.uint8)).save(
        d / "dogs" / "c.jpg", exif=exif, quality=100, subsampling=0
    )
    Image.fromarray(rng.integers(0, 4000, (64, 56)).astype(np.uint16)).save(d / "dogs" / "d.png")
    write_dicom(d / "dogs" / "e.dcm", rng.integers(0, 4096, (40, 48)).astype(np.uint16), "MONOCHROME1", bits_stored=12)
    return d


@pytest.fixture(scope="module")
def refs(data_dir, reference):
    """The reference model's raw output for every image of the data set."""
    return {r.key: ref_output(reference, r.image) for r in open_dataset(data_dir).records}


@pytest.fixture(scope="module")
def first_run(data_dir, weights, tmp_path_factory):
    out = tmp_path_factory.mktemp("cache")
    res = run_masks(open_dataset(data_dir), weights, out, score_threshold=SCORE, batch_size=2, **KW)
    return res, out


# ----------------------------------------------------------------------------------------- the masks
def test_masks_are_the_union_of_the_models_instances_at_the_original_size(first_run, data_dir, refs):
    res, out = first_run
    assert (res.total, res.computed, res.reused, res.failed) == (5, 5, 0, {})
    index = json.loads((out / "index.json").read_text())
    cats = coco_categories()
    for rec in open_dataset(data_dir).records:
        png = Image.open(foreground_mask_path(out, rec.key))
        assert png.mode == "L" and set(np.unique(np.asarray(png))) <= {0, 255}
        w, h = load_image(rec.image).size
        assert png.size == (w, h)  # the original size (after EXIF rotation for c.jpg)
        ref = refs[rec.key]
        union, unsure, keep = ref_union(ref, (h, w))
        mask = load_foreground(out, rec.key)
        assert mask.dtype == bool and mask.shape == (h, w)
        assert np.array_equal(mask[~unsure], union[~unsure]), rec.key
        assert unsure.mean() < 0.01
        entry = index["images"][rec.key]
        assert entry["instances"] == int(keep.sum()) < 100
        np.testing.assert_allclose(entry["scores"], ref["scores"][keep].numpy(), atol=1e-4)
        assert entry["labels"] == [cats[int(i)] for i in ref["labels"][keep]]
        assert entry["size"] == [w, h]
        assert entry["instances"] > 0 and 0 < union.mean() < 1  # real instance masks are compared, not empty ones
    assert load_image(data_dir / "dogs" / "c.jpg").size == (50, 72)
    assert load_image(data_dir / "dogs" / "e.dcm").size == (48, 40)
    s = index["settings"]
    assert (s["arch"], s["score_threshold"], s["min_size"], s["max_size"]) == ("maskrcnn_resnet50_fpn", SCORE, MIN, MAX)
    assert len(s["weights_sha256"]) == 64 and s["classes"] is None and s["class_map"] is None
    assert index["info"]["weights_are_torchvision_release"] is False  # sha256 prefix is not bf2d0c1e


def test_class_filter_keeps_only_those_categories(data_dir, weights, refs, tmp_path):
    ds = open_dataset(data_dir)
    cats = coco_categories()
    counts: dict[int, int] = {}
    for ref in refs.values():
        for lab in ref["labels"][ref["scores"] >= SCORE].tolist():
            if cats[lab] != "N/A":
                counts[lab] = counts.get(lab, 0) + 1
    label = max(counts, key=counts.get)  # a category the model really outputs, so the filter has work to do
    res = run_masks(ds, weights, tmp_path, score_threshold=SCORE, classes=cats[label], **KW)
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["settings"]["classes"] == [cats[label]]
    for rec in ds.records:
        w, h = load_image(rec.image).size
        union, unsure, keep = ref_union(refs[rec.key], (h, w), labels=[label])
        mask = load_foreground(tmp_path, rec.key)
        assert np.array_equal(mask[~unsure], union[~unsure])
        assert index["images"][rec.key]["labels"] == [cats[label]] * int(keep.sum())
    assert res.computed == 5
    with pytest.raises(InputError, match=r"'dgo' is not a COCO category.*did you mean dog"):
        run_masks(ds, weights, tmp_path / "x", classes="person,dgo", **KW)


def test_class_map_follows_the_classifier_prediction(data_dir, weights, refs, tmp_path):
    ds = open_dataset(data_dir)
    names = [f"class{i}" for i in range(10)]
    model = vitlens.load_model("timm:test_vit", seed=0, num_classes=10, class_names=names)
    preds = {}
    for rec in ds.records:
        x = prepare(load_image(rec.image), model.preprocessing).tensor[None]
        preds[rec.key] = int(model.logits(x).argmax())
    cats = coco_categories()

    def valid_labels(key):
        r = refs[key]
        return [cats[int(v)] for v in r["labels"][r["scores"] >= SCORE] if cats[int(v)] != "N/A"]

    # map the prediction of the image with the most instances (by name) to its two most frequent categories,
    # and (by index) a class no image is predicted as
    mapped_key = max(refs, key=lambda k: len(valid_labels(k)))
    mapped_class = preds[mapped_key]
    top = sorted(set(valid_labels(mapped_key)), key=lambda n: -valid_labels(mapped_key).count(n))[:2]
    unused = next(i for i in range(10) if i not in preds.values())
    cmap = {names[mapped_class]: top, str(unused): ["person"]}
    res = run_masks(ds, weights, tmp_path, score_threshold=SCORE, model=model, class_map=cmap, **KW)
    index = json.loads((tmp_path / "index.json").read_text())
    for rec in ds.records:
        entry = index["images"][rec.key]
        assert entry["predicted"] == {"index": preds[rec.key], "name": names[preds[rec.key]]}
        w, h = load_image(rec.image).size
        if preds[rec.key] == mapped_class:
            assert entry["mapped"] is True
            union, unsure, keep = ref_union(refs[rec.key], (h, w), labels=[cats.index(n) for n in top])
            assert entry["instances"] == int(keep.sum())
        else:
            assert entry["mapped"] is False
            union, unsure = np.zeros((h, w), bool), np.zeros((h, w), bool)
        assert np.array_equal(load_foreground(tmp_path, rec.key)[~unsure], union[~unsure])
    assert res.computed == 5
    assert set(index["images"][mapped_key]["labels"]) == set(top)  # a non-empty mapped mask was compared
    s = index["settings"]
    assert s["class_map"] == {str(mapped_class): sorted(top), str(unused): ["person"]}
    assert len(s["model"]["weights_fingerprint"]) == 64

    # a prediction without an entry in the map: an empty mask, recorded as unmapped
    one = Dataset(ds.root, ds.layout, ds.classes, [r for r in ds.records if r.key == mapped_key])
    run_masks(
        one, weights, tmp_path / "unmapped", score_threshold=SCORE, model=model, class_map={str(unused): top}, **KW
    )
    entry = json.loads((tmp_path / "unmapped" / "index.json").read_text())["images"][mapped_key]
    assert entry["mapped"] is False and entry["instances"] == 0
    assert not load_foreground(tmp_path / "unmapped", mapped_key).any()

    # the same map with other classifier weights is other settings
    other = vitlens.load_model("timm:test_vit", seed=1, num_classes=10, class_names=names)
    with pytest.raises(DataError, match="model"):
        run_masks(ds, weights, tmp_path, score_threshold=SCORE, model=other, class_map=cmap, **KW)
    with pytest.raises(InputError, match=r"'clas0' is neither a class name.*did you mean class0"):
        run_masks(ds, weights, tmp_path / "y", model=model, class_map={"clas0": ["cat"]}, **KW)
    with pytest.raises(InputError, match="out of range"):
        run_masks(ds, weights, tmp_path / "y", model=model, class_map={"17": ["cat"]}, **KW)
    with pytest.raises(InputError, match="either --classes or --model"):
        run_masks(ds, weights, tmp_path / "y", model=model, class_map=cmap, classes="cat", **KW)
    # ImageNet-style names: one synonym is enough when it names one class
    from vitlens.data.foreground import _resolve_class_map

    inet = vitlens.load_model(
        "timm:test_vit", seed=0, num_classes=3, class_names=["tench, Tinca tinca", "crane, bird", "crane, derrick"]
    )
    assert _resolve_class_map({"tench": "person", "2": ["truck", "car"]}, inet, "maskrcnn_resnet50_fpn") == {
        0: ["person"],
        2: ["car", "truck"],
    }
    with pytest.raises(InputError, match="'crane' names several classes"):
        run_masks(ds, weights, tmp_path / "y", model=inet, class_map={"crane": ["bird"]}, **KW)
    cmap_file = tmp_path / "map.json"
    cmap_file.write_text("{not json")
    with pytest.raises(InputError, match=r"map\.json: not valid JSON"):
        run_masks(ds, weights, tmp_path / "y", model=inet, class_map=cmap_file, **KW)
    assert not (tmp_path / "y").exists()  # refused before any work


# ------------------------------------------------------------------------------------------- the cache
def _mtimes(out, keys):
    return {k: foreground_mask_path(out, k).stat().st_mtime_ns for k in keys}


def test_resume_after_a_partial_run_and_reuse(data_dir, weights, tmp_path):
    ds = open_dataset(data_dir)
    keys = [r.key for r in ds.records]
    part = Dataset(ds.root, ds.layout, ds.classes, ds.records[:2])
    r1 = run_masks(part, weights, tmp_path, score_threshold=SCORE, **KW)
    assert (r1.computed, r1.reused) == (2, 0)
    before = _mtimes(tmp_path, keys[:2])
    r2 = run_masks(ds, weights, tmp_path, score_threshold=SCORE, **KW)
    assert (r2.computed, r2.reused) == (3, 2)
    assert _mtimes(tmp_path, keys[:2]) == before  # the first two were not rewritten
    all_before = _mtimes(tmp_path, keys)
    index_before = json.loads((tmp_path / "index.json").read_text())["images"]
    r3 = run_masks(ds, weights, tmp_path, score_threshold=SCORE, **KW)
    assert (r3.computed, r3.reused) == (0, 5)
    assert _mtimes(tmp_path, keys) == all_before
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["images"] == index_before and index["last_run"]["computed"] == 0

    # a kill between writing a PNG and the index: the entry is missing, the image is recomputed
    del index["images"][keys[0]]
    (tmp_path / "index.json").write_text(json.dumps(index))
    foreground_mask_path(tmp_path, keys[1]).unlink()  # a deleted mask is recomputed too
    r4 = run_masks(ds, weights, tmp_path, score_threshold=SCORE, **KW)
    assert (r4.computed, r4.reused) == (2, 3)
    # a changed image is recomputed; a copied (same bytes, new mtime) one is not
    img = data_dir / "cats" / "b.png"
    os.utime(img, ns=(img.stat().st_atime_ns, img.stat().st_mtime_ns + 10**9))
    r5 = run_masks(ds, weights, tmp_path, score_threshold=SCORE, **KW)
    assert (r5.computed, r5.reused) == (0, 5)


def test_other_settings_are_refused_unless_overwrite(data_dir, weights, tmp_path):
    full = open_dataset(data_dir)
    ds = Dataset(full.root, full.layout, full.classes, full.records[3:])
    run_masks(ds, weights, tmp_path, score_threshold=SCORE, **KW)
    with pytest.raises(DataError, match=r"other settings \(score_threshold: 0.5 there vs 0.55 now\).*--overwrite"):
        run_masks(ds, weights, tmp_path, score_threshold=0.55, **KW)
    with pytest.raises(DataError, match="min_size: 64 there vs 72 now"):
        run_masks(ds, weights, tmp_path, score_threshold=SCORE, **{**KW, "min_size": 72})
    res = run_masks(ds, weights, tmp_path, score_threshold=0.55, overwrite=True, **KW)
    assert res.computed == 2
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["settings"]["score_threshold"] == 0.55
    assert all(all(s >= 0.55 for s in e["scores"]) for e in index["images"].values())
    # generate_masks (the plan's API) returns the directory; the default lives inside the data set
    assert generate_masks(ds, weights, tmp_path, score_threshold=0.55, **KW) == tmp_path
    assert default_mask_dir(data_dir) == data_dir / ".vitlens" / "masks" / "maskrcnn"
    assert load_foreground(tmp_path, "cats/nope.png") is None
    assert load_foreground(tmp_path / "empty", "cats/a.png") is None


# --------------------------------------------------------------------------------------------- errors
def test_missing_and_wrong_weights_name_torchvisions_file(data_dir, weights, tmp_path):
    ds = open_dataset(data_dir)
    assert weights_file_name() == V1_FILE
    assert weights_file_name("maskrcnn_resnet50_fpn_v2") == "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"
    with pytest.raises(ModelError, match=rf"nope.pth: no such file.*{V1_FILE}.*--weights PATH, or put it at "):
        run_masks(ds, tmp_path / "nope.pth", tmp_path / "o", **KW)
    bad = tmp_path / V1_FILE
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(ModelError, match=rf"cannot be read.*needs torchvision's COCO weights file {V1_FILE}"):
        run_masks(ds, bad, tmp_path / "o", **KW)
    from safetensors.torch import save_file
    from torchvision.models import resnet18

    wrong = tmp_path / "resnet18.safetensors"
    save_file(resnet18().state_dict(), str(wrong))
    with pytest.raises(ModelError, match=rf"does not match the model.*{V1_FILE}"):
        run_masks(ds, wrong, tmp_path / "o", **KW)
    assert not (tmp_path / "o").exists()  # nothing written when the detector cannot be built
    with pytest.raises(ModelError, match=r"does not match the model.*--arch maskrcnn_resnet50_fpn_v2 needs"):
        run_masks(ds, weights, tmp_path / "v2", arch="maskrcnn_resnet50_fpn_v2", **KW)
    with pytest.raises(InputError, match="score threshold"):
        run_masks(ds, weights, tmp_path / "o", score_threshold=1.5, **KW)


def test_unreadable_image_is_recorded_and_retried(data_dir, weights, tmp_path):
    import shutil

    d = tmp_path / "ds"
    (d / "dogs").mkdir(parents=True)
    shutil.copy(data_dir / "dogs" / "d.png", d / "dogs")
    (d / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.warns(UserWarning, match="1 image"):
        res = run_masks(open_dataset(d), weights, tmp_path / "o", score_threshold=SCORE, **KW)
    assert (res.computed, list(res.failed)) == (1, ["dogs/broken.png"])
    assert "cannot be read" in res.failed["dogs/broken.png"]
    assert load_foreground(tmp_path / "o", "dogs/broken.png") is None
    with pytest.warns(UserWarning):
        res = run_masks(open_dataset(d), weights, tmp_path / "o", score_threshold=SCORE, **KW)
    assert (res.computed, res.reused, len(res.failed)) == (0, 1, 1)  # tried again, still broken
    # two images whose mask files would collide
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "dogs" / "d.jpg")
    with pytest.raises(DataError, match=r"'dogs/d\.(jpg|png)' and 'dogs/d\.(jpg|png)' would share the mask file"):
        run_masks(open_dataset(d), weights, tmp_path / "o", score_threshold=SCORE, **KW)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_exit_codes_and_pth_weights(data_dir, weights, first_run, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file

    pth = tmp_path / V1_FILE  # the name and format of torchvision's own file (torch.save, weights_only-loadable)
    torch.save(load_file(str(weights)), pth)
    d = tmp_path / "ds"
    for key in ("cats/a.png", "dogs/c.jpg"):
        (d / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data_dir / key, d / key)
    out = tmp_path / "cache"
    args = [
        "masks",
        str(d),
        "--weights",
        str(pth),
        "--score",
        str(SCORE),
        "--min-size",
        str(MIN),
        "--max-size",
        str(MAX),
        "--device",
        "cpu",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    assert "2 images: 2 computed, 0 reused, 0 unreadable" in capsys.readouterr().out
    for key in ("cats/a.png", "dogs/c.jpg"):  # the same masks as the Python API (there batched by 2)
        a, b = load_foreground(out, key), load_foreground(first_run[1], key)
        assert a.shape == b.shape and (a != b).mean() < 1e-3
    assert main(args) == 0
    assert "0 computed, 2 reused" in capsys.readouterr().out
    (d / "dogs" / "broken.png").write_bytes(b"not an image")
    assert main(args) == 1  # some images unreadable: each named on stderr, the others done
    cap = capsys.readouterr()
    assert "3 images: 0 computed, 2 reused, 1 unreadable" in cap.out
    assert "vitlens: warning: dogs/broken.png: image" in cap.err
    assert main([*args[:-1], "--score", "0.55"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main(["masks", str(d), "--weights", str(tmp_path / "missing.pth"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vitlens: error: ") and V1_FILE in err and err.count("\n") == 1
    assert main(["masks", str(d), "--weights", str(pth), "--class-map", "m.json", "--out", str(out)]) == 2
    assert "--model and --class-map go together" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["masks", str(d), "--arch", "maskrcnn_resnet101"])
    assert e.value.code == 2

    # --model SPEC --class-map FILE: the CLI's seeded random-init classifier, ImageNet names as keys
    (d / "dogs" / "broken.png").unlink()
    model = vitlens.load_model("timm:test_vit", seed=3)
    preds = {
        k: int(model.logits(prepare(load_image(d / k), model.preprocessing).tensor[None]).argmax())
        for k in ("cats/a.png", "dogs/c.jpg")
    }
    cmap = tmp_path / "map.json"
    cmap.write_text(json.dumps({model.class_names[preds["cats/a.png"]]: ["zebra", "bear"]}))
    out2 = tmp_path / "cache2"
    extra = ["--model", "timm:test_vit", "--seed", "3", "--class-map", str(cmap)]
    assert main([*args[:-3], "--out", str(out2), *extra]) == 0
    index = json.loads((out2 / "index.json").read_text())
    assert index["settings"]["model"]["name"] == "timm:test_vit"
    assert index["settings"]["class_map"] == {str(preds["cats/a.png"]): ["bear", "zebra"]}
    unfiltered = json.loads((first_run[1] / "index.json").read_text())["images"]
    for key, pred in preds.items():
        entry = index["images"][key]
        assert entry["predicted"]["index"] == pred and entry["mapped"] == (pred == preds["cats/a.png"])
        want = [n for n in unfiltered[key]["labels"] if n in ("bear", "zebra")] if entry["mapped"] else []
        assert entry["labels"] == want
    assert index["images"]["cats/a.png"]["labels"]  # the mapped image kept instances


# ------------------------------------------------------------------------------------------ study runner
def test_a_copied_data_set_reuses_its_cache_and_the_study_runner_reads_it(data_dir, weights, first_run, tmp_path):
    import shutil

    from vitlens.bench.config import parse_config
    from vitlens.bench.runner import run_study
    from vitlens.bench.sources import DiskSource
    from vitlens.bench.store import ResultsStore
    from vitlens.data.geometry import transform_mask

    d = tmp_path / "ds"
    shutil.copytree(data_dir, d, copy_function=shutil.copy)  # new mtimes, same bytes
    shutil.copytree(first_run[1], default_mask_dir(d))
    res = run_masks(open_dataset(d), weights, None, score_threshold=SCORE, **KW)  # default cache dir
    assert (res.out_dir, res.computed, res.reused) == (default_mask_dir(d), 0, 5)  # by sha256

    ds_cfg = {"name": "fg", "path": str(d), "split": "all", "labels": "ignore", "models": ["timm:test_vit"]}
    cfg = parse_config(
        {
            "name": "fg",
            "seed": 0,
            "batch_size": 5,
            "datasets": [ds_cfg],
            "explainers": ["rollout"],
            "metrics": [{"name": "faf_baf", "mask": "foreground"}],
        }
    )
    model = vitlens.load_model("timm:test_vit", seed=0)
    src = DiskSource(cfg.datasets[0])
    batch = src.batch(src.ids(), 0, model)
    for i, key in enumerate(batch.keys):
        prep = prepare(load_image(d / key), model.preprocessing)
        assert np.array_equal(
            batch.masks["foreground"][i].numpy(),
            transform_mask(load_foreground(d / ".vitlens" / "masks" / "maskrcnn", key), prep),
        )
    run_study(cfg, tmp_path / "run", progress=False)
    df = ResultsStore(tmp_path / "run").frame()
    faf = df[(df.metric_key == "faf_baf[foreground]") & (df.output == "score")]
    assert len(faf) == 5 and ((faf.value > 0) & (faf.value < 1)).all()
