"""The builtin checkpoints shipped in the package, and the demo that uses them."""

from __future__ import annotations

import re

import pytest
import torch

import vitlens
from vitlens.demo import demo
from vitlens.models.builtin import WEIGHTS_DIR
from vitlens.training import RECIPES, SAMPLE_CHECK_SIZE, make_splits

TARGETS = {"cells": 0.95, "ultrasound": 0.90}


def test_every_recipe_is_shipped():
    assert sorted(vitlens.list_builtin()) == sorted(RECIPES)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_builtin_reproduces_its_card(name):
    weights = WEIGHTS_DIR / name / "model.safetensors"
    assert weights.stat().st_size <= 25 * 2**20
    model = vitlens.load_model(f"builtin:{name}")
    card = model.card
    recipe = RECIPES[name]
    assert card["architecture"] == {"timm_name": recipe.model, "kwargs": recipe.model_kwargs}
    bench = recipe.data.split(":")[1]
    if bench in TARGETS:
        assert card["test_accuracy"] >= TARGETS[bench]
    split = make_splits(recipe, 0)["test"]
    correct = 0
    for start in range(0, SAMPLE_CHECK_SIZE, 100):
        x, y, _ = split.batch(list(range(start, start + 100)))
        correct += int((model(x).argmax(-1) == y).sum())
    acc = correct / SAMPLE_CHECK_SIZE
    assert card["sample_check"]["first"] == SAMPLE_CHECK_SIZE
    assert abs(acc - card["sample_check"]["accuracy"]) <= 0.02, (acc, card["sample_check"])
    assert abs(acc - card["test_accuracy"]) <= 0.05


def test_builtin_vits_have_the_documented_shape():
    m = vitlens.load_model("builtin:cells_vit")
    assert m.family == "vit" and m.grid_size() == (14, 14) and m.num_prefix_tokens == 1
    assert len(m.attention_modules()) == 6 and m.module.embed_dim == 192
    cnn = vitlens.load_model("builtin:cells_cnn")
    assert cnn.family == "cnn" and "gradcam" in vitlens.applicable_explainers(cnn)
    assert not any(vitlens.explainer_info(n)["needs_attention"] for n in vitlens.applicable_explainers(cnn))
    assert vitlens.get_explainer("gradcam", cnn)(torch.zeros(1, 3, 112, 112)).shape == (1, 7, 7)


@pytest.mark.slow
def test_demo_writes_a_self_contained_page_and_grids(tmp_path):
    page = demo(tmp_path, n_images=2)
    html = page.read_text()
    assert page.name == "index.html"
    assert not re.search(r"src=['\"](?!data:)", html)  # every image is embedded
    vit_methods = vitlens.applicable_explainers(vitlens.load_model("builtin:cells_vit"))
    for m in vit_methods:
        assert m in html
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["cells_cnn_00.png", "cells_cnn_01.png", "cells_vit_00.png", "cells_vit_01.png"]
    with pytest.raises(vitlens.DataError, match="unknown synthetic benchmark"):
        demo(tmp_path, benchmark="nothing_here")
