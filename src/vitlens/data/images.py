"""Reading images into RGB and preparing them for a model.

``load_image`` accepts what users have on disk: 8-bit and 16-bit PNG, grayscale, RGBA, palette, JPEG with
EXIF orientation. 16-bit and 32-bit grayscale is mapped to 8 bits with a percentile window (0.5th to 99.5th
percentile → 0..255), so that a 12-bit scan stored in a 16-bit container is not rendered almost black.
Alpha is composited onto black. Unreadable or corrupt files raise :class:`~vitlens.errors.InputError`
naming the file.

``prepare`` applies the model's preprocessing (resize the shorter side to ``input_size / crop_pct``,
centre crop, normalise) and records the geometry so that maps can be drawn on the displayed crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError
from ..models import Preprocessing

WINDOW_PERCENTILES = (0.5, 99.5)
MAX_PIXELS = 40_000_000

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def window_to_uint8(a: np.ndarray, percentiles: tuple[float, float] = WINDOW_PERCENTILES) -> np.ndarray:
    """Map a high-bit-depth array to uint8 with a percentile window (constant images map to 0)."""
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, percentiles)
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return (np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB preserving what the pixels mean (see module docstring)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(window_to_uint8(np.asarray(img))).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image(path: str | Path) -> Image.Image:
    """Read an image file as RGB (see module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"image {p}: no such file")
    try:
        with Image.open(p) as im:
            if im.width * im.height > MAX_PIXELS:
                raise InputError(f"image {p}: {im.width}x{im.height} exceeds the {MAX_PIXELS // 1_000_000} MP limit")
            im.load()
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"image {p}: cannot be read as an image ({type(e).__name__}: {e})") from e


@dataclass
class PreparedImage:
    tensor: torch.Tensor  # [C, H, W], normalised for the model
    display: np.ndarray  # uint8 [H, W, 3]: the crop the model sees, for overlays
    original_size: tuple[int, int]  # (W, H) of the file
    resized_size: tuple[int, int]  # (W, H) after the resize, before the crop
    crop_box: tuple[int, int, int, int]  # (left, top, right, bottom) in the resized image


def prepare(img: Image.Image, pre: Preprocessing) -> PreparedImage:
    """Resize the shorter side to ``input_size / crop_pct``, centre-crop ``input_size``, normalise."""
    th, tw = pre.input_size
    w, h = img.size
    if pre.crop_pct >= 1.0:
        rw, rh = tw, th  # plain resize to the input size, as for crop_pct = 1 in timm eval transforms
    else:
        short = round(min(th, tw) / pre.crop_pct)
        scale = short / min(w, h)
        rw, rh = max(tw, round(w * scale)), max(th, round(h * scale))
    resized = img.resize((rw, rh), _RESAMPLE.get(pre.interpolation, Image.Resampling.BILINEAR))
    left, top = (rw - tw) // 2, (rh - th) // 2
    crop = resized.crop((left, top, left + tw, top + th))
    display = np.asarray(crop, dtype=np.uint8).copy()
    arr = display.astype(np.float32) / 255.0
    if pre.in_chans == 1:
        arr = arr.mean(axis=-1, keepdims=True)
    t = torch.from_numpy(arr).permute(2, 0, 1)
    mean = torch.tensor(pre.mean[: pre.in_chans], dtype=torch.float32)[:, None, None]
    std = torch.tensor(pre.std[: pre.in_chans], dtype=torch.float32)[:, None, None]
    return PreparedImage((t - mean) / std, display, (w, h), (rw, rh), (left, top, left + tw, top + th))


def load_batch(paths: list[str | Path], pre: Preprocessing) -> tuple[torch.Tensor, list[PreparedImage]]:
    """Load and prepare several files as one ``[B, C, H, W]`` batch."""
    prepared = [prepare(load_image(p), pre) for p in paths]
    return torch.stack([p.tensor for p in prepared]), prepared
