"""vitlens.viz: drawing, against hand-computed pixels."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from vitlens.viz import colorize, mask_edge, outline, outline_rgba, overlay, png_bytes, png_data_uri, save_grid


def test_mask_edge_of_a_square():
    m = np.zeros((6, 6), bool)
    m[1:5, 1:5] = True
    edge = mask_edge(m)
    expected = m.copy()
    expected[2:4, 2:4] = False  # the 2x2 interior has all four neighbours inside
    np.testing.assert_array_equal(edge, expected)
    img = np.zeros((6, 6, 3), np.uint8)
    np.testing.assert_array_equal(outline(img, m)[..., 0] == 255, expected)
    layer = outline_rgba(m, colour=(1, 2, 3))
    assert layer.shape == (6, 6, 4) and (layer[expected] == (1, 2, 3, 255)).all() and (layer[~expected] == 0).all()


def test_overlay_blends_with_the_colour_map():
    image = np.full((2, 2, 3), 100, np.uint8)
    heat = np.array([[0.0, 1.0], [0.5, 2.0]])  # values above 1 are clipped
    colour = colorize(heat).astype(float)
    expected = np.clip(0.25 * 100 + 0.75 * colour + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.75), expected)
    np.testing.assert_array_equal(colorize(heat)[1, 1], colorize(np.ones((1, 1)))[0, 0])


def test_png_round_trip_and_grid(tmp_path):
    a = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(a, 1)))), a)
    uri = png_data_uri(a)
    assert uri.startswith("data:image/png;base64,")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))), a)
    path = save_grid(tmp_path / "g.png", a, {"m": a}, "title")
    assert Image.open(path).size[0] > Image.open(path).size[1]  # one row: wider than tall


def test_signed_maps_are_neutral_at_zero_red_for_and_blue_against():
    from vitlens.viz import overlay_map

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
    values = np.zeros((8, 12))
    values[:, :4] = 2.0  # evidence for the class
    values[:, 8:] = -1.0  # against it; the middle third is exactly zero
    out = overlay_map(image, values, signed=True, alpha=0.6).astype(int)
    np.testing.assert_array_equal(out[:, 4:8], image[:, 4:8])  # the zero level leaves the image untouched
    grey = np.full_like(image, 128)
    diff = overlay_map(grey, values, signed=True, alpha=0.6).astype(int) - 128
    assert (diff[:, :4, 0] > diff[:, :4, 1]).all() and (diff[:, :4, 0] > diff[:, :4, 2]).all()  # positive: red
    assert (diff[:, 8:, 2] > diff[:, 8:, 0]).all()  # negative: bluer than it is red
    # weight follows |v| / max|v|: the -1 side moves less than the +2 side
    assert np.abs(diff[:, 8:]).sum() < np.abs(diff[:, :4]).sum()


def test_sign_modes_and_unsigned_maps():
    from vitlens.viz import map_rgba, overlay_map

    image = np.full((4, 4, 3), 100, np.uint8)
    values = np.array([[-2.0, -1.0, 0.0, 1.0]] * 4)
    heat = (np.abs(values) - 0) / 2.0
    np.testing.assert_array_equal(overlay_map(image, values, signed=True, sign="absolute"), overlay(image, heat))
    pos = np.clip(values, 0, None)
    np.testing.assert_array_equal(overlay_map(image, values, signed=True, sign="positive"), overlay(image, pos))
    lo, hi = values.min(), values.max()
    np.testing.assert_array_equal(overlay_map(image, values), overlay(image, (values - lo) / (hi - lo)))
    _rgb, weight = map_rgba(np.zeros((3, 3)), signed=True)
    assert (weight == 0).all()  # an all-zero signed map draws nothing
    with pytest.raises(ValueError, match="sign"):
        map_rgba(values, signed=True, sign="both")


def test_the_apps_heat_layer_of_a_signed_map_is_transparent_at_zero():
    import torch

    from vitlens.app.render import heat_image

    raw = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
    layer = heat_image(raw, (2, 2), signed=True)
    assert layer.shape == (2, 2, 4)
    np.testing.assert_array_equal(layer[..., 3], [[255, 0], [0, 255]])
    assert layer[0, 0, 0] > layer[0, 0, 2] and layer[1, 1, 2] > layer[1, 1, 0]
    assert heat_image(raw, (2, 2), signed=False).shape == (2, 2, 3)
