"""AttnLRP: attention-aware Layer-wise Relevance Propagation for transformers.

Achtibat, Hatefi, Dreyer, Jain, Wiegand, Lapuschkin & Samek 2024 (ICML), "AttnLRP: Attention-Aware
Layer-Wise Relevance Propagation for Transformers". Reference implementation: the ``lxt`` package
(LRP-eXplains-Transformers, Clear BSD License). vitlens does not use ``lxt``: its efficient mode patches model
*classes* globally (``monkey_patch``, no undo; its Llama map even patches ``torch.nn.Dropout``), supports
torchvision's ViT but neither timm's nor Hugging Face's ViT, and ``lxt 2.1`` does not import with
transformers >= 5 (``lxt.efficient`` fails on ``find_pruneable_heads_and_indices``). Instead the rules are
applied here to the unmodified model for one forward/backward: LayerNorm and activation modules get an
instance-level ``forward`` computing the same values with a rule backward, the q/k/v projections a forward
hook; all of it is undone on exit, also on errors. (lxt's *explicit* rules serve as the peer reference in the
tests.) No timm or transformers import: the model's adapter names the rule sites
(:meth:`~vitlens.models.base.Model.lrp_sites`, :mod:`vitlens.models.lrp_sites`).

The rules (paper, Sec. 3), in the Gradient × Input form of lxt's efficient implementation (Arras et al.
2025): relevance of a tensor ``t`` is ``t ⊙ ĝ`` where ``ĝ`` is a modified gradient of the target logit, so one
backward pass gives every relevance.

- linear layers, convolution, residual additions, mean pooling: ε-LRP, which in this form is the plain
  gradient (the ε → 0 limit); nothing to change;
- LayerNorm: identity rule on the division by the standard deviation (Prop. 3.4) — ``σ`` is treated as a
  constant in the backward pass, ``ĝ_x = c(w ⊙ ĝ_y / σ)`` with ``c`` the centring over the normalised dims;
- GELU (any element-wise activation): identity rule (Eq. 9), ``ĝ_x = ĝ_y ⊙ act(x) / x``;
- softmax: the paper's rule ``R_in = x ⊙ (R_out − s ⊙ Σ R_out)`` (Prop. 3.1) is exactly Gradient × Input of
  the softmax, so its plain gradient is kept (fused ``scaled_dot_product_attention`` included);
- the two matrix products of attention: uniform rule (Prop. 3.2/3.3), half of the relevance to each operand.
  ``A·V`` halves the relevance reaching ``A`` and ``V``; ``q·kᵀ`` halves it again for ``q`` and ``k``. As
  everything in between is linear in ``ĝ``, this is a gradient scale at the q/k/v projection outputs:
  ``1/4`` for q and k, ``1/2`` for v (as lxt's ``divide_gradient`` wrappers do).

The map is the input relevance ``x ⊙ ĝ_x`` summed over colour channels, at pixel resolution (the pixels are
what the patch-embedding convolution reads), signed: LRP relevance is negative where a pixel speaks against
the class. ``resolution="patch"`` sums it over each cell of the model's patch grid.

Conservation: the relevance of the target logit ``y_c`` is redistributed, not created, except that biases
(every Linear, the convolution, LayerNorm's shift), the learned position embedding and the CLS / register /
distillation tokens absorb their share, and the softmax rule loses the share of its Taylor bias term
(Prop. 3.1). ``tests/test_attnlrp.py`` checks this account to 1e-6 in float64. The softmax share is not small
on trained models: on the builtin ViTs (16 test images each) the input relevance (pixels + position embedding
+ tokens) is a median 52–76% of ``y_c`` (random-init test ViTs: 84–100% with the bias shares); plain gradient ×
input, counted the same way, sums to about 0.
``attention_rule="cp"`` (CP-LRP, Ali et al. 2022, lxt's choice inside attention for ViTs) sends no relevance
through the softmax (the attention weights act as constants, all of ``A·V``'s relevance goes to ``V``) and
is conservative up to the bias shares.

Deviations from the paper, all stated: (1) ε → 0 (plain Gradient × Input) for linear layers, as in lxt's
efficient mode, instead of a small ε > 0; (2) no γ-rule: the paper and lxt suggest tuning LRP-γ on the Conv /
Linear layers of ViTs to denoise heatmaps, which needs a per-model hyper-parameter search; (3) the default is
the paper's AttnLRP rule inside attention, whereas lxt's default torchvision-ViT map uses CP-LRP there
(``attention_rule="cp"``); (4) the input layer uses the same ε-rule (no z^B / flat rule for pixels); (5) timm
Swin models are supported with the same rules (window attention is the same q/k/v/softmax/matmul pattern, the
relative position bias and shift mask are biases of the softmax input) — the paper does not evaluate Swin.

Soundness guard: the rules cover exactly the operations listed above, so every module of the model must be
of a type whose forward is known to consist of them (the adapters' allow-lists of torch, timm and Hugging
Face classes, compared exactly).
Anything else (CNNs with BatchNorm/ReLU/max-pool, SwiGLU or gated MLPs, attention pooling, Swin V2's cosine
attention, unknown custom modules) raises an ExplainerError naming the module.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import ExplainerError
from ..models import Model
from ..models.lrp_sites import LrpSites
from .base import Explainer, Explanation, check_choice
from .registry import register

# --------------------------------------------------------------------------------------------- rules
# gradient scales at the q, k, v projection outputs, per attention rule
ATTENTION_RULES = {
    "attnlrp": (0.25, 0.5),  # uniform rule on A·V (1/2 each) and again on q·kᵀ (1/2 each): q, k 1/4; v 1/2
    "cp": (0.0, 1.0),  # CP-LRP (Ali et al. 2022): attention weights are constants, all relevance to v
}


class _LayerNormRule(torch.autograd.Function):
    """LayerNorm forward (``torch.native_layer_norm``, what ``F.layer_norm`` runs); backward as if ``σ`` were
    a constant (identity rule, Prop. 3.4).

    ``y = (x − mean(x)) · rstd ⊙ w + b`` with ``rstd`` fixed is linear in ``x``:
    ``ĝ_x = (u − mean(u)) · rstd`` with ``u = ĝ_y ⊙ w`` (means over the normalised dims).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, shape, eps):
        out, _mean, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)
        ctx.save_for_backward(weight, rstd)
        ctx.ndim = len(shape)
        return out

    @staticmethod
    def backward(ctx, g):
        w, rstd = ctx.saved_tensors
        dims = tuple(range(-ctx.ndim, 0))
        u = g * w if w is not None else g
        return (u - u.mean(dim=dims, keepdim=True)) * rstd, None, None, None, None


class _ActivationRule(torch.autograd.Function):
    """Element-wise activation ``y = f(x)`` with the identity rule (Eq. 9), ``R_x = R_y``:
    ``ĝ_x = ĝ_y ⊙ y / x`` (0 where ``x = 0``; every activation allowed here has ``f(0) = 0``)."""

    @staticmethod
    def forward(ctx, x, fn):
        y = fn(x)
        ctx.save_for_backward(torch.nan_to_num_(y / x, nan=0.0))
        return y

    @staticmethod
    def backward(ctx, g):
        (ratio,) = ctx.saved_tensors
        return g * ratio, None


def _layernorm_forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and x.requires_grad:
        return _LayerNormRule.apply(x, self.weight, self.bias, tuple(self.normalized_shape), self.eps)
    return type(self).forward(self, x)


def _activation_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fn = functools.partial(type(self).forward, self)
    if torch.is_grad_enabled() and x.requires_grad:
        return _ActivationRule.apply(x, fn)
    return fn(x)


def _grad_scale_hook(scale):
    """Forward hook scaling the gradient that reaches a module's output (``scale``: float or a tensor
    broadcast over the last dim); the forward value is untouched (a tensor hook on the output)."""

    def hook(_module, _args, out):
        if torch.is_grad_enabled() and out.requires_grad:
            s = scale.to(device=out.device, dtype=out.dtype) if isinstance(scale, torch.Tensor) else scale
            out.register_hook(lambda g: g * s)
        return out

    return hook


def _attention_scales(sites: LrpSites, rule: str) -> list[tuple[nn.Module, float | torch.Tensor]]:
    """(projection, gradient scale of its output) for every q/k/v projection the adapter named."""
    qk, v = ATTENTION_RULES[rule]
    scales: list[tuple[nn.Module, float | torch.Tensor]] = []
    for proj, part in sites.projections:
        if part == "qkv":
            d = proj.out_features // 3  # output laid out as [q | k | v], each (heads × head_dim)
            scales.append((proj, torch.cat([torch.full((2 * d,), qk), torch.full((d,), v)])))
        else:
            scales.append((proj, v if part == "v" else qk))
    return scales


@contextlib.contextmanager
def attnlrp_rules(model: Model, attention_rule: str = "attnlrp") -> Iterator[None]:
    """Inside the context, gradients of ``model`` (in eval mode) are AttnLRP's modified gradients: for any
    tensor ``t`` of the forward graph, ``t ⊙ ∂̂y_c/∂t`` is its relevance for the logit ``y_c``.

    Forward values are unchanged (LayerNorm and activations compute the same function, the attention rule is a
    tensor hook on the q/k/v outputs). LayerNorm and activation modules get an instance-level ``forward`` and
    the q/k/v projections a forward hook; on exit, also when the body raises, the hooks are removed, the
    instance attributes deleted and training flags restored.
    """
    check_choice("attention_rule", attention_rule, tuple(ATTENTION_RULES))
    sites = model.lrp_sites("attnlrp")
    handles = []
    swapped: list[nn.Module] = []
    with model.evaluating():
        try:
            for m in sites.layernorms:
                m.forward = types.MethodType(_layernorm_forward, m)
                swapped.append(m)
            for m in sites.activations:
                m.forward = types.MethodType(_activation_forward, m)
                swapped.append(m)
            for proj, scale in _attention_scales(sites, attention_rule):
                handles.append(proj.register_forward_hook(_grad_scale_hook(scale)))
            yield
        finally:
            for h in handles:
                h.remove()
            for m in swapped:
                del m.forward


def sum_per_cell(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``[B, H, W] -> [B, h, w]``: sum over the cells of an ``h × w`` grid that tiles the image."""
    b, hh, ww = maps.shape
    h, w = grid
    if h <= 0 or w <= 0 or hh % h or ww % w:
        raise ExplainerError(
            f"resolution='patch' needs the {h}x{w} patch grid to tile the {hh}x{ww} image; use resolution='pixel'"
        )
    return maps.reshape(b, h, hh // h, w, ww // w).sum(dim=(2, 4))


# ---------------------------------------------------------------------------------------- explainer
@register
class AttnLRP(Explainer):
    """AttnLRP (Achtibat et al. 2024): LRP with attention-aware rules, one modified backward pass of the
    target logit; signed pixel relevance ``Σ_channels x ⊙ ĝ_x`` (``resolution="patch"``: summed per patch).

    ``resolution``: ``"pixel"`` (default, ``[B, H, W]``) or ``"patch"`` (``[B, h, w]`` on the model's patch
    grid, the per-cell sum of the pixel map); ``attention_rule``: ``"attnlrp"`` (default, the paper's rules) or
    ``"cp"`` (CP-LRP inside attention, as lxt does for ViTs). Works on the unmodified model (timm
    ViT/DeiT/distilled/register ViTs, timm Swin V1, Hugging Face ViT/DeiT); the rules and every deviation from
    the paper are listed in the module docstring.
    """

    name = "attnlrp"
    citation = "Achtibat et al. 2024 (ICML), 'AttnLRP: Attention-Aware Layer-Wise Relevance Propagation'"
    class_specific = True
    signed = True
    resolution = "pixel"
    exact_precision = True  # modified backward through every layer: float32 forward whatever the precision

    def __init__(self, model, resolution: str = "pixel", attention_rule: str = "attnlrp") -> None:
        super().__init__(model)
        check_choice("resolution", resolution, ("pixel", "patch"))
        check_choice("attention_rule", attention_rule, tuple(ATTENTION_RULES))
        self.resolution = resolution
        self.attention_rule = attention_rule
        self.model.lrp_sites(self.name)  # refuses a model the rules do not cover, before any forward

    def _explain(self, x, target):
        with attnlrp_rules(self.model, self.attention_rule), torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            logits = self.model.forward(xi)
            score, t = self._target_score(logits, target)
            (g,) = torch.autograd.grad(score, [xi])
        with torch.no_grad():
            maps = (xi.detach() * g).sum(dim=1)
            if self.resolution == "patch":
                maps = sum_per_cell(maps, self.model.grid_size(tuple(x.shape[-2:])))
        return Explanation(maps, logits.detach(), t)
