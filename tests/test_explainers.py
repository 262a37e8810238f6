"""Every registered explainer against naive per-image references, and the properties the papers state."""

from __future__ import annotations

import pytest
import torch

import vitlens
from vitlens.explainers.attention import discard_lowest, rollout_row
from vitlens.explainers.coverage import fast_params

from .conftest import VIT_ZOO, images_for, zoo_model
from .reference import reference_gradcam, reference_map

ATTENTION_METHODS = ["raw_attention", "rollout", "grad_rollout", "generic_attention", "attention_gradcam"]
CLASS_SPECIFIC = [n for n in vitlens.list_explainers() if vitlens.explainer_info(n)["class_specific"]]


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    """Equal up to float32 noise relative to the map's scale."""
    scale = max(float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) <= rtol * scale + 1e-7


# where each explainer is compared with an independent reference (naive implementation, peer library or the
# authors' code); a new explainer must be added here with its test
REFERENCE_TESTS = {
    **dict.fromkeys(ATTENTION_METHODS, "tests/test_explainers.py (tests/reference.py)"),
    "gradcam": "tests/test_explainers.py (tests/reference.py)",
    "chefer2021": "tests/test_chefer.py (maps of the authors' implementation)",
    "attnlrp": "tests/test_attnlrp.py",
    "agcam": "tests/test_attention_methods.py",
    "isaw": "tests/test_attention_methods.py",
    "legrad": "tests/test_attention_methods.py",
    "attention_flow": "tests/test_attention_methods.py (networkx max-flow)",
    "saliency": "tests/test_gradient_baselines.py",
    "input_x_gradient": "tests/test_gradient_baselines.py",
    "integrated_gradients": "tests/test_gradient_baselines.py",
    "smoothgrad": "tests/test_gradient_baselines.py",
    "occlusion": "tests/test_gradient_baselines.py",
    "rise": "tests/test_rise.py",
}


def test_every_method_is_covered_by_a_reference():
    from pathlib import Path

    assert set(vitlens.list_explainers()) == set(REFERENCE_TESTS)
    root = Path(__file__).resolve().parents[1]
    for where in set(REFERENCE_TESTS.values()):
        assert (root / where.split()[0]).is_file(), where


@pytest.mark.parametrize("zoo", sorted(VIT_ZOO))
@pytest.mark.parametrize(
    "method,params",
    [
        ("raw_attention", {}),
        ("raw_attention", {"head_fusion": "max"}),
        ("rollout", {}),
        ("rollout", {"head_fusion": "max", "discard_ratio": 0.9}),
        ("rollout", {"head_fusion": "min", "alpha": 0.8}),
        ("grad_rollout", {}),
        ("grad_rollout", {"head_fusion": "max", "discard_ratio": 0.5}),
        ("generic_attention", {}),
        ("attention_gradcam", {}),
    ],
)
def test_attention_methods_match_naive_reference(zoo, method, params):
    model = zoo_model(zoo)
    x = images_for(model, batch=2)
    maps = vitlens.get_explainer(method, model, **params)(x)
    for i in range(x.shape[0]):
        ref = reference_map(model, x[i], method, **params)
        assert maps[i].shape == ref.shape
        assert _close(maps[i], ref), (zoo, method, params, float((maps[i] - ref).abs().max()))


@pytest.mark.parametrize("zoo", ["deit_tiny", "hf_vit", "vit_registers"])
def test_gradcam_vit_matches_naive_reference(zoo):
    model = zoo_model(zoo)
    x = images_for(model, batch=2)
    maps = vitlens.get_explainer("gradcam", model)(x, target=3)
    mod = model.module
    if hasattr(mod, "blocks"):
        site, p = mod.blocks[-1].norm1, mod.num_prefix_tokens
    else:
        site, p = mod.base_model.layers[-1].layernorm_before, 1
    h, w = maps.shape[-2:]
    tokens = lambda t: t[:, p:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)  # noqa: E731
    for i in range(2):
        ref = reference_gradcam(model, x[i], 3, site, "input", tokens)
        assert _close(maps[i], ref)


def test_gradcam_cnn_and_swin_match_naive_reference(resnet50, swin):
    x = images_for(resnet50, batch=2)
    maps = vitlens.get_explainer("gradcam", resnet50)(x)
    assert maps.shape == (2, 7, 7)
    for i in range(2):
        ref = reference_gradcam(resnet50, x[i], None, resnet50.module.layer4, "output", lambda t: t)
        assert _close(maps[i], ref)
    x = images_for(swin, batch=2)
    maps = vitlens.get_explainer("gradcam", swin)(x, target=torch.tensor([1, 4]))
    assert maps.shape == (2, 7, 7)
    for i, t in enumerate([1, 4]):
        ref = reference_gradcam(swin, x[i], t, swin.module.layers[-1], "output", lambda f: f.permute(0, 3, 1, 2))
        assert _close(maps[i], ref)


@pytest.mark.parametrize("method", vitlens.list_explainers())
@pytest.mark.parametrize("zoo", ["deit_tiny", "deit_tiny_distilled", "hf_deit_distilled", "test_vit2_avgpool"])
def test_batch_equals_one_at_a_time_and_contract(method, zoo):
    model = zoo_model(zoo)
    x = images_for(model, batch=3)
    exp = vitlens.get_explainer(method, model, **fast_params(method))  # cheap n_steps / n_masks
    maps = exp(x)
    assert maps.dtype == torch.float32 and maps.ndim == 3 and maps.shape[0] == 3
    assert torch.isfinite(maps).all()
    if not exp.signed:
        assert (maps >= 0).all()
    if exp.resolution == "patch":
        assert tuple(maps.shape[1:]) == model.grid_size(tuple(x.shape[-2:]))
    else:
        assert tuple(maps.shape[1:]) == tuple(x.shape[-2:])
    for i in range(3):
        assert _close(exp(x[i : i + 1])[0], maps[i], rtol=1e-4)


@pytest.mark.parametrize("method", CLASS_SPECIFIC)
def test_class_specific_methods_depend_on_target(method, deit):
    x = images_for(deit, batch=2)
    exp = vitlens.get_explainer(method, deit, **fast_params(method))
    a, b = exp(x, target=1), exp(x, target=700)
    assert not torch.allclose(a, b)
    res = exp.explain(x, target=torch.tensor([5, 9]))
    assert res.target.tolist() == [5, 9]
    predicted = exp.explain(x)
    assert predicted.target.tolist() == predicted.logits.argmax(-1).tolist()


@pytest.mark.parametrize("method", ["raw_attention", "rollout"])
def test_class_agnostic_methods_ignore_target(method, deit):
    x = images_for(deit, batch=2)
    exp = vitlens.get_explainer(method, deit)
    assert torch.equal(exp(x, target=1), exp(x, target=700))


def test_rollout_of_uniform_attention_is_uniform():
    """Zero query/key weights make every attention row uniform (softmax of zeros); rollout of uniform
    attention with the residual gives every patch the same weight."""
    model = make_zero_qk_model()
    maps = vitlens.get_explainer("rollout", model)(images_for(model, batch=2))
    assert torch.allclose(maps, maps[:, :1, :1].expand_as(maps), rtol=1e-5, atol=1e-7)
    raw = vitlens.get_explainer("raw_attention", model)(images_for(model, batch=1))
    n = raw.numel() + 1
    assert torch.allclose(raw, torch.full_like(raw, 1.0 / n), atol=1e-6)


def make_zero_qk_model() -> vitlens.Model:
    torch.manual_seed(0)
    m = vitlens.load_model("timm:test_vit")
    with torch.no_grad():
        for blk in m.module.blocks:
            dim = blk.attn.qkv.in_features
            blk.attn.qkv.weight[: 2 * dim] = 0.0  # q and k rows
            if blk.attn.qkv.bias is not None:
                blk.attn.qkv.bias[: 2 * dim] = 0.0
    return m


def test_rollout_of_identity_attention_keeps_only_the_cls_token():
    """With A_l = I for every layer, Â_l = I and R = I: no patch receives anything from the CLS row."""

    class _M:
        def readout(self, n):
            r = torch.zeros(n)
            r[0] = 1
            return r

    n = 5
    row = rollout_row(_M(), [torch.eye(n).expand(2, n, n)] * 4, alpha=0.5)
    assert torch.equal(row, torch.eye(n)[0].expand(2, n))


def test_discard_ratio_zero_is_plain_rollout_and_discard_spares_cls(deit):
    x = images_for(deit, batch=2)
    plain = vitlens.get_explainer("rollout", deit)(x)
    assert torch.equal(vitlens.get_explainer("rollout", deit, discard_ratio=0.0)(x), plain)
    assert not torch.allclose(vitlens.get_explainer("rollout", deit, discard_ratio=0.9)(x), plain)
    a = torch.rand(2, 6, 6)
    a[:, 0, 0] = 0.0  # the smallest entry, but CLS→CLS must survive the discarding
    a[1, 0, 0] = -1.0
    d = discard_lowest(a, 0.5)
    assert torch.equal(d[:, 0, 0], a[:, 0, 0])
    assert ((d == 0).reshape(2, -1).sum(dim=1) >= 18).all()
    kept = d.reshape(2, -1)[:, 1:]
    dropped = a.reshape(2, -1)[:, 1:][kept == 0].reshape(2, -1)
    assert (dropped.amax(dim=1) <= kept.masked_fill(kept == 0, 9).amin(dim=1)).all()


def test_head_fusion_and_params_are_validated(deit):
    with pytest.raises(vitlens.ExplainerError, match="head_fusion"):
        vitlens.get_explainer("rollout", deit, head_fusion="median")
    with pytest.raises(vitlens.ExplainerError, match="discard_ratio"):
        vitlens.get_explainer("rollout", deit, discard_ratio=1.0)
    with pytest.raises(vitlens.ExplainerError, match="alpha"):
        vitlens.get_explainer("rollout", deit, alpha=1.5)
    with pytest.raises(vitlens.ExplainerError, match="no parameter"):
        vitlens.get_explainer("rollout", deit, fusion="max")
    with pytest.raises(vitlens.ExplainerError, match="unknown explainer"):
        vitlens.get_explainer("rolout", deit)
    with pytest.raises(vitlens.ExplainerError, match="layer"):
        vitlens.get_explainer("gradcam", deit, layer=40)


def test_targets_are_validated(deit):
    x = images_for(deit, batch=2)
    exp = vitlens.get_explainer("grad_rollout", deit)
    with pytest.raises(vitlens.InputError, match="out of range"):
        exp(x, target=1000)
    with pytest.raises(vitlens.InputError, match="out of range"):
        exp(x, target=-1)
    with pytest.raises(vitlens.InputError, match="entries"):
        exp(x, target=torch.tensor([1, 2, 3]))
    with pytest.raises(vitlens.InputError, match="integer"):
        exp(x, target=torch.tensor([1.0, 2.0]))
    assert torch.allclose(exp(x, target=[4, 4]), exp(x, target=4))


def test_bad_images_are_rejected(deit):
    exp = vitlens.get_explainer("rollout", deit)
    with pytest.raises(vitlens.InputError, match=r"\[B,C,H,W\]"):
        exp(torch.zeros(3, 224, 224))
    with pytest.raises(vitlens.InputError, match="channels"):
        exp(torch.zeros(1, 1, 224, 224))
    with pytest.raises(vitlens.InputError, match="224x224"):
        exp(torch.zeros(1, 3, 200, 200))
    with pytest.raises(vitlens.InputError, match="float"):
        exp(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    bad = torch.zeros(1, 3, 224, 224)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(vitlens.InputError, match="NaN"):
        exp(bad)
    with pytest.raises(vitlens.InputError):
        exp([1, 2, 3])


def test_attention_methods_refuse_models_without_usable_attention(swin, resnet50):
    for model in (swin, resnet50, vitlens.load_model("timm:test_vit3")):
        for method in ATTENTION_METHODS:
            with pytest.raises(vitlens.ExplainerError, match="gradcam"):
                vitlens.get_explainer(method, model)
        applicable = vitlens.applicable_explainers(model)
        assert "gradcam" in applicable
        assert not any(vitlens.explainer_info(m)["needs_attention"] for m in applicable), applicable


def test_grad_methods_leave_parameter_grads_untouched_and_work_when_frozen(deit):
    x = images_for(deit, batch=1)
    for p in deit.module.parameters():
        assert p.grad is None
    for method in CLASS_SPECIFIC:
        vitlens.get_explainer(method, deit, **fast_params(method))(x)
    assert all(p.grad is None for p in deit.module.parameters())
    frozen = zoo_model("test_vit")
    xf = images_for(frozen, batch=2)
    expected = {m: vitlens.get_explainer(m, frozen, **fast_params(m))(xf) for m in CLASS_SPECIFIC}
    flags = [p.requires_grad for p in frozen.module.parameters()]
    frozen.module.requires_grad_(False)
    try:
        for method in CLASS_SPECIFIC:  # a frozen model gives the same maps (the input carries the graph)
            again = vitlens.get_explainer(method, frozen, **fast_params(method))(xf)
            assert torch.allclose(again, expected[method], atol=1e-7), method
        assert not any(p.requires_grad for p in frozen.module.parameters())
    finally:
        for p, f in zip(frozen.module.parameters(), flags, strict=True):
            p.requires_grad_(f)


def test_upsample_contract():
    maps = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[5.0, 5.0], [5.0, 5.0]]])
    up = vitlens.upsample(maps, (4, 4))
    assert up.shape == (2, 4, 4)
    assert float(up[0].min()) == 0.0 and float(up[0].max()) == 1.0
    assert torch.equal(up[1], torch.zeros(4, 4))  # constant map: no ranking, zeros (documented)
    raw = vitlens.upsample(maps, (2, 2), normalize=False)
    assert torch.allclose(raw, maps)
    with pytest.raises(vitlens.InputError):
        vitlens.upsample(torch.full((1, 2, 2), float("nan")), (4, 4))
    with pytest.raises(vitlens.InputError):
        vitlens.upsample(torch.zeros(2, 2), (4, 4))


def test_attention_flow_over_the_last_layers_is_the_flow_of_a_shallower_stack(deit):
    """``layers=k`` equals full-depth attention flow on a model that has only those k blocks (an independent
    expectation: the same solver on the truncated network, built by recording the attention of the deep model)."""
    import vitlens.explainers.flow as flow

    x = images_for(deit, batch=1)
    full = vitlens.get_explainer("attention_flow", deit)
    last2 = vitlens.get_explainer("attention_flow", deit, layers=2)
    real_pass = flow.attention_pass

    def only_last_two(model, x, target, grad, layers=None):
        attns, g, logits, t = real_pass(model, x, target, grad=grad, layers=layers)
        return attns[-2:], g, logits, t

    expected = None
    try:
        flow.attention_pass = only_last_two
        expected = full(x)
    finally:
        flow.attention_pass = real_pass
    torch.testing.assert_close(last2(x), expected)
    assert not torch.allclose(last2(x), full(x))
    with pytest.raises(vitlens.ExplainerError, match="attention layers"):
        vitlens.get_explainer("attention_flow", deit, layers=99)(x)
