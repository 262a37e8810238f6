"""agcam, isaw, legrad and attention_flow against naive per-image references written here.

The references do not use the model adapter: attention is recomputed by textbook multi-head attention
patched onto the model instance for one call (timm ``Attention.forward``, HF ``ViTAttention.forward``),
gradients come from autograd through that explicit computation, and the head readouts are written out per
architecture. Attention flow is compared with networkx maximum flows on the reference graph of Abnar &
Zuidema's code (edges from layer l down to layer l−1, flow from the output CLS node to an input node).
"""

from __future__ import annotations

import types

import networkx as nx
import numpy as np
import pytest
import torch

import vitlens
from vitlens.explainers.flow import layered_max_flow

from .conftest import VIT_ZOO, images_for, make_timm, zoo_model
from .reference import _prefix, _readout, naive_attention

METHODS = ["agcam", "isaw", "legrad", "attention_flow"]
# small models: attention flow solves one max-flow per patch
FAST_ZOO = ["test_vit", "vit_registers", "vit_p8_112", "hf_vit", "hf_deit_distilled"]


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    scale = max(float(b.abs().max()), 1e-12)
    return float((a.double() - b.double()).abs().max()) <= rtol * scale + 1e-7


def _grid(model: vitlens.Model, row: torch.Tensor, hw) -> torch.Tensor:
    h, w = model.grid_size(tuple(hw))
    return row[_prefix(model) :].reshape(h, w).float()


# ------------------------------------------------------------------------------------ naive forwards
def _textbook_forward(model: vitlens.Model, x1: torch.Tensor, *, detach_attention_input: bool):
    """One image through the unmodified weights with explicit attention. Returns (logits [C], scores,
    attentions, block outputs); the per-layer tensors keep their batch dimension of 1, in the autograd graph."""
    mod = model.module
    scores, attns, outs = [], [], []
    x = x1[None].detach().clone().requires_grad_(True)
    was = mod.training
    mod.eval()
    hooks = []
    if hasattr(mod, "blocks"):  # timm

        def attn_fwd(self, t, attn_mask=None, is_causal=False):
            if detach_attention_input:
                t = t.detach()
            b, n, _ = t.shape
            qkv = self.qkv(t).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = self.q_norm(qkv[0]), self.k_norm(qkv[1]), qkv[2]
            s = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            a = s.softmax(dim=-1)
            scores.append(s)
            attns.append(a)
            return self.proj(self.norm((a @ v).transpose(1, 2).reshape(b, n, -1)))

        blocks, attn_mods = list(mod.blocks), [blk.attn for blk in mod.blocks]
    else:  # Hugging Face

        def attn_fwd(self, t, attention_mask=None, **kwargs):
            if detach_attention_input:
                t = t.detach()
            b, n, _ = t.shape
            q = self.q_proj(t).view(b, n, -1, self.head_dim).transpose(1, 2)
            k = self.k_proj(t).view(b, n, -1, self.head_dim).transpose(1, 2)
            v = self.v_proj(t).view(b, n, -1, self.head_dim).transpose(1, 2)
            s = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
            a = s.softmax(dim=-1)
            scores.append(s)
            attns.append(a)
            return self.o_proj((a @ v).transpose(1, 2).reshape(b, n, -1)), a

        blocks = list(mod.base_model.layers)
        attn_mods = [layer.attention for layer in blocks]
    for m in attn_mods:
        m.forward = types.MethodType(attn_fwd, m)
    for blk in blocks:
        hooks.append(blk.register_forward_hook(lambda _m, _a, o: outs.append(o[0] if isinstance(o, tuple) else o)))
    try:
        logits = mod(x) if hasattr(mod, "blocks") else mod(pixel_values=x).logits
    finally:
        for m in attn_mods:
            del m.forward
        for hk in hooks:
            hk.remove()
        mod.train(was)
    return logits[0], scores, attns, outs


def _classify_tokens(model: vitlens.Model, z: torch.Tensor) -> torch.Tensor:
    """The classifier applied to a residual stream [1, N, D], written out per architecture."""
    mod = model.module
    name = type(mod).__name__
    if hasattr(mod, "blocks"):
        z = mod.norm(z)
        if name == "VisionTransformerDistilled":
            return (mod.head(z[:, 0]) + mod.head_dist(z[:, 1])) / 2
        if mod.global_pool == "avg":
            return mod.head(mod.fc_norm(z[:, mod.num_prefix_tokens :].mean(dim=1)))
        return mod.head(mod.fc_norm(z[:, 0]))
    z = mod.base_model.layernorm(z)
    if name == "DeiTForImageClassificationWithTeacher":
        return (mod.cls_classifier(z[:, 0]) + mod.distillation_classifier(z[:, 1])) / 2
    return mod.classifier(z[:, 0])


# ------------------------------------------------------------------------------------ naive maps
def naive_agcam(model, x1, target):
    logits, scores, attns, _ = _textbook_forward(model, x1, detach_attention_input=True)
    t = int(logits.argmax()) if target is None else target
    grads = [g[0] for g in torch.autograd.grad(logits[t], attns)]
    scores = [s[0].detach() for s in scores]
    n = scores[0].shape[-1]
    r = _readout(model, n)
    cam = torch.zeros(n, dtype=torch.float64)
    for s, g in zip(scores, grads, strict=True):
        for h in range(s.shape[0]):
            for i in range(n):
                if r[i] != 0:
                    cam += r[i] * torch.clamp(g[h, i].double(), min=0) * torch.sigmoid(s[h, i].double())
    return _grid(model, cam, x1.shape[-2:])


def naive_isaw(model, x1, target):
    attns, grads, _logits = naive_attention(model, x1[None], -1 if target is None else target)
    n = attns[0].shape[-1]
    r = _readout(model, n)
    p = _prefix(model)
    layer_maps, betas = [], []
    for a, g in zip(attns, grads, strict=True):
        ws = [float((r @ g[h])[p:].mean()) for h in range(a.shape[0])]
        layer_maps.append(torch.clamp(sum(w * (r @ a[h]) for h, w in enumerate(ws)) / len(ws), min=0))
        betas.append(max(sum(ws) / len(ws), 0.0))
    total = sum(betas)
    row = sum((b / total) * m for b, m in zip(betas, layer_maps, strict=True)) if total > 0 else layer_maps[0] * 0
    return _grid(model, row, x1.shape[-2:])


def naive_legrad(model, x1, target, start_layer=0):
    logits, _scores, attns, outs = _textbook_forward(model, x1, detach_attention_input=False)
    t = int(logits.argmax()) if target is None else target
    n = attns[0].shape[-1]
    layers = list(range(len(attns)))[start_layer:]
    acc = torch.zeros(n, dtype=torch.float64)
    for layer in layers:
        s = _classify_tokens(model, outs[layer])[0, t]
        (g,) = torch.autograd.grad(s, [attns[layer]], retain_graph=True)
        acc += torch.clamp(g[0].double(), min=0).mean(dim=0).mean(dim=0)
    return _grid(model, acc / len(layers), x1.shape[-2:])


NAIVE = {"agcam": naive_agcam, "isaw": naive_isaw, "legrad": naive_legrad}


@pytest.mark.parametrize("zoo", sorted(VIT_ZOO))
@pytest.mark.parametrize("method", ["agcam", "isaw", "legrad"])
def test_gradient_attention_methods_match_naive_reference(zoo, method):
    model = zoo_model(zoo)
    x = images_for(model, batch=2)
    exp = vitlens.get_explainer(method, model)
    for target in (None, 3):
        maps = exp(x, target=target)
        for i in range(x.shape[0]):
            ref = NAIVE[method](model, x[i], target)
            assert maps[i].shape == ref.shape
            assert _close(maps[i], ref), (zoo, method, target, float((maps[i] - ref).abs().max()))


def test_legrad_start_layer_matches_reference_and_is_validated(deit):
    x = images_for(deit, batch=1)
    maps = vitlens.get_explainer("legrad", deit, start_layer=-2)(x, target=5)
    assert _close(maps[0], naive_legrad(deit, x[0], 5, start_layer=-2))
    assert not torch.allclose(maps, vitlens.get_explainer("legrad", deit)(x, target=5))
    for bad in (12, -13, 1.5, True):
        with pytest.raises(vitlens.ExplainerError, match="start_layer"):
            vitlens.get_explainer("legrad", deit, start_layer=bad)


def test_agcam_gradient_is_not_the_full_gradient(deit):
    """The reference cuts the gradient at every attention input; with the full gradient the map differs
    (guards against silently using ∂y/∂A of the unmodified backward)."""
    x = images_for(deit, batch=1)
    model = deit
    logits, scores, attns, _ = _textbook_forward(model, x[0], detach_attention_input=False)
    t = int(logits.argmax())
    grads = torch.autograd.grad(logits[t], attns)
    full = sum(
        (torch.clamp(g[0, :, 0], min=0) * torch.sigmoid(s[0, :, 0])).sum(dim=0)
        for s, g in zip(scores, grads, strict=True)
    )
    ours = vitlens.get_explainer("agcam", model)(x)[0]
    assert not _close(ours, _grid(model, full.detach().double(), x.shape[-2:]), rtol=1e-2)


@pytest.mark.parametrize("method", ["agcam", "isaw", "legrad"])
def test_class_specific_maps_depend_on_the_target(method):
    model = zoo_model("test_vit")
    x = images_for(model, batch=2)
    exp = vitlens.get_explainer(method, model)
    a, b = exp(x, target=1), exp(x, target=2)
    assert not torch.allclose(a, b)
    res = exp.explain(x, target=torch.tensor([4, 7]))
    assert res.target.tolist() == [4, 7]


@pytest.mark.parametrize("zoo", FAST_ZOO)
@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_at_a_time(zoo, method):
    model = zoo_model(zoo)
    x = images_for(model, batch=3)
    exp = vitlens.get_explainer(method, model)
    maps = exp(x, target=1)
    assert maps.dtype == torch.float32 and tuple(maps.shape[1:]) == model.grid_size(tuple(x.shape[-2:]))
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    for i in range(3):
        assert _close(exp(x[i : i + 1], target=1)[0], maps[i], rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_models_without_global_attention_are_refused(method, swin, resnet50):
    for model in (swin, resnet50, vitlens.load_model("timm:test_vit3")):
        with pytest.raises(vitlens.ExplainerError):
            vitlens.get_explainer(method, model)


def test_model_is_left_as_found(deit):
    mod = deit.module
    flags = [blk.attn.fused_attn for blk in mod.blocks]
    mod.train()
    try:
        for method in METHODS[:3]:
            vitlens.get_explainer(method, deit)(images_for(deit, batch=1))
        assert mod.training and all(m.training for m in mod.modules())
        assert [blk.attn.fused_attn for blk in mod.blocks] == flags
        assert all(not m._forward_hooks and not m._forward_pre_hooks for m in mod.modules())
        assert all(p.grad is None for p in mod.parameters())
    finally:
        mod.eval()


# ------------------------------------------------------------------------------------ attention flow
def _tiny_vit(seed: int = 0, sharpen: float = 1.0, **kw) -> vitlens.Model:
    model = make_timm(
        "vit_small_patch16_224",
        seed=seed,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=3,
        num_heads=2,
        num_classes=5,
        **kw,
    )
    if sharpen != 1.0:  # larger q·k logits: peaked attention, as in trained models
        with torch.no_grad():
            for blk in model.module.blocks:
                d = blk.attn.qkv.in_features
                blk.attn.qkv.weight[: 2 * d] *= sharpen
    return model


def _reference_flow(model: vitlens.Model, x1: torch.Tensor) -> torch.Tensor:
    """Abnar & Zuidema's formulation: head-mean attention, ``(A + I)`` rows renormalised, a networkx
    DiGraph with edges from (layer i, token f) to (layer i−1, token t), and one ``maximum_flow_value`` per
    input token from the output node(s). Several output tokens (distilled, average pooling) are joined in a
    readout node with edges of capacity ``readout[j]`` (vitlens' documented generalisation)."""
    attns, _, _ = naive_attention(model, x1[None], None)
    mats = []
    for a in attns:
        m = a.mean(dim=0) + torch.eye(a.shape[-1], dtype=a.dtype)
        mats.append((m / m.sum(dim=-1, keepdim=True)).numpy())
    n_layers, n = len(mats), mats[0].shape[0]
    adj = np.zeros(((n_layers + 1) * n, (n_layers + 1) * n))
    for i in range(1, n_layers + 1):
        adj[i * n : (i + 1) * n, (i - 1) * n : i * n] = mats[i - 1]
    graph = nx.from_numpy_array(adj, create_using=nx.DiGraph(), edge_attr="capacity")
    r = _readout(model, n).numpy()
    if np.count_nonzero(r) == 1:
        source = n_layers * n + int(np.argmax(r))
    else:
        source = "readout"
        for j in np.nonzero(r)[0]:
            graph.add_edge(source, n_layers * n + int(j), capacity=float(r[j]))
    flows = [nx.maximum_flow_value(graph, source, t, flow_func=nx.algorithms.flow.edmonds_karp) for t in range(n)]
    return _grid(model, torch.tensor(flows, dtype=torch.float64), x1.shape[-2:])


@pytest.mark.parametrize(
    "factory",
    [
        lambda: _tiny_vit(),
        lambda: _tiny_vit(seed=1, sharpen=6.0),
        lambda: _tiny_vit(seed=2, sharpen=4.0, global_pool="avg"),
        lambda: zoo_model("hf_deit_distilled"),
    ],
    ids=["cls", "cls-peaked", "avgpool-peaked", "hf-distilled"],
)
def test_attention_flow_equals_networkx_max_flow(factory):
    model = factory()
    x = images_for(model, batch=2)
    maps = vitlens.get_explainer("attention_flow", model)(x)
    for i in range(x.shape[0]):
        ref = _reference_flow(model, x[i])
        assert float((maps[i].double() - ref.double()).abs().max()) < 1e-6, (maps[i], ref)


def test_attention_flow_params(deit):
    with pytest.raises(vitlens.ExplainerError, match="head_fusion"):
        vitlens.get_explainer("attention_flow", deit, head_fusion="median")
    with pytest.raises(vitlens.ExplainerError, match="alpha"):
        vitlens.get_explainer("attention_flow", deit, alpha=2.0)
    model = _tiny_vit(seed=3, sharpen=3.0)
    x = images_for(model, batch=1)
    a = vitlens.get_explainer("attention_flow", model)(x)
    b = vitlens.get_explainer("attention_flow", model, head_fusion="max", alpha=0.8)(x)
    assert not torch.allclose(a, b)
    assert torch.equal(a, vitlens.get_explainer("attention_flow", model)(x, target=3))  # not class-specific


def _nx_layered(src, caps, sink) -> float:
    graph = nx.DiGraph()
    graph.add_node("s")
    graph.add_node("t")
    n = len(src)
    for j in range(n):
        graph.add_edge("s", (0, j), capacity=float(src[j]))
        graph.add_edge((len(caps), j), "t", capacity=float(sink[j]))
    for k, c in enumerate(caps):
        for i in range(n):
            for j in range(n):
                graph.add_edge((k, j), (k + 1, i), capacity=float(c[i, j]))
    return nx.maximum_flow_value(graph, "s", "t")


def test_layered_max_flow_equals_networkx_on_random_networks():
    rng = np.random.default_rng(0)
    for trial in range(40):
        n_layers, n, p = int(rng.integers(1, 7)), int(rng.integers(1, 8)), int(rng.integers(1, 5))
        conc = [0.02, 0.3, 1.0, 5.0][trial % 4]
        caps = rng.dirichlet(np.full(n, conc), size=(n_layers - 1, n)) if n_layers > 1 else np.zeros((0, n, n))
        if trial % 5 == 0:  # ties and exact zeros
            caps = np.round(caps * 4) / 4
        if trial % 7 == 0:  # capacities near the solver's tolerance
            caps = np.where(caps < 0.2, caps * 1e-10, caps)
        src = rng.dirichlet(np.full(n, conc), size=p) * rng.uniform(0.2, 2.0)
        sink = np.eye(n)[0] if trial % 3 == 0 else rng.dirichlet(np.ones(n))
        got = layered_max_flow(
            torch.tensor(src),
            torch.tensor(caps).reshape(1, n_layers - 1, n, n),
            torch.tensor(sink)[None],
            torch.zeros(p, dtype=torch.long),
            chunk=int(rng.integers(1, 4)),
        )
        want = [_nx_layered(src[q], caps, sink) for q in range(p)]
        assert np.abs(got.numpy() - np.array(want)).max() < 1e-9, (trial, got, want)


def test_layered_max_flow_groups_and_known_values():
    # two networks, one layer pair: s -> 0 -> 1 -> t with bottlenecks we can add up by hand
    caps = torch.tensor([[[[0.5, 0.0], [0.0, 0.25]]], [[[1.0, 1.0], [1.0, 1.0]]]], dtype=torch.float64)
    sink = torch.tensor([[1.0, 1.0], [0.3, 0.0]], dtype=torch.float64)
    src = torch.tensor([[1.0, 1.0], [1.0, 0.1], [0.2, 0.2]], dtype=torch.float64)
    got = layered_max_flow(src, caps, sink, torch.tensor([0, 0, 1]))
    assert torch.allclose(got, torch.tensor([0.75, 0.6, 0.3], dtype=torch.float64))
    with pytest.raises(ValueError):
        layered_max_flow(src, caps, sink[:1], torch.tensor([0, 0, 1]))
