"""Where the AttnLRP rules apply in a model: the adapters' side of :mod:`vitlens.explainers.lrp`.

AttnLRP (Achtibat et al. 2024) is sound only on modules whose forward consists of operations its rules cover:
linear maps, reshapes, concatenation, residual additions, mean pooling, dropout in eval mode, plus three rule
sites: LayerNorm, element-wise activations and the q/k/v projections of attention. Which module classes of an
architecture are of that kind is architecture knowledge, so it lives here, next to the adapters, and each
adapter (:class:`~vitlens.models.timm_models.TimmViT`, ``TimmSwin``, :class:`~vitlens.models.hf_models.HFViT`)
answers :meth:`~vitlens.models.base.Model.lrp_sites` with :func:`find_lrp_sites` and the classes of its own
library. Classes are compared exactly (``type(m) is C``), not with ``isinstance``: a subclass may run other
operations in its forward.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from torch import nn

from ..errors import ExplainerError

# the parts a projection's output holds, in order: a fused [q | k | v] projection or one of them
PROJECTION_PARTS = ("qkv", "q", "k", "v")

# plain torch modules whose forward is covered by the rules (or is a rule site)
TORCH_SAFE: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv2d,
    nn.Dropout,
    nn.Identity,
    nn.Sequential,
    nn.ModuleList,
    nn.Softmax,
    nn.Flatten,
)
TORCH_ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.GELU, nn.SiLU, nn.ReLU)

SUPPORTED = (
    "timm ViT/DeiT (incl. distilled and register tokens, CLS or mean readout), timm Swin V1 and Hugging Face "
    "ViT/DeiT built from Linear, LayerNorm, GELU and standard attention"
)


@dataclass(frozen=True)
class LrpSites:
    """The rule sites of one model: LayerNorm modules (identity rule on ``σ``), element-wise activations
    (identity rule) and attention projections ``(linear, part)`` with ``part`` in :data:`PROJECTION_PARTS`
    (uniform rule on the two matrix products, applied as a gradient scale at these outputs)."""

    layernorms: tuple[nn.Module, ...]
    activations: tuple[nn.Module, ...]
    projections: tuple[tuple[nn.Linear, str], ...]


def qualname(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def find_lrp_sites(
    module: nn.Module,
    *,
    model_name: str,
    safe: Collection[type],
    layernorms: Collection[type],
    activations: Collection[type],
    attention: Callable[[nn.Module], list[tuple[nn.Linear, str]] | str | None],
    problem: Callable[[nn.Module], str | None] = lambda m: None,
    method: str = "attnlrp",
) -> LrpSites:
    """Walk ``module`` and collect its rule sites, refusing any module the rules do not cover.

    ``safe``: the library classes whose forward is covered (besides :data:`TORCH_SAFE`); ``layernorms`` and
    ``activations``: the classes that are those rule sites (besides ``nn.LayerNorm`` and
    :data:`TORCH_ACTIVATIONS`); ``attention(m)``: None when ``m`` is not an attention module, else its
    projections or the reason they cannot be set; ``problem(m)``: any other reason a covered module is not
    (e.g. max pooling in a head). Raises :class:`ExplainerError` naming the module.
    """
    norms, acts, projections = [], [], []
    for path, m in module.named_modules():
        where = path or "<root>"
        if "forward" in m.__dict__:
            raise ExplainerError(
                f"{method} cannot run on {model_name!r}: module {where!r} has an instance-level forward "
                "override, so the operations it runs are unknown"
            )
        kind = type(m)
        if kind is nn.LayerNorm or kind in layernorms:
            norms.append(m)
            continue
        if kind in TORCH_ACTIVATIONS or kind in activations:
            acts.append(m)
            continue
        if kind in TORCH_SAFE:
            continue
        if kind not in safe:
            raise ExplainerError(
                f"{method} has no LRP rule for module {where!r} of {model_name!r} ({qualname(m)}); supported: "
                f"{SUPPORTED}; use 'gradcam' for this model"
            )
        found = attention(m)
        if isinstance(found, str):
            raise ExplainerError(f"{method} cannot run on {model_name!r}: attention module {where!r}: {found}")
        if found is not None:
            projections += found
        why = problem(m)
        if why is not None:
            raise ExplainerError(f"{method} cannot run on {model_name!r}: module {where!r}: {why}")
    if not projections:
        raise ExplainerError(f"{method} found no attention module in {model_name!r}")
    bad = [p for _, p in projections if p not in PROJECTION_PARTS]
    if bad:  # pragma: no cover - an adapter bug
        raise ExplainerError(f"adapter of {model_name!r} named projection parts {bad}; valid: {PROJECTION_PARTS}")
    return LrpSites(tuple(norms), tuple(acts), tuple(projections))
