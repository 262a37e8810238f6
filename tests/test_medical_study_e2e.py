"""The README's worked example "Reproduce the medical study", end to end through the CLI on a tiny BUSI-layout
folder: data check, fine-tuning two initialisations (random, and a 'DINO' preset from a local headless
checkpoint) with a learning-rate grid, the study template, the study, and the report. Tiny 32-px models with
random weights, so it runs on a CPU in well under a minute; the commands are the README's."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

import vitlens
from vitlens.bench.config import load_config
from vitlens.cli import main
from vitlens.explainers import list_explainers

TINY_ARG = "img_size=32,patch_size=8,embed_dim=32,depth=2,num_heads=2"


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: thread hand-offs cost more than they give on 2 shared cores
    yield
    torch.set_num_threads(n)


def make_busi(root, per_class: int = 6, size: int = 40) -> None:
    """Dataset_BUSI_with_GT-style folders: benign (bright oval), malignant (dark oval), normal (no lesion,
    empty mask); the first malignant image has its lesion split over two mask files, as in BUSI."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    for cls, level in (("benign", 230), ("malignant", 20), ("normal", None)):
        (root / cls).mkdir(parents=True)
        for k in range(1, per_class + 1):
            img = rng.normal(120, 20, (size, size))
            cy, cx = rng.uniform(12, size - 12, 2)
            lesion = ((yy - cy) / 7) ** 2 + ((xx - cx) / 9) ** 2 <= 1
            if level is not None:
                img[lesion] = level
            else:
                lesion[:] = False
            stem = f"{cls} ({k})"
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / cls / f"{stem}.png")
            if cls == "malignant" and k == 1:
                left = lesion & (xx < cx)
                Image.fromarray(np.where(left, 255, 0).astype(np.uint8)).save(root / cls / f"{stem}_mask.png")
                Image.fromarray(np.where(lesion & ~left, 255, 0).astype(np.uint8)).save(
                    root / cls / f"{stem}_mask_1.png"
                )
            else:
                Image.fromarray(np.where(lesion, 255, 0).astype(np.uint8)).save(root / cls / f"{stem}_mask.png")


@pytest.mark.slow
def test_reproduce_the_medical_study(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_busi(tmp_path / "data" / "busi")
    # a headless 'pretrained' backbone, as DINO/MAE checkpoints are (num_classes=0)
    torch.manual_seed(1)
    backbone = timm.create_model(
        "vit_base_patch16_224",
        num_classes=0,
        **{"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2},
    )
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(tmp_path / "dino_tiny.safetensors"))

    # 1. check the data
    assert main(["data", "check", "data/busi"]) == 0
    # 2. fine-tune two initialisations with a learning-rate grid
    common = [
        "--data",
        "data/busi",
        "--model-kwargs",
        TINY_ARG,
        "--epochs",
        "2",
        "--lr-grid",
        "1e-4,1e-3",
        "--batch-size",
        "8",
        "--quiet",
    ]
    assert main(["train", "--preset", "vit_b16_random", "--out", "models/vit_b16_random", *common]) == 0
    assert (
        main(
            [
                "train",
                "--preset",
                "vit_b16_dino",
                "--pretrained-file",
                "dino_tiny.safetensors",
                "--out",
                "models/vit_b16_dino",
                *common,
            ]
        )
        == 0
    )
    for init in ("random", "dino"):
        out = tmp_path / "models" / f"vit_b16_{init}"
        grid = json.loads((out / "grid.json").read_text())
        assert len(grid["runs"]) == 2 and (out / "lr-0.0001").is_dir() and (out / "lr-0.001").is_dir()
        model = vitlens.load_model(str(out))
        assert model.class_names == ["benign", "malignant", "normal"]
    card = json.loads((tmp_path / "models/vit_b16_dino/card.json").read_text())
    assert card["pretrained"]["file"].endswith("dino_tiny.safetensors") and card["dataset"]["layout"] == "busi"
    # the backbone came from the file: its patch embedding moved from the checkpoint's only by fine-tuning,
    # far less than the distance to an independent random init
    tuned = vitlens.load_model("models/vit_b16_dino").module.patch_embed.proj.weight.detach()
    start = backbone.patch_embed.proj.weight.detach()
    torch.manual_seed(2)
    other = timm.create_model(
        "vit_base_patch16_224", num_classes=0, img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2
    ).patch_embed.proj.weight.detach()
    assert (tuned - start).norm() < 0.5 * (other - start).norm()

    # 3. the study template, the study and the report
    assert (
        main(
            [
                "bench",
                "--init",
                "busi",
                "data/busi",
                "--model",
                "models/vit_b16_random",
                "--model",
                "models/vit_b16_dino",
            ]
        )
        == 0
    )
    cfg = load_config("busi-study.yaml")
    assert {e.name for e in cfg.explainers} >= set(list_explainers())  # every explainer applies to a ViT
    assert main(["bench", "busi-study.yaml", "--out", "runs/busi-study", "--quiet"]) == 0
    assert main(["report", "runs/busi-study"]) == 0
    summary = pd.read_csv(tmp_path / "runs/busi-study/summary.csv")
    assert set(summary.model) == {"models/vit_b16_random", "models/vit_b16_dino"}
    assert set(summary.explainer) >= set(list_explainers())
    pg = summary[(summary.metric == "pointing_game") & (summary.output == "score")]
    assert len(pg) >= 2 * len(list_explainers())
    # a tiny random model can give an all-zero map (e.g. no positive attention gradient): NaN, counted, never 0
    assert (pg["mean"].between(0, 1) | (pg["mean"].isna() & (pg.n_nan > 0))).all()
    assert (pg["mean"].notna()).sum() > len(pg) // 2
    html = (tmp_path / "runs/busi-study/report.html").read_text()
    assert "benign" in html or "malignant" in html
