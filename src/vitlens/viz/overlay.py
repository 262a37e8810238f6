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
