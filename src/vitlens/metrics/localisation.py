"""Localisation metrics: does the map point at the ground-truth evidence (a mask or a box)? Plus sparseness.

Ground truth is ``masks`` (bool ``[B, H, W]``) or ``boxes`` (``[B, 4]``, end-exclusive ``x0, y0, x1, y1``,
drawn as masks); a metric uses the masks when both are given unless it says otherwise. Maps are upsampled
bilinearly to the image size, values kept, unless a metric says it works on the map's own grid. Rankings
break ties by pixel index (row-major, lower first). An empty mask or box gives NaN + one MetricWarning for
every metric that compares with it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import MetricError
from ..maps import minmax
from .base import Metric, MetricInputs, MetricResult, check_number, sorted_values, top_k_mask
from .registry import register


def _flat_region(inp: MetricInputs) -> torch.Tensor:
    assert inp.region is not None
    return inp.region.reshape(inp.batch, -1)


# ------------------------------------------------------------------------------------------- pointing
@register
class PointingGame(Metric):
    """Pointing game (Zhang, Bargal, Lin, Brandt, Shen, Sclaroff 2018, "Top-down neural attention by
    excitation backprop", IJCV/ECCV 2016): 1.0 (hit) or 0.0 (miss) per image, higher is better.

    A hit when the maximum of the bilinearly upsampled map lies within ``tolerance`` pixels (Euclidean,
    default 15 as in the paper) of a mask pixel (of the box when only boxes are given). Ties in the maximum:
    the first maximum in row-major order counts (Quantus instead counts a hit if *any* tied maximum is inside
    and has no tolerance: equal to ``tolerance=0`` on maps without tied maxima). A constant map has no
    maximum: NaN + MetricWarning; an empty mask: NaN + MetricWarning (excluded from the mean).
    """

    name = "pointing_game"
    citation = (
        "Zhang, Bargal, Lin, Brandt, Shen, Sclaroff (2018). Top-down Neural Attention by Excitation Backprop. IJCV"
    )
    needs = ("region",)

    def __init__(self, tolerance: float = 15) -> None:
        check_number(self.name, "tolerance", tolerance, 0, math.inf)
        self.tolerance = tolerance

    def _compute(self, inp: MetricInputs) -> MetricResult:
        b = inp.batch
        _, w = inp.size
        inp.flag_constant_maps()
        inp.flag_empty_region()
        idx = inp.pixel_maps().reshape(b, -1).argmax(dim=1)  # the first maximum
        if self.tolerance == 0:
            hit = _flat_region(inp).gather(1, idx[:, None])[:, 0]
        else:
            h = inp.size[0]
            py, px = (idx // w).view(b, 1, 1), (idx % w).view(b, 1, 1)
            yy = torch.arange(h, device=idx.device).view(1, h, 1)
            xx = torch.arange(w, device=idx.device).view(1, 1, w)
            near = (yy - py) ** 2 + (xx - px) ** 2 <= self.tolerance**2
            hit = (near & inp.region).reshape(b, -1).any(dim=1)
        return MetricResult(scores=hit.double())


def _positive_mass_fraction(inp: MetricInputs, pixels: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Σ max(map, 0) inside / Σ max(map, 0); NaN + warning where the map has no positive value."""
    pos = pixels.reshape(inp.batch, -1).clamp_min(0).double()
    total = pos.sum(dim=1)
    inp.flag(total <= 0, "the map has no positive value (no mass to distribute)")
    within = (pos * inside.reshape(inp.batch, -1)).sum(dim=1)
    return within / total.clamp_min(torch.finfo(torch.float64).tiny)


@register
class EnergyPointingGame(Metric):
    """Energy-based pointing game (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel, Hu 2020, "Score-CAM", CVPR
    Workshops): fraction of the map's energy inside the box, higher is better.

    Energy = the non-negative part of the bilinearly upsampled map (negative values count as zero: a
    deviation for signed maps; Score-CAM maps are non-negative). Uses ``boxes`` when given (as the paper),
    else ``masks``. A map without positive values, or an empty box/mask: NaN + MetricWarning.
    """

    name = "energy_pointing_game"
    citation = "Wang et al. (2020). Score-CAM: Score-Weighted Visual Explanations for CNNs. CVPR Workshops"
    needs = ("region",)
    prefer = "boxes"

    def _compute(self, inp: MetricInputs) -> MetricResult:
        inp.flag_empty_region()
        return MetricResult(scores=_positive_mass_fraction(inp, inp.pixel_maps(), inp.region))


@register
class RelevanceMass(Metric):
    """Relevance mass accuracy (Arras, Osman, Samek 2022, "CLEVR-XAI", Information Fusion): positive
    relevance inside the mask / total positive relevance, at pixel level (bilinearly upsampled map), higher
    is better.

    Only positive relevance counts, as in the paper (Quantus' RelevanceMassAccuracy sums raw values; the two
    agree on non-negative maps). A map without positive values, or an empty mask: NaN + MetricWarning.
    """

    name = "relevance_mass"
    citation = "Arras, Osman, Samek (2022). CLEVR-XAI: A benchmark dataset for the ground truth evaluation of neural network explanations. Information Fusion"  # noqa: E501
    needs = ("region",)

    def _compute(self, inp: MetricInputs) -> MetricResult:
        inp.flag_empty_region()
        return MetricResult(scores=_positive_mass_fraction(inp, inp.pixel_maps(), inp.region))


@register
class RelevanceRank(Metric):
    """Relevance rank accuracy (Arras, Osman, Samek 2022, "CLEVR-XAI"): of the K pixels with the highest
    relevance (K = mask size), the fraction inside the mask; higher is better.

    Bilinearly upsampled map; ties go to the lower pixel index (Quantus' RelevanceRankAccuracy uses an
    unstable argsort; identical on maps without ties). Constant map or empty mask: NaN + MetricWarning.
    """

    name = "relevance_rank"
    citation = RelevanceMass.citation
    needs = ("region",)

    def _compute(self, inp: MetricInputs) -> MetricResult:
        inp.flag_constant_maps()
        inp.flag_empty_region()
        region = _flat_region(inp)
        k = region.sum(dim=1)
        top = top_k_mask(inp.pixel_maps().reshape(inp.batch, -1), k)
        hits = (top & region).sum(dim=1).double()
        return MetricResult(scores=hits / k.clamp_min(1).double())


# ------------------------------------------------------------------------------------------------ top k
@register
class IoUTopK(Metric):
    """IoU of the top-k% pixels with the mask (arXiv:2503.09535, 2025): higher is better.

    Threshold the bilinearly upsampled map at its ``k`` percent highest pixels (exactly
    ``round(k/100 * H * W)`` pixels, at least 1; ties go to the lower pixel index) and take the
    intersection-over-union of that set with the mask (or box). ``extra``: ``intersection`` (pixel count).
    Constant map or empty mask: NaN + MetricWarning.
    """

    name = "iou_top_k"
    citation = "arXiv:2503.09535: IoU of the top-k% pixels of the map with the ground-truth region"
    needs = ("region",)

    def __init__(self, k: float = 5.0) -> None:
        check_number(self.name, "k", k, 0, 100, lo_open=True)
        self.k = k

    def _compute(self, inp: MetricInputs) -> MetricResult:
        inp.flag_constant_maps()
        inp.flag_empty_region()
        h, w = inp.size
        n = max(1, math.floor(self.k / 100 * h * w + 0.5))
        region = _flat_region(inp)
        top = top_k_mask(inp.pixel_maps().reshape(inp.batch, -1), n)
        inter = (top & region).sum(dim=1).double()
        union = n + region.sum(dim=1).double() - inter
        return MetricResult(scores=inter / union, extra={"intersection": inter})


@register
class TopKIntersection(Metric):
    """Top-k intersection (Theiner, Müller-Budack, Ewerth 2022, "Interpretable Semantic Photo Geolocation",
    WACV; as Quantus' TopKIntersection): the fraction of the ``k`` highest pixels of the bilinearly upsampled
    map that lie in the mask; higher is better.

    ``k`` is a pixel count (default 1000, as Quantus). Ties go to the lower pixel index (Quantus: unstable
    argsort). Constant map or empty mask: NaN + MetricWarning; ``k`` larger than the image: MetricError.
    """

    name = "top_k_intersection"
    citation = "Theiner, Müller-Budack, Ewerth (2022). Interpretable Semantic Photo Geolocation. WACV"
    needs = ("region",)

    def __init__(self, k: int = 1000) -> None:
        check_number(self.name, "k", k, 1, math.inf, integer=True)
        self.k = k

    def _compute(self, inp: MetricInputs) -> MetricResult:
        h, w = inp.size
        if self.k > h * w:
            raise MetricError(f"metric {self.name!r}: k={self.k} is more than the {h * w} pixels of a {h}x{w} image")
        inp.flag_constant_maps()
        inp.flag_empty_region()
        top = top_k_mask(inp.pixel_maps().reshape(inp.batch, -1), self.k)
        inter = (top & _flat_region(inp)).sum(dim=1).double()
        return MetricResult(scores=inter / self.k)


# ---------------------------------------------------------------------------------------- segmentation
def otsu_threshold(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's (1979) threshold of every row of ``[B, N]``, batched, from a ``bins``-bin histogram over the
    row's [min, max] range, returned as a bin centre (as ``skimage.filters.threshold_otsu``: the threshold
    maximising the between-class variance; the first maximum wins). Foreground is ``values > threshold``.
    Rows must not be constant (the caller flags those)."""
    v = values.double()
    lo = v.amin(dim=1, keepdim=True)
    span = (v.amax(dim=1, keepdim=True) - lo).clamp_min(torch.finfo(torch.float64).tiny)
    idx = ((v - lo) / span * bins).floor().clamp(0, bins - 1).long()
    hist = torch.zeros(v.shape[0], bins, dtype=torch.float64, device=v.device).scatter_add_(1, idx, torch.ones_like(v))
    centres = lo + (torch.arange(bins, dtype=torch.float64, device=v.device) + 0.5) * span / bins
    w1 = hist.cumsum(dim=1)
    w2 = hist.flip(1).cumsum(dim=1).flip(1)
    m1 = (hist * centres).cumsum(dim=1) / w1.clamp_min(1)
    m2 = (hist * centres).flip(1).cumsum(dim=1).flip(1) / w2.clamp_min(1)
    between = w1[:, :-1] * w2[:, 1:] * (m1[:, :-1] - m2[:, 1:]) ** 2
    return centres.gather(1, between.argmax(dim=1, keepdim=True))[:, 0]


def _confusion(pred: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, ...]:
    tp = (pred & region).sum(dim=1).double()
    fp = (pred & ~region).sum(dim=1).double()
    fn = (~pred & region).sum(dim=1).double()
    tn = (~pred & ~region).sum(dim=1).double()
    return tp, fp, fn, tn


def _ratio(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / b.clamp_min(1)


@register
class OtsuSegmentation(Metric):
    """Segmentation by Otsu's threshold (Otsu 1979, IEEE Trans. SMC; Coporan 2025): F1 (Dice) of the
    binarised map with the mask, higher is better.

    Min-max normalise the bilinearly upsampled map, threshold it at Otsu's threshold of its 256-bin histogram
    (foreground = above the threshold), compare with the mask. ``scores`` = F1 (Dice); ``extra``:
    ``accuracy`` (pixel accuracy), ``f1``, ``jaccard`` (IoU of the foreground), ``threshold`` (on the
    normalised map). Constant map or empty mask: NaN + MetricWarning.
    """

    name = "otsu_segmentation"
    citation = "Otsu (1979). A Threshold Selection Method from Gray-Level Histograms. IEEE Trans. SMC"
    needs = ("region",)

    def _compute(self, inp: MetricInputs) -> MetricResult:
        inp.flag_constant_maps()
        inp.flag_empty_region()
        m = minmax(inp.pixel_maps()).reshape(inp.batch, -1)
        thr = otsu_threshold(m)
        pred = m.double() > thr[:, None]
        tp, fp, fn, tn = _confusion(pred, _flat_region(inp))
        f1 = _ratio(2 * tp, 2 * tp + fp + fn)
        extra = {
            "accuracy": (tp + tn) / m.shape[1],
            "f1": f1,
            "jaccard": _ratio(tp, tp + fp + fn),
            "threshold": thr,
        }
        return MetricResult(scores=f1, extra=extra)


@register
class MeanThresholdSegmentation(Metric):
    """Segmentation at the mean (Chefer, Gur, Wolf 2021, CVPR, ImageNet-segmentation protocol): mIoU of the
    binarised map with the mask, higher is better.

    Min-max normalise the bilinearly upsampled map, foreground = above its mean (as the authors' code,
    ``Res.gt(Res.mean())``), then per image: pixel accuracy and the IoU of foreground and of background;
    ``scores`` = mIoU (mean of the two IoUs). Deviation: the paper accumulates intersections and unions over
    the whole data set before dividing; ``extra`` holds them per image (``inter_fg``, ``union_fg``,
    ``inter_bg``, ``union_bg``) so that a caller can do the same, plus ``pixel_accuracy``, ``iou_fg``,
    ``iou_bg``, ``miou``. Constant map (the code's 0/0 gives all background) or empty mask: NaN +
    MetricWarning.
    """

    name = "mean_threshold_segmentation"
    citation = "Chefer, Gur, Wolf (2021). Transformer Interpretability Beyond Attention Visualization. CVPR"
    needs = ("region",)

    def _compute(self, inp: MetricInputs) -> MetricResult:
        inp.flag_constant_maps()
        inp.flag_empty_region()
        m = minmax(inp.pixel_maps()).reshape(inp.batch, -1)
        pred = m > m.mean(dim=1, keepdim=True)
        tp, fp, fn, tn = _confusion(pred, _flat_region(inp))
        union_fg, union_bg = tp + fp + fn, tn + fp + fn
        iou_fg, iou_bg = _ratio(tp, union_fg), _ratio(tn, union_bg)
        miou = (iou_fg + iou_bg) / 2
        extra = {
            "pixel_accuracy": (tp + tn) / m.shape[1],
            "iou_fg": iou_fg,
            "iou_bg": iou_bg,
            "miou": miou,
            "inter_fg": tp,
            "union_fg": union_fg,
            "inter_bg": tn,
            "union_bg": union_bg,
        }
        return MetricResult(scores=miou, extra=extra)


# ------------------------------------------------------------------------------------------ attention mass
@register
class FafBaf(Metric):
    """Foreground / background attention fraction on the map's own grid (Das & Huddar 2025): FAF, higher is
    better.

    The mask is downsampled to the map's grid by area (the fraction of foreground pixels in each cell,
    ``adaptive_avg_pool2d``; exact area when the image size is a multiple of the grid), then
    FAF = Σ A·M / Σ A and BAF = Σ A·(1 − M) / Σ A, so FAF + BAF = 1. Negative map values are clamped to zero
    (the fractions need a non-negative map; attention maps are). ``scores`` = FAF; ``extra``: ``faf``,
    ``baf``. A map without positive values, or an empty mask: NaN + MetricWarning.
    """

    name = "faf_baf"
    citation = "Das & Huddar 2025: foreground/background attention fraction on the patch grid"
    needs = ("region",)

    def _compute(self, inp: MetricInputs) -> MetricResult:
        inp.flag_empty_region()
        assert inp.region is not None
        cells = F.adaptive_avg_pool2d(inp.region[:, None].double(), tuple(inp.maps.shape[-2:]))[:, 0]
        faf = _positive_mass_fraction(inp, inp.maps, cells)
        return MetricResult(scores=faf, extra={"faf": faf, "baf": 1.0 - faf})


# -------------------------------------------------------------------------------------------- complexity
@register
class Sparseness(Metric):
    """Sparseness as the Gini index of the absolute map (Chalasani, Chen, Chowdhury, Wu, Jha 2020, ICML;
    as Quantus' Sparseness): in [0, 1), higher = sparser = better.

    Gini = Σ_i (2i − N − 1) a_(i) / (N Σ a) over the N pixels of the bilinearly upsampled map, ``a`` sorted
    ascending. Deviation from Quantus: no ``1e-7`` is added to every value (Quantus does, to avoid 0/0);
    an all-zero map gives NaN + MetricWarning instead. A constant non-zero map gives 0.
    """

    name = "sparseness"
    citation = (
        "Chalasani, Chen, Chowdhury, Wu, Jha (2020). Concise Explanations of Neural Networks using Adversarial "
        "Training. ICML"
    )

    def _compute(self, inp: MetricInputs) -> MetricResult:
        a = sorted_values(inp.pixel_maps().reshape(inp.batch, -1).abs()).double()
        n = a.shape[1]
        total = a.sum(dim=1)
        inp.flag(total <= 0, "the map is all zero")
        i = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
        gini = ((2 * i - n - 1) * a).sum(dim=1) / (n * total.clamp_min(torch.finfo(torch.float64).tiny))
        return MetricResult(scores=gini)
