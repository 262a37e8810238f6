"""Colour maps, heatmap overlays and mask outlines on uint8 RGB images (matplotlib's colour maps)."""

from __future__ import annotations

import numpy as np


def colorize(heat: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``[H, W]`` values in [0, 1] to uint8 RGB with a matplotlib colormap."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.clip(heat, 0.0, 1.0))
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heatmap (same H, W as ``image``) over a uint8 RGB image."""
    colour = colorize(heat, cmap).astype(np.float32)
    out = (1.0 - alpha) * image.astype(np.float32) + alpha * colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


SIGNS = ("all", "positive", "absolute")
SIGNED_CMAP = "RdBu_r"  # diverging: blue < 0 < red, white at zero


def _minmax(v: np.ndarray) -> np.ndarray:
    lo, hi = float(v.min()), float(v.max())
    return (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)


def map_rgba(values: np.ndarray, *, signed: bool = False, sign: str | None = None, cmap: str | None = None):
    """A map's values (``[H, W]``, any range) -> (uint8 RGB ``[H, W, 3]``, weight ``[H, W]`` in [0, 1]).

    Unsigned maps (and ``sign="positive"``: negative values clipped to 0; ``"absolute"``: ``|v|``) are min-max
    normalised and coloured with ``cmap`` (default jet), weight 1 everywhere. Signed maps with ``sign="all"``
    (their default, as Captum's ``visualize_image_attr``) are scaled by their largest ``|v|`` and coloured with
    a diverging map (default ``RdBu_r``) whose weight is ``|v|`` / max: zero is *transparent* (the image shows
    through unchanged) instead of a mid-level colour washed over the image, positive evidence is red, negative
    blue. A constant (or all-zero) map has weight 0 (signed) or colours the lowest level (unsigned)."""
    v = np.asarray(values, dtype=np.float64)
    sign = sign or ("all" if signed else "positive")
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    if signed and sign == "all":
        scale = float(np.abs(v).max())
        unit = v / scale if scale > 0 else np.zeros_like(v)
        return colorize((unit + 1.0) / 2.0, cmap or SIGNED_CMAP), np.abs(unit)
    if sign == "absolute":
        v = np.abs(v)
    elif signed:
        v = np.clip(v, 0.0, None)
    return colorize(_minmax(v), cmap or "jet"), np.ones_like(v)


def overlay_map(
    image: np.ndarray,
    values: np.ndarray,
    *,
    signed: bool = False,
    sign: str | None = None,
    alpha: float = 0.5,
    cmap: str | None = None,
) -> np.ndarray:
    """Blend a map's raw values (same H, W as ``image``) over a uint8 RGB image, per :func:`map_rgba`: signed
    maps leave the image untouched where the map is zero."""
    rgb, weight = map_rgba(values, signed=signed, sign=sign, cmap=cmap)
    a = (alpha * weight)[..., None]
    out = (1.0 - a) * image.astype(np.float32) + a * rgb.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def mask_edge(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean mask: mask pixels with a 4-neighbour outside it."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def outline(image: np.ndarray, mask: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    """Draw the boundary of a boolean mask onto a copy of a uint8 RGB image."""
    out = image.copy()
    out[mask_edge(mask)] = colour
    return out


def outline_rgba(mask: np.ndarray, colour=(255, 255, 255)) -> np.ndarray:
    """A transparent RGBA layer holding only the boundary of a boolean mask, in ``colour``."""
    out = np.zeros((*mask.shape[:2], 4), np.uint8)
    out[mask_edge(mask)] = (*colour, 255)
    return out
