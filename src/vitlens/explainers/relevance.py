"""Relevance explainers of Chefer, Gur & Wolf: ``chefer2021`` and ``generic_attention``.

``generic_attention``: Chefer, Gur & Wolf 2021b (ICCV), "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers", the self-attention rule:
``R = I``; per layer ``Ā = mean_h((∇A ⊙ A)⁺)``, ``R ← R + Ā·R``; map = CLS row of R over the patches.

``chefer2021``: the transformer attribution of Chefer, Gur & Wolf 2021 (CVPR), "Transformer Interpretability
Beyond Attention Visualization", on the unmodified timm / Hugging Face model. The method (the authors'
``transformer_attribution``):

1. Forward, and the gradients ``∇A_l = ∂y_c/∂A_l`` of the target logit w.r.t. every attention map.
2. LRP from the target logit (relevance one-hot, value 1) down through the head, the final norm and every
   block, which gives the relevance ``R_{A_l}`` of each attention map.
3. ``Ā_l = mean_h((∇A_l ⊙ R_{A_l})⁺)``, ``R = I``, ``R ← R + Ā_l·R`` for l = 1 … L; map = CLS row of ``R``
   over the patch tokens.

The LRP rules are those of the reference implementation (``modules/layers_ours.py`` of
hila-chefer/Transformer-Explainability), applied to tensors that the model adapter records with forward
hooks (:meth:`vitlens.models.Model.trace_blocks`) instead of to a forked copy of the model code:

* linear layers: LRP-αβ with α = 1, β = 0 (the z⁺ rule on positive input–weight pairs:
  ``x⁺·W⁺ + x⁻·W⁻``; biases take no relevance);
* LayerNorm, GELU, softmax, dropout, LayerScale: relevance passes unchanged (identity);
* ``q·kᵀ`` and ``A·v``: the z-rule on both operands (gradient × input), each half of the result kept;
* residual additions: the z-rule, then both sides rescaled so that their totals are in proportion to their
  absolute totals and sum to the incoming total (conservation); the fork of the residual stream adds the two
  relevances (their ``Clone`` rule);
* the CLS read-out (``index_select``): relevance goes to token 0.

Deviations, each measured by ``tests/test_chefer.py`` against maps made once with the reference code:

* Batched: the residual rule's totals are taken per image (the reference sums over the whole tensor, which
  is the same at its batch size of 1).
* Read-outs the reference does not have: for distilled DeiT the two heads' logits are split by the residual
  rule (their average is a sum of halves), and the map is the mean of the CLS and distillation rows; for
  average-pooled ViTs the mean is treated by the z-rule and the map is the mean of the patch rows; register
  tokens are ordinary tokens. Not in the paper; documented choices.
* The linear rule is computed in a factorised form, ``z = (x·Wᵀ + |x|·|W|ᵀ)/2`` and
  ``c = (x ⊙ s·W + |x| ⊙ s·|W|)/2``, which equals ``x⁺·W⁺ + x⁻·W⁻`` exactly in real arithmetic and needs
  three matrix products instead of four.
"""

from __future__ import annotations

import torch

from ..models.trace import BlockTrace, HeadTrace
from .attention import attention_pass, readout_row, to_grid
from .base import Explainer, Explanation
from .registry import register

_EPS = 1e-9


def safe_divide(a: torch.Tensor, b: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``a / (b + eps)``, and 0 where ``b == 0``: the stabiliser of the reference implementation (its
    ``b.clamp(min=eps) + b.clamp(max=eps)`` is ``b + eps`` for every ``b``), with fewer passes over memory."""
    den = b + eps
    den.masked_fill_(den == 0, eps)
    in_place = a.shape == den.shape and not torch.is_grad_enabled()
    out = torch.div(a, den, out=den) if in_place else a / den
    return out.masked_fill_(b == 0, 0.0)


def linear_rule(
    x: torch.Tensor,
    w: torch.Tensor,
    r: torch.Tensor,
    out: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """LRP-αβ (α = 1, β = 0) through ``x·Wᵀ``: ``R_x = x⁺ ⊙ (s·W⁺) + x⁻ ⊙ (s·W⁻)`` with
    ``s = R / (x⁺·W⁺ᵀ + x⁻·W⁻ᵀ)``.

    Computed as ``z₂ = x·Wᵀ + |x|·|W|ᵀ`` (= 2z), ``s₂ = R / (z₂ + 2·10⁻⁹)`` (= s/2) and
    ``R_x = x ⊙ (s₂·W) + |x| ⊙ (s₂·|W|)``, which is the same in real arithmetic with three matrix products
    instead of four and no clamped copies of the activations. When the layer's recorded output ``out`` (and
    ``bias``) is given, ``x·Wᵀ = out − bias`` is not recomputed: two matrix products.
    """
    ax, aw = x.abs(), w.abs()
    if out is None:
        z = torch.matmul(x, w.t())
    else:
        z = out - bias if bias is not None else out.clone()
    z.add_(torch.matmul(ax, aw.t()))
    s = safe_divide(r, z, 2 * _EPS)
    out = torch.matmul(s, w).mul_(x)
    return out.add_(torch.matmul(s, aw).mul_(ax))


def matmul_rule(a: torch.Tensor, b: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z-rule through ``Z = a @ b`` for both operands, each halved (the reference halves both after its
    ``einsum.relprop``): ``R_a = a ⊙ (S·bᵀ)/2``, ``R_b = b ⊙ (aᵀ·S)/2`` with ``S = R / Z``."""
    s = safe_divide(r, a @ b).mul_(0.5)
    return (s @ b.transpose(-1, -2)).mul_(a), (a.transpose(-1, -2) @ s).mul_(b)


def add_rule(
    a: torch.Tensor, b: torch.Tensor, r: torch.Tensor, total: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residual addition ``a + b`` (the reference's ``Add.relprop``), with the totals taken per image.
    ``total`` is ``a + b`` when the caller has it."""
    s = safe_divide(r, a + b if total is None else total)
    ra, rb = a * s, s.mul_(b)
    dims = tuple(range(1, r.ndim))
    sa, sb, sr = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True), r.sum(dims, keepdim=True)
    norm = sa.abs() + sb.abs()
    fa = safe_divide(sa.abs(), norm) * sr
    fb = safe_divide(sb.abs(), norm) * sr
    return ra.mul_(safe_divide(fa, sa)), rb.mul_(safe_divide(fb, sb))


def clone_rule(x: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    """A tensor used twice (the residual fork): the reference's ``Clone.relprop``,
    ``x ⊙ (R₁/(x+ε) + R₂/(x+ε))``, computed as ``x ⊙ (R₁ + R₂)/(x+ε)`` (the same denominators)."""
    return safe_divide(r1 + r2, x).mul_(x)


def _heads(t: torch.Tensor, h: int) -> torch.Tensor:
    b, n, _ = t.shape
    return t.reshape(b, n, h, -1).transpose(1, 2)


def _merge(t: torch.Tensor) -> torch.Tensor:
    b, _h, n, _d = t.shape
    return t.transpose(1, 2).reshape(b, n, -1)


def block_relprop(t: BlockTrace, r: torch.Tensor, *, below: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Relevance at the block input and the relevance of its attention map ``[B, H, N, N]``, from the
    relevance ``r`` at its output. With ``below=False`` the propagation stops at the attention map."""
    h = t.x + t.attn_out
    r_h, r_mlp = add_rule(h, t.mlp_out, r, total=t.out)
    r_hidden = linear_rule(t.hidden, t.w_fc2, r_mlp, t.fc2_out, t.b_fc2)
    r_ln2 = linear_rule(t.ln2, t.w_fc1, r_hidden, t.fc1_out, t.b_fc1)  # GELU, norm2: identity
    r = clone_rule(h, r_h, r_ln2)
    r_x, r_att = add_rule(t.x, t.attn_out, r, total=h)
    r_ctx = _heads(linear_rule(t.ctx, t.w_proj, r_att, t.proj_out, t.b_proj), t.num_heads)
    r_a, r_v = matmul_rule(t.attn, t.v, r_ctx)
    if not below:
        return None, r_a
    r_q, r_k = matmul_rule(t.q, t.k.transpose(-1, -2), r_a)  # softmax: identity; the scale is a constant
    r_qkv = torch.cat([_merge(r_q), _merge(r_k.transpose(-1, -2)), _merge(r_v)], dim=-1)
    r_ln1 = linear_rule(t.ln1, t.w_qkv, r_qkv, t.qkv_out, t.b_qkv)
    return clone_rule(t.x, r_x, r_ln1), r_a


def head_relprop(head: HeadTrace, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Relevance ``[B, N, D]`` of the final tokens, from a one-hot relevance of 1 on the target logit."""
    tokens = head.tokens
    one_hot = torch.nn.functional.one_hot(target, num_classes).to(tokens.dtype)
    if head.pool == "distilled":  # logits = (head(x_cls) + head_dist(x_dist)) / 2
        outs = [
            0.5 * torch.nn.functional.linear(x, w, bias)
            for x, w, bias in zip(head.inputs, head.weights, head.biases, strict=True)
        ]
        rels = add_rule(outs[0], outs[1], one_hot)
    else:
        rels = (one_hot,)
    r_in = [linear_rule(x, w, r) for x, w, r in zip(head.inputs, head.weights, rels, strict=False)]
    r_tokens = torch.zeros_like(tokens)
    if head.pool == "avg":  # mean over the patch tokens (fc_norm after it: identity)
        p = head.num_prefix_tokens
        patches = tokens[:, p:]
        s = safe_divide(r_in[0], patches.mean(dim=1))
        r_tokens[:, p:] = patches * s[:, None, :] / patches.shape[1]
    else:  # index_select of token 0 (and 1 for the distillation token)
        for i, r in enumerate(r_in):
            r_tokens[:, i] = tokens[:, i] * safe_divide(r, tokens[:, i])
    return r_tokens


@register
class Chefer2021(Explainer):
    """Transformer attribution (Chefer, Gur & Wolf 2021): LRP relevance of each attention map weighted by
    its gradient, ``Ā = mean_h((∇A ⊙ R_A)⁺)``, ``R ← R + Ā·R``, CLS row over the patches. Class-specific.

    Runs on the unmodified timm ViT / DeiT / distilled DeiT / register-token ViT and HF ViT / DeiT through
    block tracing; checked against the authors' reference implementation (see the module docstring).
    """

    name = "chefer2021"
    citation = "Chefer, Gur & Wolf 2021 (CVPR), 'Transformer Interpretability Beyond Attention Visualization'"
    class_specific = True
    needs_attention = True
    needs_trace = True

    def _explain(self, x, target):
        m = self.model
        with m.trace_blocks() as (traces, head), torch.enable_grad():
            logits = m.forward(x.detach().requires_grad_(True))
            score, t = self._target_score(logits, target)
            grads = torch.autograd.grad(score, [tr.attn for tr in traces])
        with torch.no_grad():
            r = head_relprop(head, t, logits.shape[1])
            cams: list[torch.Tensor] = [None] * len(traces)  # type: ignore[list-item]
            for i in reversed(range(len(traces))):
                r, cams[i] = block_relprop(traces[i], r, below=i > 0)
            b, _, n, _ = cams[-1].shape
            row = readout_row(m, n, b, cams[-1].device, cams[-1].dtype)
            for cam, g in zip(reversed(cams), reversed(grads), strict=True):
                row = row + torch.bmm(row, (g * cam).clamp_min(0).mean(dim=1))
            return Explanation(to_grid(m, row[:, 0], x.shape[-2:]), logits.detach(), t)


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
    exact_precision = True  # a chain of L relevance updates: float32 forward whatever the model's precision

    def _explain(self, x, target):
        attns, grads, logits, t = attention_pass(self.model, x, target, grad=True)
        with torch.no_grad():
            b, _, n, _ = attns[-1].shape
            r = readout_row(self.model, n, b, attns[-1].device, attns[-1].dtype)
            for a, g in zip(reversed(attns), reversed(grads), strict=True):
                r = r + torch.bmm(r, (g * a).clamp_min(0).mean(dim=1))
            return Explanation(to_grid(self.model, r[:, 0], x.shape[-2:]), logits, t)
