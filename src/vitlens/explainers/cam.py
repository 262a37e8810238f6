"""Class activation maps.

``gradcam`` (Selvaraju et al. 2017, ICCV): feature maps ``F_k`` of a layer, channel weights
``w_k = mean_ij ∂y_c/∂F_k,ij``, map ``ReLU(Σ_k w_k F_k)``. For ViTs the "feature maps" are the patch tokens
of a block reshaped to the patch grid (default: the input of the last block's first norm, i.e. the
residual stream entering the last block), as in pytorch-grad-cam's ViT recipe; for Swin the output of a
stage (default the last); for CNNs the last convolutional stage (``layer4`` for ResNets).

``attention_gradcam``: Grad-CAM applied to the last attention layer, the ViT baseline of Chefer et al.
2021 (CVPR) and arXiv:2503.09535: per head weight = mean over the CLS row of ``∂y_c/∂A``, map =
``ReLU(mean_h(w_h · A_h[CLS, patches]))``.
"""

from __future__ import annotations

import torch

from .attention import attention_pass, readout_row, to_grid
from .base import Explainer, Explanation
from .registry import register


@register
class GradCAM(Explainer):
    """Grad-CAM (Selvaraju et al. 2017): ``ReLU(Σ_k mean(∂y_c/∂F_k) · F_k)`` on a layer's feature grid.

    ``layer``: block index for ViTs (default -1: tokens entering the last block), stage index for Swin
    (default -1), module name for CNNs (default: last conv stage, e.g. ``layer4``).
    """

    name = "gradcam"
    citation = "Selvaraju et al. 2017 (ICCV), 'Grad-CAM'"
    class_specific = True

    def __init__(self, model, layer: int | str | None = None) -> None:
        super().__init__(model)
        self.layer = layer
        self.model.feature_site(layer, self.model.preprocessing.input_size)  # validate early

    def _explain(self, x, target):
        with self.model.record_features(self.layer, x.shape[-2:]) as rec, torch.enable_grad():
            logits = self.model.forward(x.detach().requires_grad_(True))
            score, t = self._target_score(logits, target)
            grads = rec.gradient(score)
            feats = rec.features.detach()
        with torch.no_grad():
            weights = grads.mean(dim=(2, 3), keepdim=True)
            cam = (weights * feats).sum(dim=1).clamp_min(0)
        return Explanation(cam, logits.detach(), t)


@register
class AttentionGradCAM(Explainer):
    """Grad-CAM on the last attention layer (Chefer et al. 2021's ViT baseline; the "GradCAM" of arXiv:2503.09535):
    ``ReLU(mean_h(mean(∂y_c/∂A_h[CLS]) · A_h[CLS, patches]))``."""

    name = "attention_gradcam"
    citation = "Selvaraju et al. 2017, applied to ViT attention as in Chefer et al. 2021 (CVPR)"
    class_specific = True
    needs_attention = True

    def _explain(self, x, target):
        attns, grads, logits, t = attention_pass(self.model, x, target, grad=True, layers=[-1])
        with torch.no_grad():
            a, g = attns[-1], grads[-1]  # [B, H, N, N]
            b, _h, n, _ = a.shape
            r = readout_row(self.model, n, b, a.device, a.dtype)  # [B, 1, N]
            a_row = torch.einsum("bxn,bhnm->bhm", r, a)  # readout row per head
            g_row = torch.einsum("bxn,bhnm->bhm", r, g)
            p = self.model.num_prefix_tokens
            w = g_row[:, :, p:].mean(dim=-1, keepdim=True)
            row = (w * a_row).mean(dim=1).clamp_min(0)
            return Explanation(to_grid(self.model, row, x.shape[-2:]), logits, t)
