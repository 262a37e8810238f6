"""Adapters for timm models: VisionTransformer (ViT, DeiT, distilled DeiT, register-token ViTs, DINO/MAE
checkpoints, which share the architecture) and Swin. timm CNNs use :class:`~vitlens.models.cnn.CNNModel`.

Attention is read from ``Attention.attn_drop``: in timm's explicit attention path the softmax output goes
through ``attn_drop`` (identity in eval mode) and then into ``attn @ v``, so a forward hook there sees the
exact probability tensor used by the model, in the autograd graph. timm's fused path
(``scaled_dot_product_attention``) never materialises it, so recording sets ``fused_attn = False`` on every
attention module and restores the flags afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..errors import ExplainerError, InputError
from .base import Model, Preprocessing
from .lrp_sites import LrpSites, find_lrp_sites
from .trace import BlockTrace, HeadTrace


def timm_preprocessing(module: nn.Module) -> Preprocessing:
    """Preprocessing from timm's own data config (``resolve_model_data_config``)."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(module)
    c, h, w = cfg["input_size"]
    img_size = getattr(getattr(module, "patch_embed", None), "img_size", None)
    if img_size is not None:  # the pretrained cfg keeps 224 when the model was built with img_size=...
        h, w = img_size
    return Preprocessing(
        input_size=(int(h), int(w)),
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(cfg.get("crop_pct", 1.0) or 1.0),
        in_chans=int(c),
    )


def timm_class_names(num_classes: int) -> list[str] | None:
    """ImageNet-1k names for 1000-class heads (timm ships them), else None."""
    if num_classes != 1000:
        return None
    try:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        return [info.index_to_description(i) for i in range(1000)]
    except Exception:  # pragma: no cover - depends on timm version
        return None


class _TimmModel(Model):
    """Preprocessing and class names from timm's own configuration."""

    def __init__(self, module: nn.Module, *, name: str, class_names=None, preprocessing=None) -> None:
        super().__init__(
            module,
            name=name,
            num_classes=module.num_classes,
            preprocessing=preprocessing or timm_preprocessing(module),
            class_names=class_names if class_names is not None else timm_class_names(module.num_classes),
        )


class TimmViT(_TimmModel):
    """timm ``VisionTransformer`` and subclasses (``VisionTransformerDistilled``)."""

    family = "vit"

    # ---- what attention methods need
    def _attention_problem(self) -> str | None:
        from timm.layers import Attention

        m = self.module
        if getattr(m, "attn_pool", None) is not None:
            return "its head pools tokens with an attention-pool layer ('map'), not a CLS token or mean"
        if not m.has_class_token and m.global_pool == "token":
            return "it has no class token"
        if m.global_pool not in ("token", "avg"):
            return f"its global_pool={m.global_pool!r} has no token readout (supported: 'token', 'avg')"
        for i, blk in enumerate(m.blocks):
            if type(getattr(blk, "attn", None)) is not Attention:
                return f"block {i} uses {type(getattr(blk, 'attn', None)).__name__}, not timm's standard Attention"
        return None

    @property
    def has_attention(self) -> bool:
        return self._attention_problem() is None

    def require_attention(self, method: str = "this method") -> None:
        problem = self._attention_problem()
        if problem is not None:
            raise ExplainerError(f"{method} cannot run on {self.name!r}: {problem}; use 'gradcam' instead")

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.module.num_prefix_tokens)

    @property
    def is_distilled(self) -> bool:
        return getattr(self.module, "dist_token", None) is not None

    def readout(self, num_tokens: int) -> torch.Tensor:
        r = torch.zeros(num_tokens)
        p = self.num_prefix_tokens
        if self.module.global_pool == "avg":
            r[p:] = 1.0 / (num_tokens - p)
        elif self.is_distilled:  # the head averages the CLS and distillation outputs
            r[0] = r[1] = 0.5
        else:
            r[0] = 1.0
        return r

    def grid_size(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        pe = self.module.patch_embed
        if input_hw is None:
            return tuple(int(v) for v in pe.grid_size)
        ph, pw = pe.patch_size
        return int(input_hw[0]) // ph, int(input_hw[1]) // pw

    def _check_spatial(self, hw: tuple[int, int]) -> None:
        pe = self.module.patch_embed
        if getattr(pe, "dynamic_img_size", False) or getattr(self.module, "dynamic_img_size", False):
            ph, pw = pe.patch_size
            if hw[0] < ph or hw[1] < pw:
                raise InputError(f"images of size {hw} are smaller than one {ph}x{pw} patch")
            return
        if pe.img_size is not None and tuple(hw) != tuple(pe.img_size):
            raise InputError(
                f"model {self.name!r} expects {pe.img_size[0]}x{pe.img_size[1]} images, got {hw[0]}x{hw[1]} "
                "(resize with the model's preprocessing, or create it with img_size=...)"
            )

    # ---- recording
    def attention_modules(self) -> list[nn.Module]:
        return [blk.attn for blk in self.module.blocks]

    @contextlib.contextmanager
    def _explicit_attention(self, mods: list[nn.Module]) -> Iterator[None]:
        saved = [m.fused_attn for m in mods]
        try:
            for m in mods:
                m.fused_attn = False
            yield
        finally:
            for m, f in zip(mods, saved, strict=True):
                m.fused_attn = f

    def _hook_attention(self, module: nn.Module, store: list[torch.Tensor]):
        return module.attn_drop.register_forward_hook(lambda _m, _a, out: store.append(out))

    # ---- tracing inside blocks
    def require_trace(self, method: str = "this method") -> None:
        from timm.layers import Mlp

        self.require_attention(method)
        for i, blk in enumerate(self.module.blocks):
            if type(blk.mlp) is not Mlp:
                raise ExplainerError(
                    f"{method} cannot run on {self.name!r}: block {i} has a {type(blk.mlp).__name__} MLP, "
                    "not timm's standard Mlp (fc1 -> act -> fc2)"
                )
            if getattr(blk.attn, "gate", None) is not None:
                raise ExplainerError(f"{method} cannot run on {self.name!r}: block {i} has gated attention")

    def _trace_block_hooks(self, index: int, t: BlockTrace) -> list:
        blk = self.module.blocks[index]
        attn = blk.attn
        h, d = attn.num_heads, attn.head_dim

        def set_(name):
            return lambda _m, _a, out: setattr(t, name, out)

        def set_in(name):
            return lambda _m, args: setattr(t, name, args[0])

        def qkv(_m, _a, out):
            b, n, _ = out.shape
            t.qkv_out = out
            t.v = out.reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4)[2]

        t.scale = float(attn.scale)
        t.w_qkv, t.w_proj = attn.qkv.weight, attn.proj.weight
        t.w_fc1, t.w_fc2 = blk.mlp.fc1.weight, blk.mlp.fc2.weight
        t.b_qkv, t.b_proj, t.b_fc1, t.b_fc2 = attn.qkv.bias, attn.proj.bias, blk.mlp.fc1.bias, blk.mlp.fc2.bias
        return [
            attn.proj.register_forward_hook(set_("proj_out")),
            blk.mlp.fc1.register_forward_hook(set_("fc1_out")),
            blk.mlp.fc2.register_forward_hook(set_("fc2_out")),
            blk.register_forward_pre_hook(set_in("x")),
            blk.register_forward_hook(set_("out")),
            blk.norm1.register_forward_hook(set_("ln1")),
            attn.qkv.register_forward_hook(qkv),
            attn.q_norm.register_forward_hook(set_("q")),
            attn.k_norm.register_forward_hook(set_("k")),
            attn.attn_drop.register_forward_hook(set_("attn")),
            attn.proj.register_forward_pre_hook(set_in("ctx")),
            blk.ls1.register_forward_hook(set_("attn_out")),
            blk.norm2.register_forward_hook(set_("ln2")),
            blk.mlp.fc2.register_forward_pre_hook(set_in("hidden")),
            blk.ls2.register_forward_hook(set_("mlp_out")),
        ]

    def _trace_head_hooks(self, head: HeadTrace) -> list:
        m = self.module
        head.pool = "avg" if m.global_pool == "avg" else ("distilled" if self.is_distilled else "token")
        linears = [m.head, m.head_dist] if head.pool == "distilled" else [m.head]
        return self._hook_head(head, m.norm, linears)

    def head_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        m = self.module
        with self.evaluating():
            out = m.forward_head(m.norm(tokens))
        return out[0] if isinstance(out, tuple) else out

    def lrp_sites(self, method: str = "attnlrp") -> LrpSites:
        return timm_lrp_sites(self, method, swin=False)

    def feature_site(self, layer, input_hw) -> tuple[nn.Module, str, Callable[[torch.Tensor], torch.Tensor]]:
        blocks = self.module.blocks
        idx = -1 if layer is None else layer
        if not isinstance(idx, int) or not -len(blocks) <= idx < len(blocks):
            raise ExplainerError(
                f"layer={layer!r} is not a block index of {self.name!r} (valid: -{len(blocks)}..{len(blocks) - 1})"
            )
        grid = self.grid_size(input_hw)
        return blocks[idx].norm1, "input", lambda t: self._tokens_to_bchw(t, grid)


class TimmSwin(_TimmModel):
    """timm ``SwinTransformer`` (NHWC stages). Shifted-window attention has no global CLS token, so
    attention-flow methods do not apply; Grad-CAM uses the output of a stage (default the last)."""

    family = "swin"

    def require_attention(self, method: str = "this method") -> None:
        raise ExplainerError(
            f"{method} needs global self-attention read out through a class token; {self.name!r} is a Swin "
            "Transformer (attention only inside shifted local windows, patch merging, mean-pooled head), and no "
            "established attention-flow method is defined for that; use 'gradcam', 'attnlrp' or a gradient or "
            "perturbation method for Swin"
        )

    def _check_spatial(self, hw: tuple[int, int]) -> None:
        img = getattr(self.module.patch_embed, "img_size", None)
        if img is not None and getattr(self.module.patch_embed, "strict_img_size", True) and tuple(hw) != tuple(img):
            raise InputError(f"model {self.name!r} expects {img[0]}x{img[1]} images, got {hw[0]}x{hw[1]}")

    def grid_size(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        hw = input_hw or self.preprocessing.input_size
        red = self.module.feature_info[-1]["reduction"]
        return int(hw[0]) // red, int(hw[1]) // red

    def lrp_sites(self, method: str = "attnlrp") -> LrpSites:
        return timm_lrp_sites(self, method, swin=True)

    def feature_site(self, layer, input_hw):
        stages = self.module.layers
        idx = -1 if layer is None else layer
        if not isinstance(idx, int) or not -len(stages) <= idx < len(stages):
            raise ExplainerError(
                f"layer={layer!r} is not a stage index of {self.name!r} (valid: -{len(stages)}..{len(stages) - 1})"
            )
        return stages[idx], "output", lambda t: t.permute(0, 3, 1, 2)


# ------------------------------------------------------------------------------------------ AttnLRP sites
def _timm_attention_projections(m: nn.Module) -> list[tuple[nn.Linear, str]] | str | None:
    """timm ``Attention`` / Swin ``WindowAttention``: the fused ``qkv`` projection, laid out [q | k | v]."""
    from timm.layers import Attention
    from timm.models.swin_transformer import WindowAttention

    if type(m) not in (Attention, WindowAttention):
        return None
    if getattr(m, "gate", None) is not None:
        return "it multiplies its output by a learned gate (no rule for gated attention)"
    if not isinstance(getattr(m, "qkv", None), nn.Linear) or m.qkv.out_features % 3:
        return "it has no fused q/k/v projection"
    return [(m.qkv, "qkv")]


def _timm_pool_problem(m: nn.Module) -> str | None:
    from timm.layers import SelectAdaptivePool2d

    if type(m) is SelectAdaptivePool2d and m.pool_type not in ("avg", ""):
        return f"its head pools with {m.pool_type!r} (only mean pooling, a linear map, is covered by the rules)"
    return None


def timm_lrp_sites(model: Model, method: str, swin: bool) -> LrpSites:
    """The AttnLRP rule sites of a timm ViT (``swin=False``) or Swin V1 (``swin=True``): the timm classes whose
    forward consists of linear maps, reshapes, residual additions, mean pooling and the rule sites."""
    from timm.layers import ClassifierHead, DropPath, LayerNorm, LayerScale, Mlp, PatchDropout, PatchEmbed
    from timm.layers.adaptive_avgmax_pool import FastAdaptiveAvgPool, SelectAdaptivePool2d

    common = {Mlp, PatchEmbed, LayerScale, DropPath, PatchDropout}
    if swin:
        from timm.models.swin_transformer import (
            PatchMerging,
            SwinTransformer,
            SwinTransformerBlock,
            SwinTransformerStage,
            WindowAttention,
        )

        safe = common | {
            SwinTransformer,
            SwinTransformerStage,
            SwinTransformerBlock,
            WindowAttention,
            PatchMerging,
            ClassifierHead,
            SelectAdaptivePool2d,
            FastAdaptiveAvgPool,
        }
    else:
        from timm.layers import Attention
        from timm.models.deit import VisionTransformerDistilled
        from timm.models.vision_transformer import Block, VisionTransformer

        safe = common | {VisionTransformer, VisionTransformerDistilled, Block, Attention}
    return find_lrp_sites(
        model.module,
        model_name=model.name,
        safe=safe,
        layernorms={LayerNorm},
        activations=(),
        attention=_timm_attention_projections,
        problem=_timm_pool_problem,
        method=method,
    )
