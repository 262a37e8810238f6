"""Sanity checks: does the explanation depend on the model's parameters at all?"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import MetricError, VitlensError
from ..models import Model, wrap_module
from .base import Metric, MetricInputs, MetricResult, MetricWarning, Target, check_number
from .registry import register


def rankdata(x: torch.Tensor) -> torch.Tensor:
    """Ranks (1-based) of every row of ``[B, N]``, ties given their average rank (``scipy.stats.rankdata``'s
    "average" method), batched; float64."""
    b, n = x.shape
    sorted_x, order = torch.sort(x, dim=1, stable=True)
    pos = torch.arange(n, device=x.device).expand(b, n)
    first = torch.ones_like(sorted_x, dtype=torch.bool)
    first[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, pos, torch.zeros_like(pos)).cummax(dim=1).values
    end = torch.where(last, pos, torch.full_like(pos, n)).flip(1).cummin(dim=1).values.flip(1)
    avg = (start + end).double() / 2 + 1
    return torch.empty_like(avg).scatter_(1, order, avg)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of the rows of ``a`` and ``b`` (``[B, N]``; average ranks for ties), batched,
    float64; NaN where a row is constant (the correlation is undefined)."""
    ra, rb = rankdata(a.reshape(a.shape[0], -1)), rankdata(b.reshape(b.shape[0], -1))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    den = (ra.square().sum(dim=1) * rb.square().sum(dim=1)).sqrt()
    num = (ra * rb).sum(dim=1)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(torch.float64).tiny), torch.full_like(num, math.nan))


# ------------------------------------------------------------------------------------------- cascade
def _blocks(model: Model) -> list[str]:
    """Names of the model's blocks (ViT: transformer blocks) or stages (CNN, Swin), in forward order."""
    root = model.module
    names = {id(m): n for n, m in root.named_modules()}
    if model.family == "vit":
        blocks = []
        for attn in model.attention_modules():
            name = names.get(id(attn), "")
            blocks.append(name.rsplit(".", 1)[0] if "." in name else name)
        return [b for b in blocks if b]
    info = getattr(root, "feature_info", None)
    if info is not None:
        try:
            mods = [d["module"] for d in info]
        except (TypeError, KeyError):
            mods = []
        named = dict(root.named_modules())
        mods = [n for n in mods if n in named and any(True for _ in named[n].parameters())]
        if mods:
            return mods
    return [
        n
        for n, m in root.named_children()
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and any(True for _ in m.parameters())
    ]


def cascade(model: Model) -> list[tuple[str, list[tuple[str, nn.Module]]]]:
    """Steps of cascading randomisation, from the top: ``head`` (every parameterised module registered
    after the last block: final norm and classifier), then each block from last to first, then ``stem``
    (everything before the first block: patch/pixel embedding, position embedding, class token, CNN stem).
    Each step lists ``(name, module)`` of the modules whose own parameters it re-initialises."""
    root = model.module
    blocks = _blocks(model)
    if not blocks:
        raise MetricError(f"cannot find the blocks or stages of {model.name!r} to randomise")
    order = {n: i for i, (n, _) in enumerate(root.named_modules())}

    def inside(name: str, block: str) -> bool:
        return name == block or name.startswith(block + ".")

    first_block, last_block = order[blocks[0]], order[blocks[-1]]
    per_block: dict[str, list[tuple[str, nn.Module]]] = {b: [] for b in blocks}
    head: list[tuple[str, nn.Module]] = []
    stem: list[tuple[str, nn.Module]] = []
    for name, mod in root.named_modules():
        if not any(True for _ in mod.parameters(recurse=False)):
            continue
        owner = next((b for b in blocks if inside(name, b)), None)
        if owner is not None:
            per_block[owner].append((name, mod))
        elif any(inside(b, name) for b in blocks) or order[name] < first_block:
            stem.append((name, mod))  # an ancestor of the blocks (e.g. the root's pos_embed) or before them
        elif order[name] > last_block:
            head.append((name, mod))
        else:
            stem.append((name, mod))
    steps = [("head", head), *((b, per_block[b]) for b in reversed(blocks)), ("stem", stem)]
    return [(label, mods) for label, mods in steps if mods]


def reinitialise(mods: list[tuple[str, nn.Module]], seed: int) -> None:
    """Re-initialise the own parameters of each module from its initial distribution (``reset_parameters``:
    torch.nn.init, e.g. Kaiming-uniform for Linear/Conv, ones/zeros for norms); parameters of modules
    without one (position embeddings, class tokens, layer scales) from a truncated normal with std 0.02.
    Seeded, leaving the global random state untouched. The draws happen on the CPU (each module is moved
    there, re-initialised and moved back), so the randomised model is the same on every device."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for _, m in mods:
            first = next(itertools.chain(m.parameters(), m.buffers()), None)
            device = first.device if first is not None else torch.device("cpu")
            m.to("cpu")
            if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                m.reset_parameters()
            else:
                for p in m.parameters(recurse=False):
                    nn.init.trunc_normal_(p, std=0.02, a=-0.04, b=0.04)
            m.to(device)


@register
class RandomisationSanity(Metric):
    """Cascading model-parameter randomisation (Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim 2018,
    "Sanity Checks for Saliency Maps", NeurIPS): lower is better (the map depends on the parameters).

    On a deep copy of the model (the user's model is never modified), re-initialise the parameters
    cumulatively from the top (``head``: final norm and classifier; then the blocks/stages from last to
    first; then the ``stem``: embeddings), recompute the maps with the same explainer (``explainer``,
    ``explainer_params``) for the same target classes after each step, and take the Spearman rank
    correlation (average ranks for ties; of absolute values when ``absolute``, the default, as Quantus'
    MPRT; Adebayo report both) with the original map. ``curves`` [B, n_steps], ``x_labels`` the step names,
    ``scores`` the mean over steps (over the steps where it is defined), ``extra['last']`` the fully
    randomised model's correlation. The unrandomised point (correlation 1 by construction for a
    deterministic explainer) is left out of the curve and the mean unless ``include_original=True``.
    ``maps`` are the original maps; None computes them. If they are not at the explainer's resolution,
    both are upsampled bilinearly to the image size. Deviations: re-initialisation uses each module's own
    initialiser (Adebayo use a truncated normal); parameter-free blocks are skipped. A constant original map:
    NaN + MetricWarning; a constant randomised map makes that step NaN (MetricWarning).
    """

    name = "randomisation_sanity"
    citation = "Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim (2018). Sanity Checks for Saliency Maps. NeurIPS"
    higher_is_better = False
    needs = ("model",)
    curve = True

    def __init__(
        self,
        explainer: str = "gradcam",
        explainer_params: dict[str, Any] | None = None,
        seed: int = 0,
        absolute: bool = True,
        include_original: bool = False,
    ) -> None:
        from ..explainers import explainer_class

        try:
            cls = explainer_class(explainer)
        except VitlensError as e:
            raise MetricError(f"metric {self.name!r}: {e}") from None
        params = dict(explainer_params or {})
        unknown = sorted(set(params) - set(cls.param_names()))
        if unknown:
            raise MetricError(
                f"metric {self.name!r}: explainer {explainer!r} has no parameter {', '.join(unknown)}; "
                f"its parameters: {cls.param_names() or 'none'}"
            )
        check_number(self.name, "seed", seed, 0, math.inf, integer=True)
        self.explainer = explainer
        self.explainer_params = params
        self.seed = seed
        self.absolute = bool(absolute)
        self.include_original = bool(include_original)

    def _explain(self, model: Model, images: torch.Tensor, target: Target) -> torch.Tensor:
        from ..explainers import get_explainer

        return get_explainer(self.explainer, model, **self.explainer_params)(images, target=target)

    def _maps_or_none(self, maps: torch.Tensor | None, model: Model | None, images: torch.Tensor, target: Target):
        if maps is not None:
            return maps
        assert model is not None
        return self._explain(model, images, target)

    def _compute(self, inp: MetricInputs) -> MetricResult:
        model, x = inp.model, inp.images
        assert model is not None
        inp.flag_constant_maps()
        with torch.no_grad():  # not inference_mode: the targets feed gradient explainers
            t = model.resolve_target(model(x), inp.target)
        module = copy.deepcopy(model.module)
        twin = wrap_module(
            module, name=f"{model.name} (randomised)", preprocessing=model.preprocessing, class_names=model.class_names
        )
        steps = cascade(twin)
        original = inp.maps

        def similarity(maps: torch.Tensor) -> torch.Tensor:
            a, m = original, maps.to(original.device, torch.float32)
            if a.shape != m.shape:
                up = torch.nn.functional.interpolate
                a = up(a[:, None], size=inp.size, mode="bilinear", align_corners=False)[:, 0]
                m = up(m[:, None], size=inp.size, mode="bilinear", align_corners=False)[:, 0]
            if self.absolute:
                a, m = a.abs(), m.abs()
            return spearman(a, m)

        cols, labels = [], []
        if self.include_original:
            cols.append(similarity(self._explain(twin, x, t)))
            labels.append("original")
        for k, (label, mods) in enumerate(steps):
            reinitialise(mods, self.seed * 1_000_003 + k)
            cols.append(similarity(self._explain(twin, x, t)))
            labels.append(label)
        curves = torch.stack(cols, dim=1)
        undefined = torch.isnan(curves) & ~torch.stack(list(inp.nan_reasons.values())).any(dim=0)[:, None].to(
            curves.device
        )
        if undefined.any():
            where = sorted({labels[j] for j in undefined.nonzero()[:, 1].tolist()})
            warnings.warn(
                f"metric {self.name!r}: the recomputed map is constant after randomising {where} for some images; "
                "the rank correlation is undefined there (NaN) and left out of the mean",
                MetricWarning,
                stacklevel=3,
            )
        defined = ~torch.isnan(curves)
        n_def = defined.sum(dim=1)
        mean = torch.where(defined, curves, torch.zeros_like(curves)).sum(dim=1) / n_def.clamp_min(1)
        mean = torch.where(n_def > 0, mean, torch.full_like(mean, math.nan))
        x_axis = torch.arange(curves.shape[1], dtype=torch.float64)
        return MetricResult(scores=mean, curves=curves, x=x_axis, extra={"last": curves[:, -1]}, x_labels=labels)
