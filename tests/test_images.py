"""Image reading keeps what pixels mean; preparation follows the model's preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import vitlens
from vitlens.data.images import load_image, prepare, window_to_uint8
from vitlens.models import Preprocessing


def test_16bit_grayscale_is_windowed_by_percentiles(tmp_path):
    a = np.linspace(1000, 3000, 200 * 200).reshape(200, 200).astype(np.uint16)  # a 12-bit range in 16 bits
    Image.fromarray(a).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "x.png"))
    assert rgb.shape == (200, 200, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    lo, hi = np.percentile(a.astype(float), [0.5, 99.5])
    expected = np.round(np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 1
    assert rgb.min() == 0 and rgb.max() == 255  # the full display range is used, not 3000/65535
    assert (window_to_uint8(np.full((4, 4), 7)) == 0).all()


def test_grayscale_rgba_and_palette_conversions(tmp_path):
    g = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(g).save(tmp_path / "g.png")
    assert (np.asarray(load_image(tmp_path / "g.png")) == g[..., None]).all()

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 128  # half transparent red over black -> about 100
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = np.asarray(load_image(tmp_path / "a.png"))
    assert abs(int(out[0, 0, 0]) - 100) <= 1 and out[0, 0, 1] == 0

    pal = Image.new("P", (4, 4))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.save(tmp_path / "p.png")
    out = np.asarray(load_image(tmp_path / "p.png"))
    assert tuple(out[1, 1]) == (10, 20, 30) and tuple(out[0, 0]) == (0, 0, 0)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (20, 40)


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(vitlens.InputError, match=r"bad\.png"):
        load_image(tmp_path / "bad.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(vitlens.InputError, match=r"empty\.jpg"):
        load_image(tmp_path / "empty.jpg")
    with pytest.raises(vitlens.InputError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_prepare_resize_crop_and_normalise():
    img = Image.fromarray(np.full((100, 200, 3), 128, np.uint8))
    pre = Preprocessing(input_size=(56, 56), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=0.875)
    p = prepare(img, pre)
    assert p.tensor.shape == (3, 56, 56)
    assert p.resized_size == (128, 64)  # shorter side 56 / 0.875 = 64
    assert p.crop_box == (36, 4, 92, 60)
    assert np.allclose(p.tensor.numpy(), (128 / 255 - 0.5) / 0.25, atol=1e-5)
    full = prepare(img, Preprocessing(input_size=(32, 48), crop_pct=1.0))
    assert full.tensor.shape == (3, 32, 48) and full.crop_box == (0, 0, 48, 32)
