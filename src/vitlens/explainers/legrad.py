"""LeGrad (Bousselham et al. 2024): the gradient of each layer's own logit w.r.t. its attention.

The conventions of the gradient-weighted attention methods (AG-CAM, I-SAW, LeGrad) are stated once in
:mod:`vitlens.explainers.agcam`.
"""

from __future__ import annotations

import torch

from ..errors import ExplainerError
from .attention import to_grid
from .base import Explainer, Explanation
from .registry import register


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
            logits = model.forward(x.detach().requires_grad_(True))
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
