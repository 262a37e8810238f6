"""Heatmap overlays and side-by-side grids (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

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


def save_grid(path: str | Path, image: np.ndarray, panels: dict[str, np.ndarray], title: str = "") -> Path:
    """One row: the input image, then one overlay per method, each titled, with a figure title."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n = 1 + len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.8), squeeze=False)
    for ax, (name, img) in zip(axes[0], [("input", image), *panels.items()], strict=True):
        ax.imshow(img)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
