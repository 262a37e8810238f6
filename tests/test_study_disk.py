"""Studies on data sets on disk: the same numbers as the builtin benchmark they were exported from, masks and
images through the same geometry, the label/target policies, and a refused resume when the images changed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import vitlens
from vitlens.bench.config import ConfigError, parse_config
from vitlens.bench.runner import run_study
from vitlens.bench.sources import DiskSource
from vitlens.bench.store import ResultsStore
from vitlens.data.export import export_dataset

METRICS = ["pointing_game", {"name": "iou_top_k", "params": {"k": 5}}, {"name": "deletion", "params": {"steps": 7}}]


def _cfg(dataset: dict, explainers=("rollout", "gradcam"), metrics=METRICS) -> dict:
    return {
        "name": "disk",
        "seed": 0,
        "batch_size": 2,
        "datasets": [dataset],
        "explainers": list(explainers),
        "metrics": list(metrics),
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("cells_export")
    export_dataset("cells", 4, out, seed=0, split="test")
    return out


def _values(run) -> pd.DataFrame:
    df = ResultsStore(run).frame()
    return df.sort_values(["explainer_key", "metric_key", "output", "image_id"]).reset_index(drop=True)


@pytest.mark.slow
def test_disk_study_gives_the_builtin_study_numbers(exported, tmp_path):
    """The CSV manifest `vitlens data export` writes, read back as a data set on disk, gives bit-for-bit the
    scores of the builtin benchmark it came from (same images, masks and boxes; PIL resizes 112 -> 112 as a copy)."""
    builtin = _cfg({"name": "cells", "builtin": "cells", "n": 4, "models": ["builtin:cells_vit"]})
    disk = _cfg({"name": "cells", "path": str(exported), "split": "all", "models": ["builtin:cells_vit"]})
    run_study(parse_config(builtin), tmp_path / "a", progress=False)
    run_study(parse_config(disk), tmp_path / "b", progress=False)
    a, b = _values(tmp_path / "a"), _values(tmp_path / "b")
    assert len(a) == len(b) >= 2 * 3 * 4  # explainers x metrics x images, more for metrics with extra outputs
    np.testing.assert_array_equal(a.value.to_numpy(), b.value.to_numpy())
    assert (a.true == b.true).all() and (a.predicted == b.predicted).all()
    assert list(b.image.unique()) == [f"images/cells_test_{i:05d}.png" for i in range(4)]


def _object_dataset(root, sizes=((150, 100), (90, 130), (120, 120))):
    """Class folders whose images are their own masks: a bright ellipse on black, mask = the ellipse."""
    import csv

    rows = []
    for i, (w, h) in enumerate(sizes):
        yy, xx = np.mgrid[0:h, 0:w]
        m = ((xx - 0.6 * w) / (0.25 * w)) ** 2 + ((yy - 0.4 * h) / (0.3 * h)) ** 2 <= 1
        Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).convert("RGB").save(root / f"img{i}.png")
        Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(root / f"img{i}_mask.png")
        ys, xs = np.nonzero(m)
        rows.append(
            {
                "path": f"img{i}.png",
                "label": i % 2,
                "mask_path": f"img{i}_mask.png",
                "x0": xs.min(),
                "y0": ys.min(),
                "x1": xs.max() + 1,
                "y1": ys.max() + 1,
            }
        )
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return root


def test_masks_and_boxes_follow_the_image_through_resize_and_crop(tmp_path):
    """deit_tiny's preprocessing (shorter side to 248, centre crop 224, bicubic) on images of three aspect
    ratios: the transformed mask agrees with the bright pixels of the transformed image, and the box with
    the mask's extent."""
    root = _object_dataset(tmp_path)
    model = vitlens.load_model("timm:deit_tiny_patch16_224", num_classes=2, seed=0)
    spec = parse_config(
        _cfg(
            {
                "name": "obj",
                "path": str(root),
                "split": "all",
                "labels": "ignore",
                "models": ["timm:deit_tiny_patch16_224"],
            }
        )
    ).datasets[0]
    src = DiskSource(spec)
    batch = src.batch(src.ids(), 0, model)
    assert batch.x.shape == (3, 3, 224, 224) and set(batch.masks) == {"evidence", "box"}
    for i in range(3):
        bright = batch.display[i].mean(-1) > 127
        mask = batch.masks["evidence"][i].numpy()
        assert (bright == mask).mean() > 0.99
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = batch.boxes[i].tolist()
        assert abs(x0 - xs.min()) <= 2 and abs(y0 - ys.min()) <= 2
        assert abs(x1 - xs.max() - 1) <= 2 and abs(y1 - ys.max() - 1) <= 2
        box = batch.masks["box"][i].numpy()
        assert box[mask].mean() > 0.99  # the box mask contains the object


def test_labels_and_target_policies(exported, tmp_path):
    foreign = {
        "name": "cells",
        "path": str(exported),
        "split": "all",
        "n": 2,
        "models": ["builtin:ultrasound_vit"],
    }  # 3 ultrasound classes vs 4 cell classes
    with pytest.raises(ConfigError, match="labels: ignore"):
        run_study(parse_config(_cfg(foreign, ["rollout"], ["pointing_game"])), tmp_path / "f", progress=False)
    run_study(
        parse_config(_cfg({**foreign, "labels": "ignore"}, ["rollout"], ["pointing_game"])),
        tmp_path / "g",
        progress=False,
    )
    df = ResultsStore(tmp_path / "g").frame()
    assert (df.true == -1).all() and not df.correct.any() and df.value.notna().all()

    own = {"name": "cells", "path": str(exported), "split": "all", "target": "label", "models": ["builtin:cells_vit"]}
    run_study(parse_config(_cfg(own, ["gradcam"], ["pointing_game"])), tmp_path / "t", progress=False)
    df = ResultsStore(tmp_path / "t").frame()
    assert (df.target == df.true).all()
    with pytest.raises(ConfigError, match="labels: match"):
        parse_config(_cfg({**own, "labels": "ignore"}))


def test_resume_is_refused_when_the_images_changed(exported, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(exported, data)
    cfg = parse_config(
        _cfg(
            {"name": "c", "path": str(data), "split": "all", "models": ["builtin:cells_vit"]},
            ["rollout"],
            ["pointing_game"],
        )
    )
    assert run_study(cfg, tmp_path / "run", progress=False)["computed_now"] == 2
    assert run_study(cfg, tmp_path / "run", progress=False)["computed_now"] == 0
    first = (data / "manifest.csv").read_text().splitlines()[1]
    with open(data / "manifest.csv", "a") as fh:  # one more image: the ids of the stored units would shift
        fh.write(first.replace("images/cells_test_00000.png,", "images/copy.png,") + "\n")
    shutil.copy(data / "images/cells_test_00000.png", data / "images/copy.png")
    with pytest.raises(ConfigError, match="changed"):
        run_study(cfg, tmp_path / "run", progress=False)


def test_dataset_config_errors(tmp_path):
    base = {"name": "x", "models": ["builtin:cells_vit"]}
    with pytest.raises(ConfigError, match="exactly one"):
        parse_config(_cfg({**base, "builtin": "cells", "path": str(tmp_path)}))
    with pytest.raises(ConfigError, match="split"):
        parse_config(_cfg({**base, "path": str(tmp_path), "split": "everything"}))
    with pytest.raises(ConfigError, match="target"):
        parse_config(_cfg({**base, "path": str(tmp_path), "target": "mine"}))
    cfg = parse_config(_cfg({**base, "path": str(tmp_path / "absent")}))
    with pytest.raises(vitlens.VitlensError, match="absent"):
        run_study(cfg, tmp_path / "run", progress=False)


def test_relative_paths_are_relative_to_the_config_file(exported, tmp_path, monkeypatch):
    import yaml

    from vitlens.bench.config import load_config

    cfg_file = exported.parent / "study.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg({"name": "c", "path": exported.name, "models": ["builtin:cells_vit"]})))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    assert load_config(cfg_file).datasets[0].path == str(exported.resolve())
    assert parse_config(_cfg({"name": "c", "path": "data", "models": ["m"]})).datasets[0].path == str(
        (tmp_path / "data").resolve()
    )


def test_metrics_a_data_set_cannot_score_are_named(exported, tmp_path):
    from vitlens.errors import InputWarning

    cfg = parse_config(
        _cfg(
            {"name": "c", "path": str(exported), "split": "all", "n": 2, "models": ["builtin:cells_vit"]},
            ["rollout"],
            ["pointing_game", {"name": "faf_baf", "mask": "foreground"}],
        )
    )
    with pytest.warns(InputWarning, match=r"no 'foreground' masks.*faf_baf\[foreground\].*vitlens masks"):
        run_study(cfg, tmp_path / "run", progress=False)
    assert set(ResultsStore(tmp_path / "run").frame().metric_key) == {"pointing_game"}
