"""`vitlens train`: learning happens, runs resume to the same weights, cards describe the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import vitlens
import vitlens.training as tr
import vitlens.training.loop as loop
from vitlens.cli import main
from vitlens.training import TrainConfig, train

TINY = {"img_size": 112, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_config(**kw) -> TrainConfig:
    base = dict(
        model="vit_small_patch16_224",
        model_kwargs=TINY,
        data="builtin:cells",
        epochs=2,
        samples_per_epoch=48,
        batch_size=16,
        val_size=16,
        test_size=16,
        patience=0,
    )
    return TrainConfig(**{**base, **kw})


def test_a_few_steps_reduce_the_loss():
    cfg = tiny_config()
    x, y, _ = tr.make_splits(cfg, 0)["train"].batch(list(range(16)))
    torch.manual_seed(0)
    model = vitlens.load_model("timm:vit_small_patch16_224", num_classes=4, **TINY).module
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    with torch.no_grad():
        model.eval()
        first = float(torch.nn.functional.cross_entropy(model(x), y))
    for _ in range(20):
        tr.train_step(model, opt, x, y)
    with torch.no_grad():
        model.eval()
        last = float(torch.nn.functional.cross_entropy(model(x), y))
    assert last < first - 0.08, (first, last)  # 4 classes: ln 4 = 1.39 at chance


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = tiny_config()
    train(cfg, tmp_path / "straight", progress=False)

    real_save = loop.save_checkpoint
    calls = {"n": 0}

    def save_then_die(obj, path):
        real_save(obj, path)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # killed right after the first epoch's checkpoint

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert ckpt["state"]["epoch"] == 1
    card = train(cfg, tmp_path / "resumed", progress=False)
    assert card["epochs_run"] == 2 and [h["epoch"] for h in card["history"]] == [1, 2]
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(vitlens.VitlensError, match="another training config"):
        train(tiny_config(lr=0.5), tmp_path / "resumed", progress=False)


def test_card_describes_the_model_and_the_directory_loads(tmp_path):
    card = train(tiny_config(data="builtin:shortcut", epochs=1), tmp_path, progress=False)
    on_disk = json.loads((tmp_path / "card.json").read_text())
    assert on_disk == json.loads(json.dumps(card))
    assert card["architecture"] == {"timm_name": "vit_small_patch16_224", "kwargs": TINY}
    assert card["classes"] == ["circle", "square", "triangle", "cross"]
    assert card["preprocessing"]["input_size"] == [112, 112] and card["preprocessing"]["crop_pct"] == 1.0
    assert 0.0 <= card["test_accuracy"] <= 1.0 and card["test_size"] == 16
    assert card["training"]["lr"] == 1e-3 and card["training"]["seed"] == 0
    n_c, n_b = card["marker_consistent_n"], card["marker_broken_n"]
    assert n_c + n_b == 16 and n_b > 0
    model = vitlens.load_model(str(tmp_path))
    assert model.class_names == card["classes"] and model.grid_size() == (14, 14)
    # the card's accuracy is the model's accuracy on the same test images
    split = tr.make_splits(tiny_config(data="builtin:shortcut"), 0)["test"]
    x, y, _ = split.batch(list(range(16)))
    assert float((model(x).argmax(-1) == y).float().mean()) == pytest.approx(card["test_accuracy"])


def test_image_folder_training_and_cli(tmp_path):
    rng = np.random.default_rng(0)
    for cls, colour in (("dark", 40), ("light", 210)):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(10):
            img = np.clip(rng.normal(colour, 20, (40, 50, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "data" / cls / f"{i}.png")
    rc = main(
        [
            "train",
            "--model",
            "vit_small_patch16_224",
            "--model-kwargs",
            "img_size=112,patch_size=8,embed_dim=32,depth=2,num_heads=2",
            "--data",
            str(tmp_path / "data"),
            "--epochs",
            "3",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    assert rc == 0
    card = json.loads((tmp_path / "run" / "card.json").read_text())
    assert card["classes"] == ["dark", "light"] and card["test_size"] == 2
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "x")]) == 2
    assert (
        main(
            [
                "train",
                "--model",
                "vit_small_patch16_224",
                "--data",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "y"),
            ]
        )
        == 2
    )
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path / "z")]) == 2


def test_init_from_copies_every_weight_but_the_head(tmp_path):
    train(tiny_config(epochs=1), tmp_path / "src", progress=False)  # cells: 4 classes
    cfg = tiny_config(data="builtin:ultrasound", epochs=1, init_from=str(tmp_path / "src"))
    model = vitlens.load_model("timm:vit_small_patch16_224", num_classes=3, **TINY).module
    tr.init_weights(model, cfg.init_from)
    src = load_file(str(tmp_path / "src" / "model.safetensors"))
    for k, v in model.state_dict().items():
        if k.startswith("head."):
            assert v.shape[0] == 3 and src[k].shape[0] == 4
        else:
            assert torch.equal(v, src[k]), k
    with pytest.raises(vitlens.VitlensError, match="do not fit"):
        tr.init_weights(vitlens.load_model("timm:test_vit").module, cfg.init_from)
