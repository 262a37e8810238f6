"""Bad inputs that used to crash deep in torch or pass silently: each is now applied exactly or refused with a
clear VitlensError (one line, exit 2, on the command line); writes are durable and never leave a half state."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import vitlens
import vitlens.training.loop as loop
from vitlens.cli import main
from vitlens.files import atomic_write_text
from vitlens.training import get_recipe, train

from .test_train import tiny_config


@pytest.fixture(scope="module")
def vit():
    return vitlens.load_model("builtin:cells_vit")


def _weights(model, change=None):
    sd = {k: v.detach().clone().contiguous() for k, v in model.module.state_dict().items()}
    if change:
        change(sd)
    return sd


def test_a_checkpoint_is_applied_to_builtin_and_directory_models(vit, tmp_path):
    x = torch.randn(2, 3, *vit.preprocessing.input_size, generator=torch.Generator().manual_seed(0))

    def shift_head(sd):
        sd["head.bias"] += torch.tensor([5.0, 0.0, 0.0, 0.0])

    save_file(_weights(vit, shift_head), str(tmp_path / "w.safetensors"))
    loaded = vitlens.load_model("builtin:cells_vit", checkpoint=tmp_path / "w.safetensors")
    expected = vit.logits(x) + torch.tensor([5.0, 0.0, 0.0, 0.0])  # the head bias adds to the logits
    torch.testing.assert_close(loaded.logits(x), expected, rtol=0, atol=1e-4)
    assert loaded.card["checkpoint"] == str(tmp_path / "w.safetensors")
    from vitlens.models.builtin import builtin_path

    as_dir = vitlens.load_model(str(builtin_path("cells_vit")), checkpoint=tmp_path / "w.safetensors")
    torch.testing.assert_close(as_dir.logits(x), expected, rtol=0, atol=1e-4)


def test_checkpoints_that_do_not_fit_or_are_broken_are_refused(vit, tmp_path):
    cnn = vitlens.load_model("builtin:cells_cnn")
    save_file(_weights(cnn), str(tmp_path / "cnn.safetensors"))
    with pytest.raises(vitlens.ModelError, match="does not match the model"):
        vitlens.load_model("builtin:cells_vit", checkpoint=tmp_path / "cnn.safetensors")

    def poison(sd):
        sd["blocks.0.attn.qkv.weight"][0, 0] = float("nan")

    save_file(_weights(vit, poison), str(tmp_path / "nan.safetensors"))
    with pytest.raises(vitlens.ModelError, match="NaN or infinite"):
        vitlens.load_model("builtin:cells_vit", checkpoint=tmp_path / "nan.safetensors")
    with pytest.raises(vitlens.ModelError, match="NaN or infinite"):
        vitlens.load_model("timm:vit_small_patch16_224", checkpoint=tmp_path / "nan.safetensors", **_cells_kwargs(vit))
    with pytest.raises(vitlens.ModelError, match="card fixes the model"):
        vitlens.load_model("builtin:cells_vit", depth=2)
    with pytest.raises(vitlens.ModelError, match="4 classes"):
        vitlens.load_model("builtin:cells_vit", num_classes=7)
    (tmp_path / "cut.pt").write_bytes((tmp_path / "cnn.safetensors").read_bytes()[:1000])
    with pytest.raises(vitlens.ModelError, match="cannot be read"):
        vitlens.load_model("builtin:cells_vit", checkpoint=tmp_path / "cut.pt")
    argv = ["explain", "x.png", "--model", "builtin:cells_vit", "--method", "rollout", "--out", str(tmp_path / "o")]
    assert main([*argv, "--checkpoint", str(tmp_path / "nan.safetensors")]) == 2


def _cells_kwargs(vit):
    return dict(vit.card["architecture"]["kwargs"], num_classes=4)


@pytest.mark.parametrize(
    "target,needle",
    [
        ("3", "class names"),
        (3.0, "class indices"),
        (torch.tensor([[1], [2]]), r"2 entries of shape \(2, 1\) for a batch of 2"),
        (torch.tensor([1]), r"1 entries of shape \(1,\) for a batch of 2"),
        (torch.tensor([True, False]), "integer class indices"),
        (10**30, "out of range"),
        ([1, 2, 3], r"3 entries"),
    ],
)
def test_bad_targets_are_refused(vit, target, needle):
    x = torch.zeros(2, 3, *vit.preprocessing.input_size)
    with pytest.raises(vitlens.InputError, match=needle):
        vitlens.get_explainer("rollout", vit).explain(x, target)


def test_good_targets(vit):
    x = torch.zeros(2, 3, *vit.preprocessing.input_size)
    explain = vitlens.get_explainer("rollout", vit).explain
    assert explain(x, 2).target.tolist() == explain(x, torch.tensor(2)).target.tolist() == [2, 2]
    assert explain(x, [1, 3]).target.tolist() == explain(x, np.array([1, 3])).target.tolist() == [1, 3]


def test_images_without_data_are_refused(vit):
    with pytest.raises(vitlens.InputError, match="meta"):
        vitlens.get_explainer("rollout", vit)(torch.zeros(1, 3, 32, 32, device="meta"))


@pytest.fixture
def cell_png(tmp_path, vit):
    from vitlens.data.synthetic import get_benchmark

    path = tmp_path / "cell.png"
    Image.fromarray(get_benchmark("cells").sample(0, 0, "test").image).save(path)
    return path


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--method", ",", "--out", "o"], "no explainer given"),
        (["--method", "rollout", "--out", "o", "--target", "99999999999999999999"], "out of range"),
        (["--method", "rollout", "--out", "blocker"], "a file of that name is in the way"),
        (["--method", "rollout", "--out", "o", "--max-pixels", "1000"], r"exceeds the 0.001 MP limit"),
        (["--method", "rollout", "--out", "o", "--max-pixels", "lots"], None),
    ],
)
def test_cli_bad_arguments_are_one_line_errors(cell_png, tmp_path, monkeypatch, capsys, extra, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file")
    try:
        rc = main(["explain", str(cell_png), "--model", "builtin:cells_vit", *extra])
    except SystemExit as e:  # argparse: usage error, exit 2
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    if needle is not None:
        assert len(err) == 1 and err[0].startswith("vitlens: error: ") and __import__("re").search(needle, err[0])
    assert "Traceback" not in "\n".join(err)


def test_file_system_errors_are_one_line(cell_png, tmp_path, monkeypatch, capsys):
    import vitlens.explain_files as ef

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path / "o"))

    monkeypatch.setattr(ef, "atomic_write_json", refuse)
    rc = main(
        ["explain", str(cell_png), "--model", "builtin:cells_vit", "--method", "rollout", "--out", str(tmp_path / "o")]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vitlens: error: {tmp_path / 'o'}: Permission denied"]


@pytest.mark.slow
def test_max_pixels_lets_large_images_through(tmp_path):
    """A 42-megapixel image is refused by default (40 MP) and explained with --max-pixels 50e6."""
    big = tmp_path / "big.png"
    Image.new("RGB", (6500, 6500), (120, 60, 200)).save(big)
    argv = ["explain", str(big), "--model", "builtin:cells_vit", "--method", "rollout"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert main([*argv, "--out", str(tmp_path / "b"), "--max-pixels", "50e6"]) == 0
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["images"][0]["input"]["size"] == [6500, 6500]


def test_atomic_writes_sync_the_data_and_the_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_text(tmp_path / "a.json", "{}")
    assert len(synced) == 2 and synced[1] == str(tmp_path)  # the temporary file, then the folder after the rename
    assert (tmp_path / "a.json").read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def _tiny(**kw):
    return tiny_config(epochs=1, samples_per_epoch=16, **kw)


def test_a_killed_training_run_never_leaves_new_weights_beside_an_old_card(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "card.json").write_text(json.dumps({"classes": ["a", "b"], "note": "an earlier, finished run"}))

    def killed(state, path):
        raise KeyboardInterrupt  # the run dies after writing its first weights

    monkeypatch.setattr(loop, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(), out, resume=False, progress=False)
    assert (out / "model.safetensors").is_file() and not (out / "card.json").exists()
    with pytest.raises(vitlens.ModelError):  # not a finished model directory any more
        vitlens.load_model(str(out))


def test_a_damaged_checkpoint_on_resume_is_a_clear_error(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(vitlens.VitlensError, match=r"cannot be read to resume.*--no-resume"):
        train(_tiny(), out, progress=False)


def test_recipe_model_kwargs_are_merged():
    cfg = get_recipe("cells_vit", model_kwargs={"depth": 1})
    base = get_recipe("cells_vit").model_kwargs
    assert cfg.model_kwargs == {**base, "depth": 1} and cfg.model_kwargs["img_size"] == base["img_size"]


def test_random_weights_are_said_loudly(cell_png, tmp_path, capsys):
    argv = ["explain", str(cell_png), "--method", "rollout"]
    assert main([*argv, "--model", "timm:deit_tiny_patch16_224", "--out", str(tmp_path / "r")]) == 0
    assert "RANDOM weights" in capsys.readouterr().err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["random_weights"] is True and summary["weights"] == "random"
    assert main([*argv, "--model", "builtin:cells_vit", "--out", str(tmp_path / "b")]) == 0
    assert "RANDOM" not in capsys.readouterr().err
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["random_weights"] is False and summary["weights"] == "card"
    assert vitlens.load_model("timm:deit_tiny_patch16_224").random_weights
    from vitlens.app.service import describe

    model = vitlens.load_model("timm:deit_tiny_patch16_224")
    assert describe("timm:deit_tiny_patch16_224", model)[0].startswith("RANDOM WEIGHTS")


@pytest.mark.parametrize(
    "argv,hint",
    [
        (["--method", "rolout"], "did you mean 'rollout'?"),
        (["--method", "rollout:head_fuson=max"], "did you mean 'head_fusion'?"),
        (["--method", "rollout", "--target", "monocite"], "did you mean 'monocyte'?"),
    ],
)
def test_misspelt_names_get_a_suggestion(cell_png, tmp_path, capsys, argv, hint):
    assert main(["explain", str(cell_png), "--model", "builtin:cells_vit", "--out", str(tmp_path / "o"), *argv]) == 2
    assert hint in capsys.readouterr().err


def test_list_verbose_shows_defaults_and_ranges(capsys):
    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "discard_ratio=0.0 in [0, 1)" in out and "head_fusion='mean'" in out and "n_masks=4000" in out
