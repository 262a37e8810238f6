"""The metric contract (see DESIGN.md) and the validation every metric shares.

``metric(model, images, maps, target=None, masks=None, boxes=None) -> MetricResult``:

* ``images``: float ``[B, C, H, W]`` already normalised for the model;
* ``maps``: ``[B, h, w]`` at any resolution (patch grid or pixels); a metric that needs pixels upsamples them
  bilinearly to ``(H, W)`` *without* normalisation (``vitlens.upsample(..., normalize=False)``);
* ``target``: None (the predicted class) | int | LongTensor[B];
* ``masks``: bool ``[B, H, W]`` at image resolution (numeric masks are read as ``mask != 0``);
* ``boxes``: integer ``[B, 4]`` as ``(x0, y0, x1, y1)``, end-exclusive (the convention of
  ``vitlens.data.synthetic.Sample.bbox``); a row ``(-1, -1, -1, -1)`` stands for "no box" (an empty mask).

Every metric is batched over images (no Python loop over images). Scores are float64 ``[B]`` on the CPU.
A score is NaN only for a documented reason (a map with NaN/inf values, a constant map where the metric ranks
pixels, an empty mask, a map without positive mass, ...); each reason that occurs raises one
:class:`MetricWarning` naming the images. Malformed inputs raise :class:`vitlens.errors.MetricError`.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MetricError
from ..models import Model, load_model
from ..registry import check_choice as _check_choice
from ..registry import check_number as _check_number

Target = int | torch.Tensor | Sequence[int] | None


class MetricWarning(UserWarning):
    """Some scores of a batch are NaN on purpose; the message says which images and why."""


@dataclass
class MetricResult:
    """Scores of one metric call: one float64 score per image, plus curves and extra outputs."""

    scores: torch.Tensor  # float64 [B]
    curves: torch.Tensor | None = None  # float64 [B, S] for curve metrics
    x: torch.Tensor | None = None  # float64 [S], the x-axis of the curves
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> float64 [B]
    x_labels: list[str] | None = None  # names of the curve points where they are not numbers

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def mean(self) -> float:
        """Mean over the images whose score is defined (not NaN); NaN when no score is defined."""
        ok = ~torch.isnan(self.scores)
        return float(self.scores[ok].mean()) if ok.any() else math.nan


@dataclass
class MetricInputs:
    """Validated inputs of one call, on the device of the images."""

    model: Model | None
    images: torch.Tensor  # float [B, C, H, W]
    maps: torch.Tensor  # float32 [B, h, w], finite (non-finite maps are zeroed and flagged)
    target: Target
    region: torch.Tensor | None  # bool [B, H, W]: the mask, or the boxes drawn as masks
    nan_reasons: dict[str, torch.Tensor] = field(default_factory=dict)  # reason -> bool [B]
    _pixel: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def pixel_maps(self) -> torch.Tensor:
        """The maps bilinearly upsampled to the image size, values kept (float32 ``[B, H, W]``)."""
        if self._pixel is None:
            if tuple(self.maps.shape[-2:]) == self.size:
                self._pixel = self.maps
            else:
                self._pixel = F.interpolate(self.maps[:, None], size=self.size, mode="bilinear", align_corners=False)[
                    :, 0
                ]
        return self._pixel

    def flag(self, cond: torch.Tensor, reason: str) -> None:
        """Mark images whose score is NaN for ``reason`` (bool ``[B]``)."""
        cond = cond.detach().to("cpu", torch.bool).reshape(-1)
        prev = self.nan_reasons.get(reason)
        self.nan_reasons[reason] = cond if prev is None else prev | cond

    def flag_constant_maps(self) -> None:
        """Metrics that rank pixels or patches give NaN for a constant map: it ranks nothing."""
        flat = self.maps.reshape(self.batch, -1)
        self.flag(flat.amax(dim=1) == flat.amin(dim=1), "the map is constant, so it ranks no pixel above another")

    def flag_empty_region(self) -> None:
        if self.region is not None:
            self.flag(~self.region.reshape(self.batch, -1).any(dim=1), "the mask (or box) is empty")


class Metric:
    """Base class. Subclasses set the class attributes, take their parameters as keyword arguments of
    ``__init__`` (validated there) and implement :meth:`_compute`."""

    name: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    higher_is_better: bool = True  # an instance may override it (e.g. perturbation's order)
    needs: ClassVar[tuple[str, ...]] = ()  # "model", "region" (masks or boxes)
    prefer: ClassVar[str] = "masks"  # the region used when both masks and boxes are given
    curve: ClassVar[bool] = False

    def __init__(self) -> None:
        """Metrics without parameters take none."""

    @classmethod
    def param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    @classmethod
    def param_defaults(cls) -> dict[str, Any]:
        sig = inspect.signature(cls.__init__)
        return {k: v.default for k, v in sig.parameters.items() if k != "self"}

    def params(self) -> dict[str, Any]:
        return {p: getattr(self, p) for p in self.param_names()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------------------------------- call
    def __call__(
        self,
        model: Model | Any,
        images: torch.Tensor,
        maps: torch.Tensor | None,
        target: Target = None,
        masks: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> MetricResult:
        inp = self.prepare(model, images, maps, target, masks, boxes)
        res = self._compute(inp)
        return self._finalize(res, inp)

    def _compute(self, inp: MetricInputs) -> MetricResult:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- validation
    def prepare(
        self,
        model: Model | Any,
        images: torch.Tensor,
        maps: torch.Tensor | None,
        target: Target = None,
        masks: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
    ) -> MetricInputs:
        """Validate the inputs of one call and move them to the device of the images (of the model)."""
        m: Model | None = None
        if "model" in self.needs:
            if model is None:
                raise MetricError(f"metric {self.name!r} needs the model (a vitlens.Model); got model=None")
            m = model if isinstance(model, Model) else load_model(model)
            x = m.check_images(images)
        else:
            m = model if isinstance(model, Model) else None
            x = check_images(images)
        b, _, h, w = x.shape
        maps = self._maps_or_none(maps, m, x, target)
        maps = check_maps(maps, b, self.name).to(x.device)
        bad = ~torch.isfinite(maps).reshape(b, -1).all(dim=1)
        if bad.any():
            maps = torch.where(bad[:, None, None], torch.zeros_like(maps), maps)
        mask_t = check_masks(masks, (b, h, w), self.name).to(x.device) if masks is not None else None
        box_t = box_masks(check_boxes(boxes, (b, h, w), self.name), (h, w)).to(x.device) if boxes is not None else None
        region = None
        if "region" in self.needs:
            if mask_t is None and box_t is None:
                raise MetricError(
                    f"metric {self.name!r} needs ground truth: masks=bool Tensor[B,H,W] or "
                    "boxes=LongTensor[B,4] as (x0, y0, x1, y1), end-exclusive"
                )
            if self.prefer == "boxes":
                region = box_t if box_t is not None else mask_t
            else:
                region = mask_t if mask_t is not None else box_t
        inp = MetricInputs(model=m, images=x, maps=maps, target=target, region=region)
        inp.flag(bad, "the map contains NaN or infinite values")
        return inp

    def _maps_or_none(self, maps: torch.Tensor | None, model: Model | None, images: torch.Tensor, target: Target):
        """Metrics that can compute their own maps override this; the others need maps."""
        if maps is None:
            raise MetricError(f"metric {self.name!r} needs maps=Tensor[B,h,w]; got maps=None")
        return maps

    # ------------------------------------------------------------------------------------ finalising
    def _finalize(self, res: MetricResult, inp: MetricInputs) -> MetricResult:
        b = inp.batch
        res.scores = _as_f64(res.scores)
        if res.scores.shape != (b,):  # pragma: no cover - a bug in a metric, not a user error
            raise RuntimeError(f"metric {self.name!r} returned scores of shape {tuple(res.scores.shape)}")
        if res.curves is not None:
            res.curves = _as_f64(res.curves)
        if res.x is not None:
            res.x = _as_f64(res.x)
        res.extra = {k: _as_f64(v) for k, v in res.extra.items()}
        seen = torch.zeros(b, dtype=torch.bool)
        parts = []
        for reason, cond in inp.nan_reasons.items():  # an image is reported under its first reason only
            new = cond & ~seen
            seen |= cond
            if new.any():
                idx = new.nonzero().flatten().tolist()
                shown = ", ".join(map(str, idx[:10])) + (", ..." if len(idx) > 10 else "")
                parts.append(f"{reason} for image(s) [{shown}]")
        if seen.any():
            res.scores[seen] = math.nan
            if res.curves is not None:
                res.curves[seen] = math.nan
            for v in res.extra.values():
                v[seen] = math.nan
            warnings.warn(f"metric {self.name!r}: {'; '.join(parts)}; their score is NaN", MetricWarning, stacklevel=3)
        return res


def _as_f64(t: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(t).detach().to("cpu", torch.float64).clone()


# ------------------------------------------------------------------------------------------------ checks
def check_images(images: Any) -> torch.Tensor:
    """Shape and value checks of an image batch when no model is involved."""
    if not isinstance(images, torch.Tensor):
        raise MetricError(f"images must be a torch.Tensor [B,C,H,W], got {type(images).__name__}")
    if images.ndim != 4:
        raise MetricError(f"images must have shape [B,C,H,W], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise MetricError(f"images must be a float tensor normalised for the model, got {images.dtype}")
    if images.shape[0] == 0 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise MetricError(f"images is empty: shape {tuple(images.shape)}")
    return images


def check_maps(maps: Any, batch: int, name: str) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise MetricError(f"metric {name!r}: maps must be a torch.Tensor [B,h,w], got {type(maps).__name__}")
    if maps.ndim != 3:
        raise MetricError(
            f"metric {name!r}: maps must have shape [B,h,w] (one 2-D map per image), got {tuple(maps.shape)}"
        )
    if maps.shape[0] != batch:
        raise MetricError(f"metric {name!r}: {maps.shape[0]} maps for a batch of {batch} images")
    if maps.shape[1] == 0 or maps.shape[2] == 0:
        raise MetricError(f"metric {name!r}: maps are empty, shape {tuple(maps.shape)}")
    if maps.is_complex():
        raise MetricError(f"metric {name!r}: maps must be real-valued, got {maps.dtype}")
    return maps.detach().float()


def check_masks(masks: Any, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    if not isinstance(masks, torch.Tensor):
        raise MetricError(f"metric {name!r}: masks must be a bool torch.Tensor [B,H,W], got {type(masks).__name__}")
    if tuple(masks.shape) != shape:
        raise MetricError(
            f"metric {name!r}: masks must have shape [B,H,W] = {list(shape)} (one mask per image, at image "
            f"resolution), got {tuple(masks.shape)}"
        )
    return masks.detach() if masks.dtype == torch.bool else masks.detach() != 0


def check_boxes(boxes: Any, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    b, h, w = shape
    boxes = torch.as_tensor(boxes) if not isinstance(boxes, torch.Tensor) else boxes
    if boxes.is_floating_point() or boxes.is_complex() or boxes.dtype == torch.bool:
        raise MetricError(f"metric {name!r}: boxes must hold integer pixel coordinates, got {boxes.dtype}")
    if tuple(boxes.shape) != (b, 4):
        raise MetricError(
            f"metric {name!r}: boxes must have shape [B,4] = [{b}, 4] as (x0, y0, x1, y1), got {tuple(boxes.shape)}"
        )
    boxes = boxes.detach().long().cpu()
    x0, y0, x1, y1 = boxes.unbind(1)
    bad = (x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h) | (x1 < x0) | (y1 < y0)
    bad &= ~(boxes == -1).all(dim=1)  # (-1, -1, -1, -1): no box (an empty mask)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise MetricError(
            f"metric {name!r}: box {boxes[i].tolist()} of image {i} is not inside the {w}x{h} image; boxes are "
            "(x0, y0, x1, y1) with 0 <= x0 <= x1 <= W and 0 <= y0 <= y1 <= H (end-exclusive)"
        )
    return boxes


def box_masks(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Boxes ``[B, 4]`` (x0, y0, x1, y1), end-exclusive, as bool masks ``[B, H, W]``."""
    h, w = size
    yy = torch.arange(h, device=boxes.device)[None, :, None]
    xx = torch.arange(w, device=boxes.device)[None, None, :]
    x0, y0, x1, y1 = (boxes[:, i, None, None] for i in range(4))
    return (yy >= y0) & (yy < y1) & (xx >= x0) & (xx < x1)


def descending_ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of every entry of ``[B, N]`` in descending order (0 = largest), ties broken by index (the lower
    index ranks first): a fixed rule, so that results are deterministic."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order).contiguous())
    return ranks


def sorted_values(x: torch.Tensor) -> torch.Tensor:
    """Every row of ``[B, N]`` sorted ascending (values only). On the CPU this uses numpy's vectorised sort,
    an order of magnitude faster than ``torch.sort`` there for image-sized rows."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and not x.requires_grad:
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def top_k_mask(values: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
    """Bool ``[B, N]``: the ``k`` (an int, or one per row) largest entries of each row, ties at the threshold
    going to the lower indices: the same set as ``descending_ranks(values) < k``, without a full argsort."""
    b, n = values.shape
    kk = torch.as_tensor(k, device=values.device).long().expand(b)
    vk = sorted_values(values).to(values.device).gather(1, (n - kk).clamp(0, n - 1)[:, None])
    greater = values > vk
    tied = values == vk
    need = kk[:, None] - greater.sum(dim=1, keepdim=True)
    return (greater | (tied & (tied.cumsum(dim=1) <= need))) & (kk[:, None] > 0)


# ---------------------------------------------------------------------------------------- param checks
def check_choice(metric: str, name: str, value: Any, choices: Sequence[Any]) -> Any:
    """A metric parameter among ``choices`` (:func:`vitlens.registry.check_choice`, MetricError)."""
    return _check_choice(name, value, choices, error=MetricError, prefix=f"metric {metric!r}: ")


def check_number(
    metric: str, name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False
) -> Any:
    """A metric parameter in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``), an int when ``integer``."""
    return _check_number(
        name, value, lo, hi, lo_open=lo_open, integer=integer, error=MetricError, prefix=f"metric {metric!r}: "
    )
