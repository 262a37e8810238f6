"""vitlens.viz: drawing, against hand-computed pixels."""

from __future__ import annotations

import base64
import io

import numpy as np
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
