"""Figure grids: the input image and one titled panel per method in a row (matplotlib, Agg: no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


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
