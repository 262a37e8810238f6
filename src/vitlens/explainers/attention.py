"""Attention-family explainers: raw attention and Attention Rollout, and the primitives every attention method
shares (head fusion, discarding, the readout row, one recording pass); Gradient Attention Rollout builds on
them in :mod:`vitlens.explainers.gradient_rollout`.

All of them read the attention probabilities ``A_l`` of every block (``[B, heads, N, N]``) through the
model adapter and return the row of the token(s) the classifier reads — the CLS row for CLS-token models,
as in the papers — over the patch tokens, on the patch grid.

Only that one row of the product ``R = Â_L ⋯ Â_1`` is needed, so it is computed from the left as a
vector-matrix product per layer (``r ← r · Â_l``, ``l = L … 1``), O(L·N²) per image instead of the
O(L·N³) of the full matrix product; the result is the same row.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..models import HEAD_FUSIONS, Model
from ..registry import ParamRanges
from .base import Explainer, Explanation, Target, check_choice
from .registry import register


# ------------------------------------------------------------------------------------------ primitives
def fuse_heads(a: torch.Tensor, how: str) -> torch.Tensor:
    """``[B, H, N, N] -> [B, N, N]`` by mean, max or min over heads."""
    if how == "mean":
        return a.mean(dim=1)
    if how == "max":
        return a.amax(dim=1)
    if how == "min":
        return a.amin(dim=1)
    raise ValueError(how)


def discard_lowest(a: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest ``ratio`` fraction of each ``[N, N]`` map in ``[B, N, N]``, never entry (0, 0)
    (CLS→CLS), as in Abnar & Zuidema's and vit-explain's rollout."""
    b, n, _ = a.shape
    k = int(n * n * ratio)
    if k <= 0:
        return a
    flat = a.reshape(b, n * n).clone()
    keyed = flat.clone()
    keyed[:, 0] = torch.inf  # the CLS→CLS entry is never chosen
    idx = keyed.topk(min(k, n * n - 1), dim=-1, largest=False).indices
    flat.scatter_(1, idx, 0.0)
    return flat.reshape(b, n, n)


def readout_row(model: Model, n: int, batch: int, device, dtype) -> torch.Tensor:
    """The readout vector as ``[B, 1, N]``."""
    return model.readout(n).to(device=device, dtype=dtype).expand(batch, 1, n).clone()


def rollout_row(model: Model, mats: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """Readout row of ``Â_L ⋯ Â_1`` with ``Â = rownorm(α·A + (1−α)·I)`` for fused per-layer matrices ``mats``
    (``[B, N, N]``, forward order): ``r ← r · Â_l`` for ``l = L … 1``. Returns ``[B, N]``.

    ``Â`` is never built: with row sums ``s = α·A·1 + (1−α)`` and ``u = r / s``,
    ``r · Â = α·(u · A) + (1−α)·u``, which saves two N×N passes per layer.
    """
    b, n, _ = mats[-1].shape
    r = readout_row(model, n, b, mats[-1].device, mats[-1].dtype)
    tiny = torch.finfo(r.dtype).tiny
    for a in reversed(mats):
        s = (alpha * a.sum(dim=-1) + (1.0 - alpha)).clamp_min(tiny)[:, None, :]  # [B, 1, N]
        u = r / s
        r = alpha * torch.bmm(u, a) + (1.0 - alpha) * u
    return r[:, 0]


def to_grid(model: Model, row: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """Patch-token part of a ``[B, N]`` row as ``[B, h, w]``."""
    h, w = model.grid_size(input_hw)
    p = model.num_prefix_tokens
    if row.shape[1] - p != h * w:
        raise RuntimeError(f"{row.shape[1] - p} patch tokens do not match the {h}x{w} grid")
    return row[:, p:].reshape(row.shape[0], h, w)


def attention_pass(
    model: Model, x: torch.Tensor, target: Target, *, grad: bool, layers: list[int] | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor] | None, torch.Tensor, torch.Tensor]:
    """One forward recording attention (of all blocks, or of ``layers``); with ``grad``, also
    ``∂y_c/∂A_l`` of the target logits.

    Returns (attentions, gradients or None, logits, targets). Gradients come from
    ``torch.autograd.grad``: no parameter ``.grad`` is touched, and the input is made to require grad so
    that this works on frozen models too.
    """
    with model.record_attention(layers) as rec:
        if grad:
            with torch.enable_grad():
                logits = model.forward(x.detach().requires_grad_(True))
        else:
            with torch.inference_mode():
                logits = model.forward(x)
    t = model.resolve_target(logits, target)
    grads = None
    if grad:
        with torch.enable_grad():
            grads = rec.gradients(logits.gather(1, t[:, None]).sum())
        attns = [a.detach().float() for a in rec.attentions]
    else:
        attns = [a.float() for a in rec.attentions]  # float32 also under a bf16/fp16 autocast
    return attns, grads, logits.detach(), t


# ------------------------------------------------------------------------------------------ explainers
class _AttentionExplainer(Explainer):
    needs_attention = True

    def __init__(self, model, head_fusion: str = "mean") -> None:
        super().__init__(model)
        check_choice("head_fusion", head_fusion, HEAD_FUSIONS)
        self.head_fusion = head_fusion


@register
class RawAttention(_AttentionExplainer):
    """Last-layer attention from the CLS token to the patches, heads fused.

    Map = readout row of ``fuse_h(A_L)`` over the patch tokens (the CLS row for CLS-token models; the
    attention-map baseline of arXiv:2503.09535 and of Chefer et al. 2021). Not class-specific.
    """

    name = "raw_attention"
    citation = "Dosovitskiy et al. 2021 (ICLR), attention maps as used by Chefer et al. 2021 (CVPR)"

    @torch.no_grad()
    def _explain(self, x, target):
        attns, _, logits, t = attention_pass(self.model, x, target, grad=False, layers=[-1])
        a = fuse_heads(attns[-1], self.head_fusion)
        row = torch.bmm(readout_row(self.model, a.shape[-1], a.shape[0], a.device, a.dtype), a)[:, 0]
        return Explanation(to_grid(self.model, row, x.shape[-2:]), logits, t)


@register
class Rollout(_AttentionExplainer):
    """Attention Rollout (Abnar & Zuidema 2020): per layer fuse heads, discard the lowest ``discard_ratio``
    of the fused weights (never CLS→CLS), ``Â = α·A + (1−α)·I`` with rows renormalised,
    ``R = Â_L ⋯ Â_1``; map = CLS row of R over the patch tokens.

    Defaults follow the paper (mean fusion, no discarding, α = 0.5); ``head_fusion`` max/min and
    ``discard_ratio`` follow vit-explain (Gildenblat 2020). Not class-specific.
    """

    name = "rollout"
    citation = "Abnar & Zuidema 2020 (ACL), 'Quantifying Attention Flow in Transformers'"
    param_ranges: ClassVar[ParamRanges] = {"discard_ratio": (0.0, 1.0, True), "alpha": (0.0, 1.0, False)}

    def __init__(self, model, head_fusion: str = "mean", discard_ratio: float = 0.0, alpha: float = 0.5) -> None:
        super().__init__(model, head_fusion)
        self.discard_ratio = self.check_param("discard_ratio", discard_ratio)
        self.alpha = self.check_param("alpha", alpha)

    @torch.no_grad()
    def _explain(self, x, target):
        attns, _, logits, t = attention_pass(self.model, x, target, grad=False)
        mats = [discard_lowest(fuse_heads(a, self.head_fusion), self.discard_ratio) for a in attns]
        row = rollout_row(self.model, mats, self.alpha)
        return Explanation(to_grid(self.model, row, x.shape[-2:]), logits, t)
