"""Pictures and files the app sends: PNG data URLs, heatmaps, mask outlines, the download zip.

The page composes an overlay from two layers, the model's input crop and the colour heatmap on top with CSS
``opacity``; that is exactly :func:`vitlens.viz.overlay` (``(1-a)·image + a·colour``) with
``a`` from the slider, so the slider needs no request. The zip holds what ``vitlens explain`` writes: the raw
map (``.npy``, float32 on the explainer's grid), the heatmap, the overlay at the chosen opacity, plus the
input crop, the evidence mask of a builtin sample and ``settings.json``.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from typing import Any

import numpy as np
import torch

from ..maps import upsample
from ..viz import colorize, map_rgba, overlay_map, png_data_uri
from ..viz import png_bytes as _png

PNG_LEVEL = 1  # fast zlib level: the app encodes PNGs per request


def png_bytes(arr: np.ndarray) -> bytes:
    return _png(arr, PNG_LEVEL)


def data_url(arr: np.ndarray) -> str:
    return png_data_uri(arr, PNG_LEVEL)


def heat01(raw_map: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``[h, w]`` raw map -> ``[H, W]`` float in [0, 1] (bilinear, per-map min-max, as ``vitlens explain``)."""
    return upsample(raw_map[None].float(), size)[0].numpy()


def heat_rgb(heat: np.ndarray) -> np.ndarray:
    return colorize(heat, "jet")


def heat_image(raw_map: torch.Tensor, size: tuple[int, int], signed: bool) -> np.ndarray:
    """The page's heat layer: unsigned maps as jet RGB of the min-max map (:func:`heat01`); signed maps as RGBA,
    diverging colours with opacity ``|v| / max|v|`` (:func:`vitlens.viz.map_rgba`), so zero shows the image."""
    if not signed:
        return heat_rgb(heat01(raw_map, size))
    values = upsample(raw_map[None].float(), size, normalize=False)[0].numpy()
    rgb, weight = map_rgba(values, signed=True)
    return np.dstack([rgb, (weight * 255.0 + 0.5).astype(np.uint8)])


def map_payload(raw: np.ndarray) -> dict[str, Any]:
    """Exact raw map for API clients: float32 little-endian bytes, base64, with its shape."""
    a = np.ascontiguousarray(raw, dtype="<f4")
    return {"shape": list(a.shape), "dtype": "float32", "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def decode_map(payload: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(payload["b64"]), dtype="<f4").reshape(payload["shape"])


def build_zip(result: dict[str, Any], opacity: float) -> bytes:
    """The download: per method ``<label>.npy``, ``<label>_heatmap.png``, ``<label>_overlay.png``; ``input.png``,
    ``mask.png`` (builtin samples), ``settings.json`` (model, image, target, methods, parameters, scores)."""
    display: np.ndarray = result["display"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=3) as z:
        z.writestr("input.png", png_bytes(display))
        if result.get("mask") is not None:
            z.writestr("mask.png", png_bytes(result["mask"].astype(np.uint8) * 255))
        for label, raw in result["maps"].items():
            npy = io.BytesIO()
            np.save(npy, raw.astype(np.float32))
            z.writestr(f"{label}.npy", npy.getvalue())
            signed = bool(result.get("signed", {}).get(label, False))
            values = upsample(torch.from_numpy(raw)[None].float(), display.shape[:2], normalize=False)[0].numpy()
            z.writestr(f"{label}_heatmap.png", png_bytes(heat_image(torch.from_numpy(raw), display.shape[:2], signed)))
            z.writestr(f"{label}_overlay.png", png_bytes(overlay_map(display, values, signed=signed, alpha=opacity)))
        settings = {**result["settings"], "overlay_opacity": opacity}
        z.writestr("settings.json", json.dumps(settings, indent=2))
    return buf.getvalue()
