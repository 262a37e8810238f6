"""Attention-Guided CAM (Leem & Seo, AAAI 2024): attention gradients gated by the attention scores.

AG-CAM, I-SAW (:mod:`vitlens.explainers.isaw`) and LeGrad (:mod:`vitlens.explainers.legrad`) share these
conventions: they read every block through the model adapter (:meth:`vitlens.models.Model.record_attention`
or :meth:`~vitlens.models.Model.trace_blocks`), differentiate the target logit with ``torch.autograd.grad``
(no parameter ``.grad`` is touched; the input is made to require grad, so frozen models work) and return,
like the other attention explainers, the readout row (the CLS row for CLS-token models, the mean of the CLS
and distillation rows for distilled DeiT, the mean of the patch rows for average-pooled ViTs) over the patch
tokens, on the patch grid.
"""

from __future__ import annotations

import torch

from .attention import to_grid
from .base import Explainer, Explanation
from .registry import register


def _readout_rows(model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the token rows the classifier reads, their weights)."""
    r = model.readout(n)
    rows = torch.nonzero(r, as_tuple=True)[0]
    return rows, r[rows]


@register
class AGCAM(Explainer):
    """Attention-Guided CAM (Leem & Seo, AAAI 2024): ``Σ_l Σ_h ReLU(∂y_c/∂A_lh) ⊙ σ(S_lh)`` on the CLS row,
    over the patch tokens.

    As in the authors' code (``Methods/AGCAM/AGCAM.py`` of LeemSaebom/Attention-Guided-CAM):

    * ``S_lh = scale · q kᵀ`` are the pre-softmax attention scores of head h in block l, normalised with a
      sigmoid instead of the softmax (the paper's feature maps ``F_h^k = σ(A_h^k)``);
    * ``∂y_c/∂A_lh`` is the gradient of the target logit with respect to the attention *probabilities* (the
      softmax output, where the reference registers its backward hook), not the scores;
    * that gradient is taken with the input of every attention layer detached (the reference's
      ``x = x.detach()`` in ``Attention.forward``, the paper's ``∂E^{k+1}/∂E^k = I``): from the output back
      to block l it flows only through the skip connections and the MLPs. vitlens does not modify the model;
      it obtains the same gradient with vector-Jacobian products on the traced blocks
      (``g ← g + J_MLP_kᵀ g`` for ``k = L … l+1``, then ``J_attnᵀ g`` into ``A_l``);
    * heads and layers are summed (``head_fusion = layer_fusion = 'sum'``), the CLS column is dropped.

    Deviations: the readout row replaces the hard-coded CLS row (identical for CLS-token models; the mean of
    the CLS and distillation rows for distilled DeiT, the mean of the patch rows for average-pooled ViTs);
    batches are supported (the reference explains one image); maps are not upsampled or normalised here.
    """

    name = "agcam"
    citation = (
        "Leem & Seo 2024 (AAAI), 'Attention Guided CAM: Visual Explanations of Vision Transformer Guided by "
        "Self-Attention'"
    )
    class_specific = True
    needs_attention = True
    needs_trace = True

    def _explain(self, x, target):
        model = self.model
        with model.trace_blocks() as (traces, _head), torch.enable_grad():
            logits = model.forward(x.detach().requires_grad_(True))
            score, t = self._target_score(logits, target)
            # gradient of the logit at the residual stream leaving the last block
            (g,) = torch.autograd.grad(score, [traces[-1].out], retain_graph=True)
            grads: list = [None] * len(traces)  # dy/dA_l with the attention inputs cut
            for k in range(len(traces) - 1, -1, -1):
                tr = traces[k]
                # out = h + MLP(norm2(h)), h = x + attn_out: dy/dh = g + J_MLPᵀ g (reached through attn_out)
                (g_mlp,) = torch.autograd.grad(tr.mlp_out, [tr.attn_out], grad_outputs=g, retain_graph=True)
                g = g + g_mlp  # dy/dh_k = dy/d attn_out_k; with the attention input cut, also dy/dx_k
                (grads[k],) = torch.autograd.grad(tr.attn_out, [tr.attn], grad_outputs=g, retain_graph=True)
            qs = [tr.q.detach() for tr in traces]
            ks = [tr.k.detach() for tr in traces]
            scales = [tr.scale for tr in traces]
        with torch.no_grad():
            n = qs[0].shape[2]
            rows, w = _readout_rows(model, n)
            rows, w = rows.to(x.device), w.to(device=x.device, dtype=qs[0].dtype)
            cam = None
            for q, k, s, gr in zip(qs, ks, scales, grads, strict=True):
                scores = s * torch.einsum("bhrd,bhnd->bhrn", q[:, :, rows], k)  # readout rows of S
                term = torch.einsum("r,bhrn->bn", w, gr[:, :, rows].clamp_min(0) * torch.sigmoid(scores))
                cam = term if cam is None else cam + term
            return Explanation(to_grid(model, cam, x.shape[-2:]), logits.detach(), t)
