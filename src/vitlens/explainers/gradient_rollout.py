"""Gradient Attention Rollout: Attention Rollout (:mod:`vitlens.explainers.attention`) on gradient-weighted
attention, ``fuse_h(ReLU(A ⊙ ∂y_c/∂A))`` per layer, which makes it class-specific.
"""

from __future__ import annotations

import torch

from .attention import Rollout, attention_pass, discard_lowest, fuse_heads, rollout_row, to_grid
from .base import Explanation
from .registry import register


@register
class GradRollout(Rollout):
    """Gradient Attention Rollout (class-specific rollout, as used by Barekatain & Glocker 2025 and
    Das & Huddar 2025; Gildenblat's vit-explain): per layer ``fuse_h(ReLU(A ⊙ ∂y_c/∂A))``, then the same
    discarding, residual
    ``α·A + (1−α)·I`` with renormalised rows, and product as :class:`Rollout`.

    Deviation from vit-explain: the ReLU is applied per head before fusing (the formula of Das & Huddar 2025);
    vit-explain fuses first and clamps after, which differs for max/min fusion and for mean when heads
    disagree in sign.
    """

    name = "grad_rollout"
    citation = "Chefer et al. 2021 / Gildenblat 2020 (vit-explain), gradient attention rollout"
    class_specific = True

    def _explain(self, x, target):
        attns, grads, logits, t = attention_pass(self.model, x, target, grad=True)
        with torch.no_grad():
            mats = [
                discard_lowest(fuse_heads((a * g).clamp_min(0), self.head_fusion), self.discard_ratio)
                for a, g in zip(attns, grads, strict=True)
            ]
            row = rollout_row(self.model, mats, self.alpha)
            return Explanation(to_grid(self.model, row, x.shape[-2:]), logits, t)
