"""I-SAW (Mallick, Benois-Pineau & Zemmari, ICIP 2022): a class-weighted sum of the layers' attention maps.

The conventions of the gradient-weighted attention methods (AG-CAM, I-SAW, LeGrad) are stated once in
:mod:`vitlens.explainers.agcam`.
"""

from __future__ import annotations

import torch

from .attention import attention_pass, readout_row, to_grid
from .base import Explainer, Explanation
from .registry import register


@register
class ISAW(Explainer):
    """I-SAW (Mallick, Benois-Pineau & Zemmari, ICIP 2022): a class-specific weighted sum of the layers'
    self-attention maps, ``A_SAW = Σ_l α_l A_c^(l)`` (the formula as reported by the survey of Coporan 2025; the
    paper's abstract: "the main principle is in the use and weighting self-attention maps").

    The paper's exact weights could not be obtained (no public code or full text was found), so this is an
    explicit reading, with Grad-CAM weights at both levels:

    * ``A_c^(l) = ReLU(mean_h w_lh · r·A_lh)`` over the patch tokens, with ``w_lh = mean_{patches j}
      (r·∂y_c/∂A_lh)_j`` — the class-weighted attention map of layer l (Grad-CAM with heads as channels;
      the same map as ``attention_gradcam`` at layer l);
    * ``α_l = ReLU(mean_h w_lh) / Σ_l' ReLU(mean_h w_l'h)`` — layers weighted by their mean positive
      gradient, normalised to sum 1 (all zero when no layer has a positive mean gradient).

    ``r·`` is the readout row (the CLS row for CLS-token models). Deviation: the paper min-max normalises
    ``A_SAW``; vitlens returns maps unnormalised (``upsample`` min-max normalises).
    """

    name = "isaw"
    citation = (
        "Mallick, Benois-Pineau & Zemmari 2022 (ICIP), 'I-SAW: a self-attention weighted method for explanation "
        "of visual transformers'"
    )
    class_specific = True
    needs_attention = True

    def _explain(self, x, target):
        attns, grads, logits, t = attention_pass(self.model, x, target, grad=True)
        with torch.no_grad():
            b, _h, n, _ = attns[0].shape
            r = readout_row(self.model, n, b, attns[0].device, attns[0].dtype)[:, 0]  # [B, N]
            a_row = torch.stack([torch.einsum("bn,bhnm->bhm", r, a) for a in attns], dim=1)  # [B, L, H, N]
            g_row = torch.stack([torch.einsum("bn,bhnm->bhm", r, g) for g in grads], dim=1)
            p = self.model.num_prefix_tokens
            w = g_row[..., p:].mean(dim=-1)  # [B, L, H] Grad-CAM weight of each head
            layer_maps = (w[..., None] * a_row).mean(dim=2).clamp_min(0)  # [B, L, N]
            beta = w.mean(dim=2).clamp_min(0)  # [B, L]
            total = beta.sum(dim=1, keepdim=True)
            alpha = torch.where(total > 0, beta / total.clamp_min(torch.finfo(beta.dtype).tiny), 0.0)
            row = torch.einsum("bl,bln->bn", alpha, layer_maps)
            return Explanation(to_grid(self.model, row, x.shape[-2:]), logits, t)
