"""Naive per-image reference implementations, independent of vitlens' adapter and batched code.

Attention is obtained without the adapter's hooks: for timm, each block's ``Attention.forward`` is replaced
(on the instance, for the duration of one call) by a textbook multi-head attention that keeps the softmax
output; for Hugging Face, ``output_attentions=True`` in eager mode. Everything runs one image at a time,
with explicit Python loops and full matrix products where vitlens uses vectorised shortcuts.
"""

from __future__ import annotations

import types

import torch

import vitlens


def _readout(model: vitlens.Model, n: int) -> torch.Tensor:
    """Which token rows the head reads, written out per architecture (not via the adapter)."""
    r = torch.zeros(n, dtype=torch.float64)
    mod = model.module
    name = type(mod).__name__
    if name == "VisionTransformerDistilled" or name == "DeiTForImageClassificationWithTeacher":
        r[0] = r[1] = 0.5  # head output = mean of CLS head and distillation head
    elif getattr(mod, "global_pool", "token") == "avg":
        p = mod.num_prefix_tokens
        r[p:] = 1.0 / (n - p)
    else:
        r[0] = 1.0
    return r


def _prefix(model: vitlens.Model) -> int:
    mod = model.module
    if hasattr(mod, "num_prefix_tokens"):
        return int(mod.num_prefix_tokens)
    return 2 if "DeiT" in type(mod).__name__ else 1


def naive_attention(model: vitlens.Model, x1: torch.Tensor, target: int | None):
    """(attentions [L x (H,N,N)], gradients of the target logit or None, logits [C]) for one image."""
    mod = model.module
    was_training = mod.training
    mod.eval()
    store: list[torch.Tensor] = []
    x1 = x1.detach().clone().requires_grad_(True)
    try:
        if hasattr(mod, "blocks"):  # timm

            def textbook(self, x, attn_mask=None, is_causal=False):
                b, n, _c = x.shape
                qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
                q, k, v = qkv[0], qkv[1], qkv[2]
                q, k = self.q_norm(q), self.k_norm(k)
                a = torch.softmax((q @ k.transpose(-2, -1)) / (self.head_dim**0.5), dim=-1)
                store.append(a)
                out = (a @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
                return self.proj(self.norm(out))

            for blk in mod.blocks:
                blk.attn.forward = types.MethodType(textbook, blk.attn)
            try:
                logits = mod(x1)
            finally:
                for blk in mod.blocks:
                    del blk.attn.forward
        else:  # Hugging Face
            saved = mod.config._attn_implementation
            mod.config._attn_implementation = "eager"
            try:
                out = mod(pixel_values=x1, output_attentions=True)
            finally:
                mod.config._attn_implementation = saved
            logits = out.logits
            store = list(out.attentions)
    finally:
        mod.train(was_training)
    logits = logits[0]
    grads = None
    if target is not None:
        tgt = int(logits.argmax()) if target == -1 else target
        grads = [g[0] for g in torch.autograd.grad(logits[tgt], store)]
    return [a[0].detach().double() for a in store], (None if grads is None else [g.double() for g in grads]), logits


def _fuse(a: torch.Tensor, how: str) -> torch.Tensor:
    heads = [a[h] for h in range(a.shape[0])]
    out = heads[0].clone()
    for m in heads[1:]:
        if how == "mean":
            out = out + m
        elif how == "max":
            out = torch.maximum(out, m)
        else:
            out = torch.minimum(out, m)
    return out / len(heads) if how == "mean" else out


def _discard(a: torch.Tensor, ratio: float) -> torch.Tensor:
    n = a.shape[0]
    k = int(n * n * ratio)
    a = a.clone()
    if k == 0:
        return a
    order = sorted((float(a[i, j]), i, j) for i in range(n) for j in range(n) if (i, j) != (0, 0))
    for _, i, j in order[:k]:
        a[i, j] = 0.0
    return a


def _residual(a: torch.Tensor, alpha: float) -> torch.Tensor:
    n = a.shape[0]
    m = alpha * a + (1 - alpha) * torch.eye(n, dtype=a.dtype)
    for i in range(n):
        m[i] = m[i] / m[i].sum()
    return m


def _grid(model: vitlens.Model, row: torch.Tensor, hw) -> torch.Tensor:
    p = _prefix(model)
    mod = model.module
    if hasattr(mod, "patch_embed"):
        ph, pw = mod.patch_embed.patch_size
    else:
        ph = pw = mod.config.patch_size
    return row[p:].reshape(hw[0] // ph, hw[1] // pw).float()


def reference_map(model: vitlens.Model, x1: torch.Tensor, method: str, target: int | None = None, **params):
    """The map of one image ([C,H,W]) by the naive formulas. ``target=None`` means the predicted class."""
    fusion = params.get("head_fusion", "mean")
    ratio = params.get("discard_ratio", 0.0)
    alpha = params.get("alpha", 0.5)
    needs_grad = method in ("grad_rollout", "generic_attention", "attention_gradcam")
    attns, grads, _logits = naive_attention(model, x1[None], (-1 if target is None else target) if needs_grad else None)
    n = attns[0].shape[-1]
    r = _readout(model, n)
    hw = x1.shape[-2:]
    if method == "raw_attention":
        return _grid(model, r @ _fuse(attns[-1], fusion), hw)
    if method in ("rollout", "grad_rollout"):
        big = torch.eye(n, dtype=torch.float64)
        for i, a in enumerate(attns):
            layer = a if method == "rollout" else torch.clamp(a * grads[i], min=0)
            big = _residual(_discard(_fuse(layer, fusion), ratio), alpha) @ big  # R = Â_l · R
        return _grid(model, r @ big, hw)
    if method == "generic_attention":
        big = torch.eye(n, dtype=torch.float64)
        for a, g in zip(attns, grads, strict=True):
            cam = torch.clamp(g * a, min=0).mean(dim=0)
            big = big + cam @ big
        return _grid(model, r @ big, hw)
    if method == "attention_gradcam":
        a, g = attns[-1], grads[-1]
        p = _prefix(model)
        rows_a = torch.stack([r @ a[h] for h in range(a.shape[0])])
        rows_g = torch.stack([r @ g[h] for h in range(g.shape[0])])
        weights = rows_g[:, p:].mean(dim=1, keepdim=True)
        return _grid(model, torch.clamp((weights * rows_a).mean(dim=0), min=0), hw)
    raise KeyError(method)


def reference_gradcam(
    model: vitlens.Model, x1: torch.Tensor, target: int | None, module: torch.nn.Module, where: str, to_bchw
) -> torch.Tensor:
    """Grad-CAM for one image with explicit loops over channels."""
    mod = model.module
    was = mod.training
    mod.eval()
    got = {}
    if where == "input":
        h = module.register_forward_pre_hook(lambda _m, a: got.__setitem__("f", a[0]))
    else:
        h = module.register_forward_hook(lambda _m, _a, o: got.__setitem__("f", o))
    try:
        x = x1[None].detach().clone().requires_grad_(True)
        out = mod(x) if not hasattr(mod, "config") else mod(pixel_values=x).logits
    finally:
        h.remove()
        mod.train(was)
    tgt = int(out[0].argmax()) if target is None else target
    (g,) = torch.autograd.grad(out[0, tgt], [got["f"]])
    feats, grads = to_bchw(got["f"].detach())[0], to_bchw(g)[0]
    cam = torch.zeros(feats.shape[1:], dtype=torch.float64)
    for k in range(feats.shape[0]):
        cam += grads[k].double().mean() * feats[k].double()
    return torch.clamp(cam, min=0).float()
