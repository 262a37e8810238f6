"""`vitlens explain` and `vitlens list` as a user runs them, via the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import vitlens
from vitlens.cli import main
from vitlens.data import load_batch
from vitlens.specs import method_label, parse_method

EXE = shutil.which("vitlens") or os.path.join(os.path.dirname(sys.executable), "vitlens")


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(d / "rgb.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(d / "gray.png")
    Image.fromarray(rng.integers(0, 4000, (80, 80)).astype(np.uint16)).save(d / "deep16.png")
    Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA").save(d / "alpha.png")
    Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(d / "photo.jpg")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return d


@pytest.mark.slow
def test_explain_writes_overlays_grid_maps_and_summary(image_dir, tmp_path):
    files = [str(image_dir / n) for n in ("rgb.png", "gray.png", "deep16.png", "alpha.png", "photo.jpg")]
    r = run(
        "explain",
        *files,
        "--model",
        "timm:test_vit",
        "--method",
        "rollout:head_fusion=max,gradcam",
        "--method",
        "grad_rollout",
        "--target",
        "3",
        "--batch-size",
        "2",
        "--out",
        str(tmp_path),
    )
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["images"]) == 5
    for rec in summary["images"]:
        d = tmp_path / os.path.basename(rec["dir"])
        for label in ("rollout_head_fusion-max", "gradcam", "grad_rollout"):
            png = Image.open(d / f"{label}.png")
            assert png.size == (160, 160)  # overlay on the model's input crop
            raw = np.load(d / f"{label}.npy")
            assert raw.shape == (10, 10) and np.isfinite(raw).all()
        assert (d / "grid.png").is_file()
        assert rec["targets"]["grad_rollout"] == 3
    # the saved maps are the maps of the Python API on the same preprocessed input
    model = vitlens.load_model("timm:test_vit", seed=0)  # the CLI's default --seed
    x, _ = load_batch([image_dir / "rgb.png"], model.preprocessing)
    np.testing.assert_allclose(
        np.load(tmp_path / "rgb" / "grad_rollout.npy"),
        vitlens.get_explainer("grad_rollout", model)(x, target=3)[0].numpy(),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--model", "timm:test_vit", "--method", "rollout", "IMG:corrupt.png"], "corrupt.png"),
        (["--model", "timm:resnet18", "--method", "rollout", "IMG:rgb.png"], "gradcam"),
        (["--model", "timm:test_vit", "--method", "nope", "IMG:rgb.png"], "unknown explainer"),
        (["--model", "timm:nope_vit", "--method", "rollout", "IMG:rgb.png"], "unknown timm model"),
        (["--model", "timm:test_vit", "--method", "rollout", "--target", "1000", "IMG:rgb.png"], "out of range"),
        (["--model", "timm:test_vit", "--method", "rollout:alpha", "IMG:rgb.png"], "key=value"),
        (
            ["--model", "timm:test_vit", "--checkpoint", "IMG:rgb.png", "--method", "rollout", "IMG:rgb.png"],
            "cannot be read",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, needle, image_dir, tmp_path, capsys):
    argv = ["explain", *[str(image_dir / a[4:]) if a.startswith("IMG:") else a for a in args], "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitlens: error:") and needle in err[0], err


def test_debug_shows_the_traceback(image_dir, tmp_path):
    r = run(
        "--debug",
        "explain",
        str(image_dir / "corrupt.png"),
        "--model",
        "timm:test_vit",
        "--method",
        "rollout",
        "--out",
        str(tmp_path),
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "InputError" in r.stderr


def test_list_shows_every_explainer_with_citation():
    r = run("list")
    assert r.returncode == 0
    for name in vitlens.list_explainers():
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(name + " "))
        assert vitlens.explainer_info(name)["citation"] in line
    help_text = run("explain", "--help").stdout.replace("\n", " ")
    for name in vitlens.list_explainers():
        assert name in help_text
    metrics = run("list", "--metrics").stdout
    for name in vitlens.list_metrics():
        line = next(ln for ln in metrics.splitlines() if ln.startswith(name + " "))
        assert vitlens.metric_info(name)["citation"] in line
        assert ("higher=better" in line) == vitlens.metric_info(name)["higher_is_better"]


def test_method_spec_parsing():
    assert parse_method("rollout:head_fusion=max:discard_ratio=0.9") == (
        "rollout",
        {"head_fusion": "max", "discard_ratio": 0.9},
    )
    assert parse_method("gradcam:layer=layer4") == ("gradcam", {"layer": "layer4"})
    assert parse_method("gradcam:layer=-2") == ("gradcam", {"layer": -2})
    assert method_label("rollout", {"head_fusion": "max"}) == "rollout_head_fusion-max"


def test_data_export_command(tmp_path, capsys):
    import csv

    assert main(["data", "export", "shortcut", "--n", "3", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert len(rows) == 3 and all((tmp_path / r["path"]).is_file() for r in rows)
    assert all((tmp_path / r["marker_mask_path"]).is_file() for r in rows)
    assert main(["data", "export", "nope", "--n", "3", "--out", str(tmp_path)]) == 2
    assert "unknown synthetic benchmark" in capsys.readouterr().err
