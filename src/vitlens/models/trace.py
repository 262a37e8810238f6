"""Tracing inside transformer blocks, for methods that need more than the attention probabilities
(LRP-style relevance propagation, attention-guided CAM, LeGrad, ...).

Both the timm and the Hugging Face ViT block are pre-norm blocks of the same shape::

    ln1 = norm1(x);  q, k, v = W_q·ln1, W_k·ln1, W_v·ln1 (per head);  A = softmax(scale · q kᵀ)
    ctx = A v (heads merged);  attn_out = proj(ctx) (then LayerScale / dropout, identity in eval)
    h = x + attn_out
    ln2 = norm2(h);  hidden = act(fc1(ln2));  mlp_out = fc2(hidden) (then LayerScale);  out = h + mlp_out

:class:`BlockTrace` holds every named tensor of one such block for one forward, in the autograd graph when
the forward ran with gradients, plus the weights of its linear maps. The adapters fill it with forward
hooks on the unmodified modules (:meth:`vitlens.models.Model.trace_blocks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class BlockTrace:
    """Tensors of one transformer block (``[B, N, D]`` unless noted) and its linear weights."""

    x: torch.Tensor | None = None  # residual stream entering the block
    ln1: torch.Tensor | None = None  # attention input (norm1 output)
    q: torch.Tensor | None = None  # [B, H, N, d], before the scale (after q_norm where the model has one)
    k: torch.Tensor | None = None  # [B, H, N, d]
    v: torch.Tensor | None = None  # [B, H, N, d]
    attn: torch.Tensor | None = None  # [B, H, N, N] softmax(scale · q kᵀ), the tensor multiplied with v
    ctx: torch.Tensor | None = None  # [B, N, H·d] input of the output projection
    attn_out: torch.Tensor | None = None  # attention branch added to the residual stream
    ln2: torch.Tensor | None = None  # MLP input (norm2 output)
    hidden: torch.Tensor | None = None  # [B, N, D_mlp] input of fc2 (after the activation)
    mlp_out: torch.Tensor | None = None  # MLP branch added to the residual stream
    out: torch.Tensor | None = None  # residual stream leaving the block
    qkv_out: torch.Tensor | None = None  # [B, N, 3·H·d] outputs of the q, k, v projections (biases included)
    proj_out: torch.Tensor | None = None  # output of the attention's output projection
    fc1_out: torch.Tensor | None = None  # output of fc1 (before the activation)
    fc2_out: torch.Tensor | None = None  # output of fc2
    scale: float = 1.0
    w_qkv: torch.Tensor | None = None  # [3·H·d, D]: rows of W_q, W_k, W_v stacked
    w_proj: torch.Tensor | None = None  # [D, H·d]
    w_fc1: torch.Tensor | None = None  # [D_mlp, D]
    w_fc2: torch.Tensor | None = None  # [D, D_mlp]
    b_qkv: torch.Tensor | None = None  # biases of the same linear maps (None where a layer has none)
    b_proj: torch.Tensor | None = None
    b_fc1: torch.Tensor | None = None
    b_fc2: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    @property
    def h(self) -> torch.Tensor:
        """Residual stream between the attention and the MLP branch (``x + attn_out``)."""
        return self.out - self.mlp_out

    @property
    def num_heads(self) -> int:
        return int(self.attn.shape[1])


@dataclass
class HeadTrace:
    """How the classifier reads the final tokens, for one forward.

    ``tokens``: ``[B, N, D]`` final (normed) tokens; ``pool``: ``"token"`` (the head reads token 0),
    ``"distilled"`` (two heads read tokens 0 and 1 and their logits are averaged) or ``"avg"`` (the mean of
    the patch tokens, from index ``num_prefix_tokens``); ``inputs``: the tensors that enter each head linear
    (``[B, D]``, after any fc_norm); ``weights``: the head linear weights ``[C, D]`` (one or two);
    ``biases``: their biases (or None).
    """

    tokens: torch.Tensor | None = None
    pool: str = "token"
    inputs: list[torch.Tensor] = field(default_factory=list)
    weights: list[torch.Tensor] = field(default_factory=list)
    biases: list[torch.Tensor | None] = field(default_factory=list)
    num_prefix_tokens: int = 1
