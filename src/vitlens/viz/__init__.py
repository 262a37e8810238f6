"""Drawing only: colour maps, heatmap overlays, mask outlines, figure grids, self-contained HTML pages.

Below :mod:`vitlens.data`, :mod:`vitlens.report` and :mod:`vitlens.app`: it imports nothing of vitlens, so every
layer can draw with it.
"""

from .grid import save_grid
from .html import Row, Section, png_bytes, png_data_uri, render_page
from .overlay import SIGNS, colorize, map_rgba, mask_edge, outline, outline_rgba, overlay, overlay_map

__all__ = [
    "SIGNS",
    "Row",
    "Section",
    "colorize",
    "map_rgba",
    "mask_edge",
    "outline",
    "outline_rgba",
    "overlay",
    "overlay_map",
    "png_bytes",
    "png_data_uri",
    "render_page",
    "save_grid",
]
