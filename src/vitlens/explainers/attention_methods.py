"""Class-specific attention methods that weight attention by gradients: AG-CAM, I-SAW and LeGrad.

All three read every block through the model adapter (:meth:`vitlens.models.Model.record_attention` or
:meth:`~vitlens.models.Model.trace_blocks`), differentiate the target logit with ``torch.autograd.grad`` (no
parameter ``.grad`` is touched; the input is made to require grad, so frozen models work) and return, like
the other attention explainers, the readout row (the CLS row for CLS-token models, the mean of the CLS and
distillation rows for distilled DeiT, the mean of the patch rows for average-pooled ViTs) over the patch
tokens, on the patch grid.
"""

from __future__ import annotations

import torch

from ..errors import ExplainerError
from .attention import attention_pass, readout_row, to_grid
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
            logits = model._call(x.detach().requires_grad_(True))
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


@register
class ISAW(Explainer):
    """I-SAW (Mallick, Benois-Pineau & Zemmari, ICIP 2022): a class-specific weighted sum of the layers'
    self-attention maps, ``A_SAW = Σ_l α_l A_c^(l)`` (the formula as reported by the survey in seed 003; the
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


@register
class LeGrad(Explainer):
    """LeGrad (Bousselham et al. 2024): for each layer l, the target logit of the classifier applied to the
    tokens leaving block l, ``s_l = head(norm(z_l))_c``; its gradient with respect to that block's attention
    map, ``ReLU(∂s_l/∂A_l)``, averaged over heads and query rows; averaged over layers; patch tokens.

    As in the authors' code (``compute_legrad_clip`` in WalBouss/LeGrad): the gradient is taken of layer l's
    own score with respect to layer l's post-softmax attention, clamped at 0, ``mean`` over heads, ``mean``
    over all query rows, the columns of the patch tokens kept, and the layer maps accumulated.

    ``start_layer``: first block used (default 0: all layers, as the paper states; the reference wrapper's
    default ``layer_index=-2`` uses the last two, ``start_layer=-2`` reproduces it).

    Deviations: intermediate tokens are read out by the model's own classifier path (``model.head_logits``:
    final norm, CLS / distillation / average pooling and head), where the CLIP code mean-pools all tokens
    and projects them into the text space; the layers are averaged rather than summed (same map up to a
    constant factor); the reference's min-max normalisation and upsampling are left to ``upsample``.
    """

    name = "legrad"
    citation = (
        "Bousselham et al. 2024, 'LeGrad: An Explainability Method for Vision Transformers via Feature Formation "
        "Sensitivity'"
    )
    class_specific = True
    needs_attention = True
    needs_trace = True

    def __init__(self, model, start_layer: int = 0) -> None:
        super().__init__(model)
        depth = len(self.model.attention_modules())
        if isinstance(start_layer, bool) or not isinstance(start_layer, int) or not -depth <= start_layer < depth:
            raise ExplainerError(
                f"start_layer={start_layer!r} is not a block index of {self.model.name!r} "
                f"(valid: -{depth}..{depth - 1})"
            )
        self.start_layer = start_layer

    def _explain(self, x, target):
        model = self.model
        with model.trace_blocks() as (traces, _head), torch.enable_grad():
            logits = model._call(x.detach().requires_grad_(True))
            t = model.resolve_target(logits, target)
            first = self.start_layer % len(traces)
            acc = None
            for tr in traces[first:]:
                s = model.head_logits(tr.out).gather(1, t[:, None]).sum()
                (g,) = torch.autograd.grad(s, [tr.attn], retain_graph=True)
                m = g.detach().clamp_min(0).mean(dim=(1, 2))  # heads, then query rows
                acc = m if acc is None else acc + m
            row = acc / (len(traces) - first)
        return Explanation(to_grid(model, row, x.shape[-2:]), logits.detach(), t)
