"""Image I/O, preprocessing and the builtin synthetic benchmarks."""

from .check import check_dataset
from .geometry import overlay_original, to_original, transform_boxes, transform_mask
from .images import PreparedImage, load_batch, load_image, prepare, read_image_info, to_rgb
from .layouts import (
    LAYOUTS,
    Dataset,
    FileMask,
    MaskSource,
    Problem,
    Record,
    detect_layout,
    open_dataset,
    register_layout,
)

__all__ = [
    "LAYOUTS",
    "Dataset",
    "FileMask",
    "MaskSource",
    "PreparedImage",
    "Problem",
    "Record",
    "check_dataset",
    "detect_layout",
    "load_batch",
    "load_image",
    "open_dataset",
    "overlay_original",
    "prepare",
    "read_image_info",
    "register_layout",
    "to_original",
    "to_rgb",
    "transform_boxes",
    "transform_mask",
]
