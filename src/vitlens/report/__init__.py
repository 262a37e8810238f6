"""Overlays, figure grids and (later) HTML reports."""

from .overlay import colorize, overlay, save_grid

__all__ = ["colorize", "overlay", "save_grid"]
