"""`vitlens bench --init LAYOUT DIR`: a valid config per public layout, with the explainers that apply to the
models and the metrics the layout's annotations support."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from tests import layout_fixtures as fx
from vitlens.bench.config import load_config
from vitlens.cli import main
from vitlens.explainers import list_explainers


def _encode(mask):
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def _pbc(root):
    for cls in ("basophil", "neutrophil"):
        for i in range(3):
            fx.rgb(root / cls / f"{i}.jpg", 16, 16, value=40 * i, fmt="JPEG")


MAKERS = {
    "busi": (fx.make_busi, True, False),
    "kvasir": (fx.make_kvasir, True, True),
    "voc": (fx.make_voc, True, True),
    "coco": (lambda r: fx.make_coco(r, _encode), True, True),
    "pbc": (_pbc, False, False),
}


@pytest.mark.parametrize("layout", sorted(MAKERS))
def test_template_per_layout(layout, tmp_path, monkeypatch):
    make, has_masks, has_boxes = MAKERS[layout]
    data = tmp_path / "data"
    make(data)
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--init", layout, str(data), "--model", "torchvision:resnet18"]) == 0
    cfg = load_config(tmp_path / "data-study.yaml")
    keys = [m.key for m in cfg.metrics]
    ds = cfg.datasets[0]
    assert ds.path == str(data.resolve()) and ds.layout == layout and ds.models == ["torchvision:resnet18"]
    assert ("pointing_game" in keys) == has_masks
    assert ("pointing_game[box]" in keys) == has_boxes
    assert {"deletion(steps=28)", "insertion(steps=28)", "sparseness"} <= set(keys)
    # the CNN: attention methods are commented out with the reason, gradcam and the baselines stay
    names = {e.name for e in cfg.explainers}
    assert {"gradcam", "saliency", "integrated_gradients", "rise"} <= names
    assert not names & {"rollout", "raw_attention", "chefer2021", "attention_flow"}
    text = (tmp_path / "data-study.yaml").read_text()
    assert "# - rollout    # does not apply:" in text
    # FAF/BAF against Mask R-CNN masks is offered only once they are cached
    assert "# - {name: faf_baf, mask: foreground}" in text
    if layout == "busi":
        assert ds.classes == ["benign", "malignant"]  # lesion images only
    if layout == "voc":
        assert ds.labels == "ignore" and ds.split == "val"
    # an existing file is not overwritten without --force
    assert main(["bench", "--init", layout, str(data), "--model", "torchvision:resnet18"]) == 2
    assert main(["bench", "--init", layout, str(data), "--model", "torchvision:resnet18", "--force"]) == 0


def test_template_with_unloadable_models_lists_everything(tmp_path):
    data = tmp_path / "busi"
    fx.make_busi(data)
    out = tmp_path / "s.yaml"
    assert main(["bench", "--init", "busi", str(data), str(out)]) == 0  # default models: not trained yet
    cfg = load_config(out)
    assert cfg.datasets[0].models[0] == "models/vit_b16_random"
    assert {e.name for e in cfg.explainers} == set(list_explainers())
    raw = yaml.safe_load(out.read_text())
    assert raw["datasets"][0]["classes"] == ["benign", "malignant"]


def test_template_errors(tmp_path):
    assert main(["bench", "--init", "nope", str(tmp_path)]) == 2
    assert main(["bench", "--init", "busi", str(tmp_path / "absent")]) == 2
    assert main(["bench"]) == 2
