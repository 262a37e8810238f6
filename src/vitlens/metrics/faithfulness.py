"""Faithfulness metrics: does removing (or revealing) what a map calls relevant change the model's output?

All three perturb images batched over images *and* steps: the (image, step) pairs of a call are flattened and
run through the model in chunks of at most ``batch_size`` perturbed images, one forward per chunk. Every
map is upsampled bilinearly to the image size (values kept) before it ranks patches or pixels; ties in a
ranking are broken by the index of the patch/pixel (row-major, lower first), so results are deterministic.
``batch_size`` defaults to 32: on a CPU a ViT's cost per image grows again for larger batches (deit_tiny,
224 px: about 10% more per image at 64 than at 32); raise it on a GPU, or give ``memory_mb`` instead: the
chunk is then as many images as fit in that budget (:func:`vitlens.models.memory.chunk_for_budget`, an
upper bound of one image's activations). On an out-of-memory error the chunk halves and the same chunk is
tried again (logged on ``vitlens.metrics``), down to one image; results do not depend on the chunk size.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..devices import is_out_of_memory
from ..errors import MetricError
from ..models import Model
from ..models.memory import chunk_for_budget
from .base import Metric, MetricInputs, MetricResult, check_choice, check_number, descending_ranks
from .registry import register

BASELINES = ("blur", "mean", "zero")
log = logging.getLogger("vitlens.metrics")


def gaussian_blur(x: torch.Tensor, sigma: float, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` per channel, kernel normalised to sum 1, reflect padding
    (replicate where the image is smaller than the kernel radius)."""
    r = kernel_size // 2
    t = torch.arange(kernel_size, dtype=torch.float64, device=x.device) - r
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = (g / g.sum()).to(x.dtype)
    c = x.shape[1]
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode=mode), g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def baseline_images(x: torch.Tensor, kind: str, sigma: float = 5.0, kernel_size: int = 11) -> torch.Tensor:
    """The image that replaces removed content, in the model's normalised space: ``blur`` (Gaussian blur of
    the image), ``mean`` (each image's per-channel mean) or ``zero`` (zero in normalised space, i.e. the
    normalisation's mean colour)."""
    if kind == "blur":
        return gaussian_blur(x, sigma, kernel_size)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    return torch.zeros_like(x)


def target_probabilities(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits.float(), dim=-1).gather(1, target[:, None])[:, 0]


def run_chunked(
    model: Model,
    make: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images_idx: torch.Tensor,
    steps_idx: torch.Tensor,
    out: torch.Tensor,
    batch_size: int,
    progress: bool,
    desc: str,
    memory_mb: float | None = None,
    input_shape: tuple[int, int, int] | None = None,
) -> None:
    """Fill ``out[b, s]`` with ``score(logits, b)`` of ``model(make(b, s))`` for every pair (b, s) given, in
    chunks of ``batch_size`` perturbed images (or as many as fit in ``memory_mb``); a chunk that runs out of
    memory is halved and tried again."""
    n = int(images_idx.numel())
    chunk = batch_size if memory_mb is None else chunk_for_budget(model, input_shape, memory_mb)
    bar = tqdm(total=n, desc=desc, disable=None if progress and n > chunk else True, leave=False)
    start = 0
    while start < n:
        b = images_idx[start : start + chunk]
        s = steps_idx[start : start + chunk]
        try:
            with torch.inference_mode():
                val = score(model(make(b, s)), b)
        except (RuntimeError, MemoryError) as e:
            if chunk == 1 or not (isinstance(e, MemoryError) or is_out_of_memory(e)):
                raise
            chunk //= 2
            log.warning("%s: out of memory at %d images per forward; retrying with %d", desc, b.numel(), chunk)
            if model.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        out[b, s] = val.to(out.dtype)
        start += b.numel()
        bar.update(b.numel())
    bar.close()


def _check_head(model: Model, name: str) -> None:
    if model.num_classes == 0:
        raise MetricError(f"metric {name!r} needs class scores, but {model.name!r} has no classification head")


class _PatchCurve(Metric):
    """Insertion / deletion of patches in order of relevance (shared implementation)."""

    needs = ("model",)
    curve = True
    insertion: bool = True

    def __init__(
        self,
        steps: int | None = None,
        baseline: str = "blur",
        patch: int | tuple[int, int] | None = None,
        sigma: float = 5.0,
        kernel_size: int = 11,
        batch_size: int = 32,
        progress: bool = True,
        memory_mb: float | None = None,
    ) -> None:
        if steps is not None:
            check_number(self.name, "steps", steps, 1, math.inf, integer=True)
        check_choice(self.name, "baseline", baseline, BASELINES)
        if patch is not None:
            pair = (patch, patch) if isinstance(patch, int) and not isinstance(patch, bool) else patch
            if not (isinstance(pair, Sequence) and len(pair) == 2):
                raise MetricError(f"metric {self.name!r}: patch must be an int or (height, width), got {patch!r}")
            for v in pair:
                check_number(self.name, "patch", v, 1, math.inf, integer=True)
            patch = (int(pair[0]), int(pair[1]))
        check_number(self.name, "sigma", sigma, 0.0, math.inf, lo_open=True)
        check_number(self.name, "kernel_size", kernel_size, 1, math.inf, integer=True)
        if kernel_size % 2 == 0:
            raise MetricError(f"metric {self.name!r}: kernel_size must be odd, got {kernel_size}")
        check_number(self.name, "batch_size", batch_size, 1, math.inf, integer=True)
        if memory_mb is not None:
            check_number(self.name, "memory_mb", memory_mb, 0, math.inf, lo_open=True)
        self.memory_mb = None if memory_mb is None else float(memory_mb)
        self.steps = steps
        self.baseline = baseline
        self.patch = patch
        self.sigma = float(sigma)
        self.kernel_size = int(kernel_size)
        self.batch_size = int(batch_size)
        self.progress = bool(progress)

    def patch_size(self, model: Model, size: tuple[int, int]) -> tuple[int, int]:
        """The ``patch`` parameter; else the model's patch size for a ViT (image size / token grid); else 16."""
        if self.patch is not None:
            ph, pw = self.patch
        elif model.family == "vit":
            gh, gw = model.grid_size(size)
            ph, pw = size[0] // gh, size[1] // gw
        else:
            ph = pw = 16
        if ph > size[0] or pw > size[1]:
            raise MetricError(f"metric {self.name!r}: patch {ph}x{pw} is larger than the {size[0]}x{size[1]} image")
        return ph, pw

    def _compute(self, inp: MetricInputs) -> MetricResult:
        model, x = inp.model, inp.images
        assert model is not None
        _check_head(model, self.name)
        b, _, h, w = x.shape
        ph, pw = self.patch_size(model, (h, w))
        nh, nw = -(-h // ph), -(-w // pw)
        p = nh * nw
        s = p if self.steps is None else self.steps
        if s > p:
            raise MetricError(
                f"metric {self.name!r}: steps={s} is more than the {p} patches of {ph}x{pw} pixels; use steps <= {p}"
            )
        inp.flag_constant_maps()
        valid = ~torch.stack([c for c in inp.nan_reasons.values()]).any(dim=0).to(x.device)

        dev = x.device
        rows, cols = torch.arange(h, device=dev) // ph, torch.arange(w, device=dev) // pw
        pid = (rows[:, None] * nw + cols[None, :]).flatten()
        if tuple(inp.maps.shape[-2:]) == (nh, nw):  # already one value per patch: use it
            relevance = inp.maps.reshape(b, p).double()
        else:  # mean of the upsampled map over the patch's pixels (partial patches at the border too)
            counts = torch.bincount(pid, minlength=p).double()
            sums = torch.zeros(b, p, dtype=torch.float64, device=dev)
            relevance = sums.index_add_(1, pid, inp.pixel_maps().reshape(b, -1).double()) / counts
        ranks = descending_ranks(relevance)
        pix_rank = ranks[:, pid].view(b, 1, h, w)
        n_changed = (torch.arange(s + 1, device=dev) * p) // s  # patches changed after each step

        base = baseline_images(x, self.baseline, self.sigma, self.kernel_size)
        with torch.inference_mode():
            logits0 = model(x)
        t = model.resolve_target(logits0, inp.target).to(dev)
        probs = torch.full((b, s + 1), math.nan, dtype=torch.float64, device=dev)
        # the unperturbed image is the first point of deletion and the last point of insertion: reuse its forward
        probs[:, s if self.insertion else 0] = target_probabilities(logits0, t).double()
        steps = torch.arange(0, s, device=dev) if self.insertion else torch.arange(1, s + 1, device=dev)
        imgs = valid.nonzero().flatten()
        bi = imgs.repeat_interleave(steps.numel())
        si = steps.repeat(imgs.numel())

        def make(bb: torch.Tensor, ss: torch.Tensor) -> torch.Tensor:
            changed = pix_rank[bb] < n_changed[ss].view(-1, 1, 1, 1)
            if self.insertion:  # changed = revealed
                return torch.where(changed, x[bb], base[bb])
            return torch.where(changed, base[bb], x[bb])

        run_chunked(
            model,
            make,
            lambda lg, bb: target_probabilities(lg, t[bb]),
            bi,
            si,
            probs,
            self.batch_size,
            self.progress,
            self.name,
            self.memory_mb,
            tuple(x.shape[1:]),
        )
        frac = n_changed.double() / p
        auc = torch.trapezoid(probs, frac, dim=1)
        return MetricResult(scores=auc, curves=probs, x=frac)


@register
class Insertion(_PatchCurve):
    """Insertion AUC (Petsiuk, Das, Saenko 2018, "RISE", BMVC): higher is better.

    Start from the baseline image and reveal the image's patches, most relevant first, ``steps`` times (one
    patch per step by default; fewer steps reveal several patches per step); the score is the area under the
    curve of the target class's softmax probability against the fraction of patches revealed, in [0, 1]
    (trapezoidal rule; the curve has ``steps + 1`` points and starts at the baseline image).

    Patches: the model's patch size for a ViT (the token grid), else 16 px; ``patch`` overrides. A map on
    exactly that patch grid ranks the patches by its own values; a map at any other resolution is upsampled
    bilinearly to the image size and a patch's relevance is the mean over its pixels (bilinear upsampling
    of a patch-grid map would blend neighbouring patches into each patch's mean and change the ranking).
    Ties go to the lower patch index (row-major).
    Baselines (images arrive normalised, so baselines are made in normalised space): ``blur`` (default, as in
    RISE's insertion) is a Gaussian blur (``sigma`` 5, ``kernel_size`` 11, as RISE) of the normalised image,
    which equals blurring the pixels and normalising (the normalisation is a per-channel affine map and the
    kernel sums to 1); ``mean`` is each image's per-channel mean; ``zero`` is zero in normalised space (the
    normalisation's mean colour). Deviations from RISE: RISE ranks single pixels (224 per step) and pads the
    blur with zeros; here patches are ranked (``patch=1`` gives pixels) and the blur pads by reflection.
    A constant map ranks nothing: NaN + MetricWarning (and no forwards are spent on it).
    """

    name = "insertion"
    citation = "Petsiuk, Das, Saenko (2018). RISE: Randomized Input Sampling for Explanation of Black-box Models. BMVC"
    higher_is_better = True
    insertion = True


@register
class Deletion(_PatchCurve):
    """Deletion AUC (Petsiuk, Das, Saenko 2018, "RISE", BMVC): lower is better.

    Replace the image's patches with the baseline, most relevant first, ``steps`` times; the score is the
    area under the target class's softmax probability against the fraction of patches removed, in [0, 1]
    (trapezoidal rule, ``steps + 1`` points starting at the unperturbed image). Default baseline ``zero``
    (zero in normalised space, the normalisation's mean colour), as RISE's deletion (``torch.zeros_like`` of
    the normalised image). Patches, ranking, baselines, deviations: see ``insertion``.
    """

    name = "deletion"
    citation = Insertion.citation
    higher_is_better = False
    insertion = False

    def __init__(
        self,
        steps: int | None = None,
        baseline: str = "zero",
        patch: int | tuple[int, int] | None = None,
        sigma: float = 5.0,
        kernel_size: int = 11,
        batch_size: int = 32,
        progress: bool = True,
        memory_mb: float | None = None,
    ) -> None:
        super().__init__(steps, baseline, patch, sigma, kernel_size, batch_size, progress, memory_mb)


DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@register
class Perturbation(Metric):
    """Positive / negative perturbation (Chefer, Gur, Wolf 2021, CVPR, Sec. 4): lower AUC is better for
    ``order="positive"``, higher for ``order="negative"``.

    Remove 10%, 20%, ..., 90% of the *pixels* in order of relevance of the bilinearly upsampled map (positive:
    most relevant first; negative: least relevant first), ``int(H*W*fraction)`` pixels each, as the authors'
    code does (it ranks the upsampled 224x224 maps with ``topk``); removed pixels become black (pixel value
    0 before normalisation, ``-mean/std`` in normalised space), as in the authors' code, which zeroes the
    unnormalised image; ``baseline="zero"`` sets them to zero in normalised space (the mean colour) instead.
    The curve is the accuracy (top-1 prediction == target) at fractions 0 (the unperturbed image), 0.1, ...,
    0.9; the score is its area over [0, 0.9] (trapezoidal rule, so at most 0.9). ``target`` is the class the
    prediction must keep: the paper uses the ground-truth label (pass it as ``target``); by default the
    predicted class of the unperturbed image, whose accuracy is then 1. Ties in the ranking go to the lower
    pixel index (the code's ``topk`` leaves them unspecified). A constant map: NaN + MetricWarning.
    """

    name = "perturbation"
    citation = "Chefer, Gur, Wolf (2021). Transformer Interpretability Beyond Attention Visualization. CVPR"
    needs = ("model",)
    curve = True

    def __init__(
        self,
        order: str = "positive",
        baseline: str = "black",
        fractions: Sequence[float] = DEFAULT_FRACTIONS,
        batch_size: int = 32,
        progress: bool = True,
        memory_mb: float | None = None,
    ) -> None:
        check_choice(self.name, "order", order, ("positive", "negative"))
        check_choice(self.name, "baseline", baseline, ("black", "zero"))
        try:
            fr = tuple(float(f) for f in fractions)
        except (TypeError, ValueError):
            raise MetricError(f"metric {self.name!r}: fractions must be numbers in (0, 1], got {fractions!r}") from None
        if not fr or any(not 0 < f <= 1 for f in fr) or any(a >= b for a, b in itertools.pairwise(fr)):
            raise MetricError(
                f"metric {self.name!r}: fractions must be increasing numbers in (0, 1], got {fractions!r}"
            )
        check_number(self.name, "batch_size", batch_size, 1, math.inf, integer=True)
        if memory_mb is not None:
            check_number(self.name, "memory_mb", memory_mb, 0, math.inf, lo_open=True)
        self.memory_mb = None if memory_mb is None else float(memory_mb)
        self.order = order
        self.baseline = baseline
        self.fractions = fr
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self.higher_is_better = order == "negative"

    def _compute(self, inp: MetricInputs) -> MetricResult:
        model, x = inp.model, inp.images
        assert model is not None
        _check_head(model, self.name)
        b, c, h, w = x.shape
        dev = x.device
        inp.flag_constant_maps()
        valid = ~torch.stack(list(inp.nan_reasons.values())).any(dim=0).to(dev)
        pix = inp.pixel_maps().reshape(b, -1)
        ranks = descending_ranks(pix if self.order == "positive" else -pix).view(b, 1, h, w)
        counts = torch.tensor([0] + [int(h * w * f) for f in self.fractions], device=dev)
        if self.baseline == "black":
            pre = model.preprocessing
            if len(pre.mean) != c or len(pre.std) != c:
                raise MetricError(
                    f"metric {self.name!r}: the model's preprocessing has {len(pre.mean)} channel means for "
                    f"{c}-channel images; use baseline='zero'"
                )
            mean = torch.tensor(pre.mean, dtype=x.dtype, device=dev).view(1, c, 1, 1)
            std = torch.tensor(pre.std, dtype=x.dtype, device=dev).view(1, c, 1, 1)
            fill = -mean / std
        else:
            fill = torch.zeros(1, c, 1, 1, dtype=x.dtype, device=dev)

        with torch.inference_mode():
            logits0 = model(x)
        t = model.resolve_target(logits0, inp.target).to(dev)
        acc = torch.full((b, counts.numel()), math.nan, dtype=torch.float64, device=dev)
        acc[:, 0] = (logits0.argmax(dim=-1) == t).double()
        steps = torch.arange(1, counts.numel(), device=dev)
        imgs = valid.nonzero().flatten()
        bi = imgs.repeat_interleave(steps.numel())
        si = steps.repeat(imgs.numel())

        def make(bb: torch.Tensor, ss: torch.Tensor) -> torch.Tensor:
            removed = ranks[bb] < counts[ss].view(-1, 1, 1, 1)
            return torch.where(removed, fill, x[bb])

        run_chunked(
            model,
            make,
            lambda lg, bb: lg.argmax(dim=-1) == t[bb],
            bi,
            si,
            acc,
            self.batch_size,
            self.progress,
            self.name,
            self.memory_mb,
            tuple(x.shape[1:]),
        )
        frac = torch.tensor((0.0, *self.fractions), dtype=torch.float64, device=dev)
        return MetricResult(scores=torch.trapezoid(acc, frac, dim=1), curves=acc, x=frac)
