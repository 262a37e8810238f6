"""Between the original image and the model's input: masks and boxes forward, maps back.

:func:`~vitlens.data.images.prepare` resizes the image from ``original_size`` (W0, H0) to ``resized_size``
(rw, rh) with PIL, then crops ``crop_box`` (l, t, r, b). PIL's resize maps pixel centres: output pixel ``x``
(centre ``x + 0.5``) samples the input at ``(x + 0.5) * W0 / rw`` in continuous coordinates where input pixel
``i`` covers ``[i, i + 1)``. Every function here uses that same convention, so

* :func:`transform_mask` gives a mask exactly the nearest-neighbour resize + crop of it (PIL's own nearest
  source index is used, taken from PIL itself by resizing an index ramp, so rounding agrees bit for bit);
* :func:`transform_boxes` gives the boxes whose rasterisation equals :func:`transform_mask` of the box mask
  (a pixel belongs to a box ``(x0, y0, x1, y1)``, end-exclusive, when its centre lies in ``[x0, x1) x [y0, y1)``);
* :func:`to_original` is the inverse of the resize + crop: a map on any grid covering the crop (the
  model-input pixels or the patch grid) is sampled bilinearly at the centre of every original pixel;
  original pixels whose centre falls outside the crop get ``fill``;
* :func:`overlay_original` draws a heatmap on the original image at its original resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..viz import overlay, overlay_map
from .images import PreparedImage, load_image, to_rgb


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """PIL's nearest-neighbour source index of each of ``n_out`` output pixels along an axis of ``n_in``."""
    ramp = Image.fromarray(np.arange(n_in, dtype=np.int32)[None, :])  # mode "I"
    return np.asarray(ramp.resize((n_out, 1), Image.Resampling.NEAREST), dtype=np.int64)[0]


def _crop_sources(prep: PreparedImage) -> tuple[np.ndarray, np.ndarray]:
    (w0, h0), (rw, rh), (left, top, right, bottom) = prep.original_size, prep.resized_size, prep.crop_box
    return _nearest_index(h0, rh)[top:bottom], _nearest_index(w0, rw)[left:right]


def transform_mask(mask: np.ndarray, prep: PreparedImage) -> np.ndarray:
    """A bool mask ``[H0, W0]`` of the original image -> ``[h, w]`` on the model-input grid: the same resize
    (nearest neighbour) and centre crop the image got."""
    m = np.asarray(mask)
    w0, h0 = prep.original_size
    if m.shape != (h0, w0):
        raise InputError(f"mask has shape {m.shape}; the image is {w0}x{h0}, so the mask must be ({h0}, {w0})")
    sy, sx = _crop_sources(prep)
    return m.astype(bool)[np.ix_(sy, sx)]


def transform_boxes(boxes: np.ndarray, prep: PreparedImage) -> np.ndarray:
    """Boxes ``[n, 4]`` (x0, y0, x1, y1), original pixels, end-exclusive -> int64 ``[n, 4]`` on the model-input
    grid, clipped to the crop; a box that covers no pixel of the crop becomes (-1, -1, -1, -1)."""
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4), np.int64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise InputError(f"boxes must be [n, 4] (x0, y0, x1, y1), got shape {b.shape}")
    if not np.isfinite(b).all():
        raise InputError("boxes contain NaN or infinite coordinates")
    sy, sx = _crop_sources(prep)
    cx, cy = sx + 0.5, sy + 0.5  # centres, in original pixels, of the pixels each crop column/row comes from
    out = np.stack(
        [
            np.searchsorted(cx, b[:, 0], side="left"),
            np.searchsorted(cy, b[:, 1], side="left"),
            np.searchsorted(cx, b[:, 2], side="left"),
            np.searchsorted(cy, b[:, 3], side="left"),
        ],
        axis=1,
    ).astype(np.int64)
    empty = (out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])
    out[empty] = -1
    return out


def _axis_weights(n0: int, nr: int, start: int, n_crop: int, n_map: int):
    """For each of ``n0`` original pixels along an axis: left map index, weight of the right one, inside?"""
    c = (np.arange(n0) + 0.5) * (nr / n0) - start  # position in the crop, in resized pixels
    inside = (c >= 0.0) & (c < n_crop)
    f = np.clip(c * (n_map / n_crop) - 0.5, 0.0, n_map - 1.0)  # map pixel-centre coordinate, edges clamped
    i0 = np.minimum(np.floor(f).astype(np.int64), max(n_map - 2, 0))
    frac = f - i0 if n_map > 1 else np.zeros_like(f)
    return i0, np.minimum(i0 + 1, n_map - 1), frac, inside


def to_original(maps: np.ndarray | torch.Tensor, prep: PreparedImage, fill: float = np.nan) -> np.ndarray:
    """Maps ``[h, w]`` or ``[B, h, w]`` covering the model's input crop (any grid: input pixels or patches) ->
    ``[H0, W0]`` (or ``[B, H0, W0]``) float32 on the original image, bilinear, pixel centres as in PIL's resize
    (bilinear sampling as ``torch.nn.functional.interpolate(..., align_corners=False)``, edges clamped);
    original pixels whose centre lies outside the crop get ``fill``."""
    m = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    if m.ndim not in (2, 3) or 0 in m.shape:
        raise InputError(f"maps must be [h, w] or [B, h, w], got shape {m.shape}")
    m = m.astype(np.float64)
    (w0, h0), (rw, rh), (left, top, right, bottom) = prep.original_size, prep.resized_size, prep.crop_box
    h, w = m.shape[-2:]
    y0, y1, fy, in_y = _axis_weights(h0, rh, top, bottom - top, h)
    x0, x1, fx, in_x = _axis_weights(w0, rw, left, right - left, w)
    rows = m[..., x0] * (1.0 - fx) + m[..., x1] * fx  # separable bilinear: along x on the map's rows first
    fy = fy[:, None]
    out = (rows[..., y0, :] * (1.0 - fy) + rows[..., y1, :] * fy).astype(np.float32)
    out[..., ~(in_y[:, None] & in_x[None, :])] = fill
    return out


def overlay_original(
    image: str | Path | Image.Image | np.ndarray,
    map: np.ndarray | torch.Tensor,
    prep: PreparedImage,
    alpha: float = 0.5,
    cmap: str = "jet",
    signed: bool = False,
) -> np.ndarray:
    """The heatmap of ``map`` (``[h, w]`` or ``[1, h, w]``, min-max normalised over the map) over the original
    image at its original resolution -> uint8 ``[H0, W0, 3]``; outside the crop the image is left as it is.
    ``signed``: the map is drawn as :func:`vitlens.viz.overlay_map` draws signed maps (diverging, zero
    transparent) instead.

    ``image``: a file path (read with :func:`~vitlens.data.images.load_image`, as ``prepare`` got it), a PIL
    image or a uint8 ``[H0, W0, 3]`` array.
    """
    if isinstance(image, str | Path):
        arr = np.asarray(load_image(image))
    elif isinstance(image, Image.Image):
        arr = np.asarray(to_rgb(image))
    else:
        arr = np.asarray(image)
    w0, h0 = prep.original_size
    if arr.shape != (h0, w0, 3):
        raise InputError(f"image has shape {arr.shape}, but the prepared image came from a {w0}x{h0} original")
    m = map.detach().cpu().numpy() if isinstance(map, torch.Tensor) else np.asarray(map)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2 or not np.isfinite(m).all():
        raise InputError(f"map must be a finite [h, w] array, got shape {m.shape}")
    if signed:
        up = to_original(m.astype(np.float64), prep, fill=np.nan)
        inside = np.isfinite(up)
        blended = overlay_map(arr.astype(np.uint8), np.nan_to_num(up, nan=0.0), signed=True, alpha=alpha)
        return np.where(inside[..., None], blended, arr).astype(np.uint8)
    lo, hi = float(m.min()), float(m.max())
    heat = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m, dtype=np.float64)
    up = to_original(heat, prep, fill=np.nan)
    inside = np.isfinite(up)
    blended = overlay(arr.astype(np.uint8), np.nan_to_num(up, nan=0.0), alpha=alpha, cmap=cmap)
    return np.where(inside[..., None], blended, arr).astype(np.uint8)
