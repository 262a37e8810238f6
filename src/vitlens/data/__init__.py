"""Image I/O, preprocessing and the builtin synthetic benchmarks."""

from .images import PreparedImage, load_batch, load_image, prepare, to_rgb

__all__ = ["PreparedImage", "load_batch", "load_image", "prepare", "to_rgb"]
