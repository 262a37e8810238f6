"""Relevance-propagation explainers for transformers.

``generic_attention``: Chefer, Gur & Wolf 2021b (ICCV), "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", the self-attention rule:
``R = I``; per layer ``Ā = mean_h((∇A ⊙ A)⁺)``, ``R ← R + Ā·R``; map = CLS row of R over the patches.
"""

from __future__ import annotations

import torch

from .attention import attention_pass, readout_row, to_grid
from .base import Explainer, Explanation
from .registry import register


@register
class GenericAttention(Explainer):
    """Generic attention explainability (Chefer et al. 2021b): ``R ← R + mean_h((∇A ⊙ A)⁺)·R`` from
    ``R = I``, CLS row over patches. Class-specific through ``∇A = ∂y_c/∂A``.

    Only the readout row of ``R_L = (I + Ā_L)⋯(I + Ā_1)`` is computed, from the left (``r ← r + r·Ā_l``,
    ``l = L … 1``), which equals that row of the paper's matrix recursion.
    """

    name = "generic_attention"
    citation = "Chefer, Gur & Wolf 2021b (ICCV), 'Generic Attention-model Explainability'"
    class_specific = True
    needs_attention = True

    def _explain(self, x, target):
        attns, grads, logits, t = attention_pass(self.model, x, target, grad=True)
        with torch.no_grad():
            b, _, n, _ = attns[-1].shape
            r = readout_row(self.model, n, b, attns[-1].device, attns[-1].dtype)
            for a, g in zip(reversed(attns), reversed(grads), strict=True):
                r = r + torch.bmm(r, (g * a).clamp_min(0).mean(dim=1))
            return Explanation(to_grid(self.model, r[:, 0], x.shape[-2:]), logits, t)
