"""Map utilities shared by the CLI, reports and metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InputError


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max normalisation of ``[B, h, w]`` to [0, 1]; a constant map becomes all zeros
    (it carries no ranking), never NaN."""
    flat = maps.reshape(maps.shape[0], -1)
    lo = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.reshape(maps.shape)


def upsample(maps: torch.Tensor, size: tuple[int, int] | torch.Size, *, normalize: bool = True) -> torch.Tensor:
    """Bilinear upsampling of ``[B, h, w]`` maps to ``size`` = (H, W), then per-map min-max to [0, 1]
    (``normalize=False`` keeps the values)."""
    if not isinstance(maps, torch.Tensor) or maps.ndim != 3:
        raise InputError(f"maps must be a tensor [B, h, w], got {getattr(maps, 'shape', type(maps).__name__)}")
    if not torch.isfinite(maps).all():
        raise InputError("maps contain NaN or infinite values")
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) <= 0:
        raise InputError(f"size must be (H, W) with positive entries, got {size}")
    up = F.interpolate(maps[:, None].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
    return minmax(up) if normalize else up
