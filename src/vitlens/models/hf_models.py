"""Adapter for Hugging Face transformers ``ViTForImageClassification``, ``DeiTForImageClassification`` and
``DeiTForImageClassificationWithTeacher`` (transformers >= 5).

Attention is recorded with a forward hook on each layer's ``attention`` module, which returns
``(output, attn_weights)``. Only the eager attention implementation returns the weights (SDPA returns
None), so recording switches ``config._attn_implementation`` to ``"eager"`` and restores it afterwards.
In eager mode the returned weights are the tensor multiplied with the values, so gradients with respect to
them are the gradients the methods need.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from ..errors import ExplainerError, InputError, ModelError
from .base import Model, Preprocessing
from .lrp_sites import LrpSites, find_lrp_sites
from .trace import BlockTrace, HeadTrace

HF_CLASSES = ("ViTForImageClassification", "DeiTForImageClassification", "DeiTForImageClassificationWithTeacher")


def is_hf_classifier(module: nn.Module) -> bool:
    return type(module).__name__ in HF_CLASSES


def hf_preprocessing(module: nn.Module, source: str | Path | None = None) -> Preprocessing:
    """Read ``preprocessor_config.json`` next to the weights when there is one, else the defaults of the
    model family's image processor (ViT: mean = std = 0.5, plain resize; DeiT: ImageNet statistics,
    resize 256 / crop 224)."""
    cfg = module.config
    size = int(cfg.image_size)
    is_deit = "DeiT" in type(module).__name__
    pre = {
        "mean": (0.485, 0.456, 0.406) if is_deit else (0.5, 0.5, 0.5),
        "std": (0.229, 0.224, 0.225) if is_deit else (0.5, 0.5, 0.5),
        "crop_pct": 224 / 256 if is_deit else 1.0,
    }
    path = Path(source) / "preprocessor_config.json" if source is not None else None
    if path is not None and path.is_file():
        try:
            pc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"{path}: unreadable preprocessor config: {e}") from e
        pre["mean"] = tuple(pc.get("image_mean", pre["mean"]))
        pre["std"] = tuple(pc.get("image_std", pre["std"]))
        if pc.get("do_center_crop") and isinstance(pc.get("size"), dict) and "shortest_edge" in pc["size"]:
            pre["crop_pct"] = size / float(pc["size"]["shortest_edge"])
        else:
            pre["crop_pct"] = 1.0
    return Preprocessing(
        input_size=(size, size),
        mean=tuple(float(v) for v in pre["mean"]),
        std=tuple(float(v) for v in pre["std"]),
        interpolation="bicubic" if is_deit else "bilinear",
        crop_pct=float(pre["crop_pct"]),
        in_chans=int(getattr(cfg, "num_channels", 3)),
    )


class HFViT(Model):
    family = "vit"

    def __init__(self, module: nn.Module, *, name: str, source: str | Path | None = None, preprocessing=None) -> None:
        cfg = module.config
        labels = [cfg.id2label[i] for i in range(cfg.num_labels)] if cfg.id2label else None
        if labels and all(lbl == f"LABEL_{i}" for i, lbl in enumerate(labels)):
            labels = None
        super().__init__(
            module,
            name=name,
            num_classes=cfg.num_labels,
            preprocessing=preprocessing or hf_preprocessing(module, source),
            class_names=labels,
        )
        base = module.base_model
        layers = getattr(base, "layers", None)
        if layers is None:
            raise ModelError(
                f"{type(module).__name__} has no `layers` list: vitlens supports transformers >= 5 for HF models"
            )
        self._layers = layers
        self._distilled = "DeiT" in type(module).__name__

    @property
    def has_attention(self) -> bool:
        return True

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self._distilled else 1

    def readout(self, num_tokens: int) -> torch.Tensor:
        r = torch.zeros(num_tokens)
        if type(self.module).__name__ == "DeiTForImageClassificationWithTeacher":
            r[0] = r[1] = 0.5  # logits = (cls_classifier(CLS) + distillation_classifier(DIST)) / 2
        else:
            r[0] = 1.0
        return r

    def grid_size(self, input_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        p = int(self.module.config.patch_size)
        h, w = input_hw or self.preprocessing.input_size
        return int(h) // p, int(w) // p

    def _check_spatial(self, hw: tuple[int, int]) -> None:
        s = int(self.module.config.image_size)
        if tuple(hw) != (s, s):
            raise InputError(f"model {self.name!r} expects {s}x{s} images, got {hw[0]}x{hw[1]}")

    def _raw_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(pixel_values=x).logits

    def attention_modules(self) -> list[nn.Module]:
        return [layer.attention for layer in self._layers]

    @contextlib.contextmanager
    def _explicit_attention(self, modules: list[nn.Module]) -> Iterator[None]:
        # the attention implementation is one setting of the shared config: all layers switch
        cfg = self.module.config
        saved = cfg._attn_implementation
        try:
            cfg._attn_implementation = "eager"
            yield
        finally:
            cfg._attn_implementation = saved

    def _hook_attention(self, module: nn.Module, store: list[torch.Tensor]):
        def hook(_m, _a, out):
            weights = out[1] if isinstance(out, tuple) and len(out) > 1 else None
            if weights is None:
                raise ModelError(f"{type(_m).__name__} returned no attention weights (eager attention required)")
            store.append(weights)

        return module.register_forward_hook(hook)

    # ---- tracing inside blocks
    def _head_linears(self) -> list[nn.Module]:
        m = self.module
        if type(m).__name__ == "DeiTForImageClassificationWithTeacher":
            return [m.cls_classifier, m.distillation_classifier]
        return [m.classifier]

    def _trace_block_hooks(self, index: int, t: BlockTrace) -> list:
        layer = self._layers[index]
        att = layer.attention
        d = int(att.head_dim)

        def set_in(name):
            return lambda _m, args: setattr(t, name, args[0])

        outs = {}

        def heads(name):
            def hook(_m, _a, out):
                b, n, _ = out.shape
                outs[name] = out
                if name == "v":
                    t.qkv_out = torch.cat([outs["q"], outs["k"], outs["v"]], dim=-1)
                setattr(t, name, out.view(b, n, -1, d).transpose(1, 2))

            return hook

        def attention(_m, _a, out):
            t.attn = out[1]

        def set_(name):  # layers may return a tuple
            return lambda _m, _a, out: setattr(t, name, out[0] if isinstance(out, tuple) else out)

        t.scale = float(att.scaling)
        t.w_qkv = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])
        t.w_proj, t.w_fc1, t.w_fc2 = att.o_proj.weight, layer.mlp.fc1.weight, layer.mlp.fc2.weight
        qkv_bias = [att.q_proj.bias, att.k_proj.bias, att.v_proj.bias]
        t.b_qkv = None if any(b is None for b in qkv_bias) else torch.cat(qkv_bias)
        t.b_proj, t.b_fc1, t.b_fc2 = att.o_proj.bias, layer.mlp.fc1.bias, layer.mlp.fc2.bias
        return [
            att.o_proj.register_forward_hook(set_("proj_out")),
            layer.mlp.fc1.register_forward_hook(set_("fc1_out")),
            layer.mlp.fc2.register_forward_hook(set_("fc2_out")),
            layer.register_forward_pre_hook(set_in("x")),
            layer.register_forward_hook(set_("out")),
            layer.layernorm_before.register_forward_hook(set_("ln1")),
            att.q_proj.register_forward_hook(heads("q")),
            att.k_proj.register_forward_hook(heads("k")),
            att.v_proj.register_forward_hook(heads("v")),
            att.register_forward_hook(attention),
            att.o_proj.register_forward_pre_hook(set_in("ctx")),
            att.o_proj.register_forward_hook(set_("attn_out")),
            layer.layernorm_after.register_forward_hook(set_("ln2")),
            layer.mlp.fc2.register_forward_pre_hook(set_in("hidden")),
            layer.mlp.fc2.register_forward_hook(set_("mlp_out")),
        ]

    def _trace_head_hooks(self, head: HeadTrace) -> list:
        linears = self._head_linears()
        head.pool = "distilled" if len(linears) == 2 else "token"
        return self._hook_head(head, self.module.base_model.layernorm, linears)

    def head_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        with self.evaluating():
            z = self.module.base_model.layernorm(tokens)
            linears = self._head_linears()
            if len(linears) == 2:
                return (linears[0](z[:, 0]) + linears[1](z[:, 1])) / 2
            return linears[0](z[:, 0])

    def lrp_sites(self, method: str = "attnlrp") -> LrpSites:
        """AttnLRP rule sites: the ViT/DeiT classes of transformers >= 5 (linear maps, residuals, the rule
        sites), GELU/SiLU activations of ``transformers.activations``, the q/k/v projections of attention."""
        from transformers import activations as act
        from transformers.models.deit import modeling_deit
        from transformers.models.vit import modeling_vit

        safe = {modeling_deit.DeiTForImageClassificationWithTeacher}
        attention = set()
        for lib, fam in ((modeling_vit, "ViT"), (modeling_deit, "DeiT")):
            parts = ("Model", "Embeddings", "PatchEmbeddings", "Layer", "MLP", "ForImageClassification")
            safe |= {getattr(lib, fam + part) for part in parts}
            attention.add(getattr(lib, fam + "Attention"))
        activations = {
            act.GELUActivation,
            act.GELUTanh,
            act.NewGELUActivation,
            act.FastGELUActivation,
            act.QuickGELUActivation,
            act.SiLUActivation,
        }

        def projections(m: nn.Module):
            if type(m) not in attention:
                return None
            if not all(isinstance(getattr(m, p, None), nn.Linear) for p in ("q_proj", "k_proj", "v_proj")):
                return "it has no q_proj/k_proj/v_proj projections"
            return [(m.q_proj, "q"), (m.k_proj, "k"), (m.v_proj, "v")]

        return find_lrp_sites(
            self.module,
            model_name=self.name,
            safe=safe | attention,
            layernorms=(),
            activations=activations,
            attention=projections,
            method=method,
        )

    def feature_site(self, layer, input_hw):
        n = len(self._layers)
        idx = -1 if layer is None else layer
        if not isinstance(idx, int) or not -n <= idx < n:
            raise ExplainerError(f"layer={layer!r} is not a layer index of {self.name!r} (valid: -{n}..{n - 1})")
        grid = self.grid_size(input_hw)
        return self._layers[idx].layernorm_before, "input", lambda t: self._tokens_to_bchw(t, grid)
