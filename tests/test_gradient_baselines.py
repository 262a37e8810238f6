"""Captum-backed pixel explainers (saliency, input×gradient, IG, SmoothGrad, occlusion) against naive
references written directly with torch.autograd / plain loops, and the properties the papers state."""

from __future__ import annotations

import math

import pytest
import torch

import vitlens

from .conftest import images_for, zoo_model

FAMILIES = ["swin", "resnet50", "hf_vit", "hf_deit_distilled", "deit_tiny_distilled", "vit_registers"]
PIXEL = ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion", "rise"]
CHEAP = {  # small settings so that every test takes seconds on a CPU
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"n_steps": 4},
    "smoothgrad": {"n_samples": 3, "batch_size": 4},
    "occlusion": {"window": 56, "stride": 48, "batch_size": 16},
    "rise": {"n_masks": 12, "batch_size": 8},
}


def get_model(request, name: str) -> vitlens.Model:
    return request.getfixturevalue(name) if name in ("swin", "resnet50") else zoo_model(name)


def images(model: vitlens.Model, batch: int = 2) -> torch.Tensor:
    """Random normalised images; 64x64 for CNNs (they take any size, and ResNet-50 at 224 is slow on a CPU)."""
    if model.family == "cnn":
        return torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return images_for(model, batch=batch)


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    scale = max(float(b.abs().max()), 1e-12)
    return float((a - b).abs().max()) <= rtol * scale + 1e-7


# ----------------------------------------------------------------------------------- naive references
def logit(model: vitlens.Model, x: torch.Tensor, t: int) -> torch.Tensor:
    return model.forward(x)[:, t]


def input_grad(model: vitlens.Model, x: torch.Tensor, t: int) -> torch.Tensor:
    """d y_t / d x for a batch, by torch.autograd directly (eval mode)."""
    with model.evaluating(), torch.enable_grad():
        xi = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(logit(model, xi, t).sum(), [xi])
    return g


def pixel_baseline(model: vitlens.Model, pixel: float | None, x: torch.Tensor) -> torch.Tensor:
    """pixel None = normalised zero; else the uniform pixel value, normalised by hand."""
    if pixel is None:
        return torch.zeros_like(x)
    mean = torch.tensor(model.preprocessing.mean, dtype=torch.float64).view(1, -1, 1, 1)
    std = torch.tensor(model.preprocessing.std, dtype=torch.float64).view(1, -1, 1, 1)
    return ((pixel - mean) / std).float().expand_as(x).clone()  # rounded once (as vitlens does): see below


def riemann_ig(model, x, t, base, m):
    """Eq. 3 of Sundararajan et al. 2017 for one image x [1,C,H,W]: (x − x') · 1/m Σ_k ∇y(x' + k/m (x − x')),
    summed over channels. The m scaled images go through the model as one batch (in step order)."""
    scaled = torch.cat([base + k / m * (x - base) for k in range(1, m + 1)])
    total = input_grad(model, scaled, t).sum(dim=0, keepdim=True)
    return ((x - base) * total / m).sum(dim=1)


def naive_occlusion(model, x, t, window, stride, base):
    """Slide the window (border windows clipped as Captum does), mean logit drop over covering windows."""
    _, _, h, w = x.shape
    with torch.no_grad(), model.evaluating():
        fx = logit(model, x, t)
        acc = torch.zeros(h, w)
        cnt = torch.zeros(h, w)
        for i in range(math.ceil((h - window[0]) / stride[0]) + 1):
            for j in range(math.ceil((w - window[1]) / stride[1]) + 1):
                r, c = i * stride[0], j * stride[1]
                occ = x.clone()
                occ[:, :, r : r + window[0], c : c + window[1]] = base[:, :, r : r + window[0], c : c + window[1]]
                acc[r : r + window[0], c : c + window[1]] += float(fx - logit(model, occ, t))
                cnt[r : r + window[0], c : c + window[1]] += 1
    return acc / cnt


# ----------------------------------------------------------------------------------- saliency, IxG
@pytest.mark.parametrize("family", FAMILIES)
def test_saliency_and_input_x_gradient_equal_autograd(request, family):
    model = get_model(request, family)
    x = images(model)
    sal = vitlens.get_explainer("saliency", model).explain(x)
    ixg = vitlens.get_explainer("input_x_gradient", model).explain(x, target=torch.tensor([1, 3]))
    assert sal.target.tolist() == sal.logits.argmax(-1).tolist()
    assert sal.maps.shape == (2, *x.shape[-2:])
    for i in range(2):
        g = input_grad(model, x[i : i + 1], int(sal.target[i]))[0]
        assert close(sal.maps[i], g.abs().amax(dim=0), 1e-5)  # Simonyan: max over channels of |grad|
        g = input_grad(model, x[i : i + 1], [1, 3][i])[0]
        assert close(ixg.maps[i], (x[i] * g).sum(dim=0), 1e-5)


# ----------------------------------------------------------------------------------- integrated gradients
@pytest.mark.parametrize("family", ["hf_vit", "swin", "resnet50"])
@pytest.mark.parametrize("baseline,pixel", [("black", 0.0), ("zero", None), (0.5, 0.5)])
def test_integrated_gradients_equals_riemann_sum(request, family, baseline, pixel):
    model = get_model(request, family)
    x = images(model)
    m = 5
    exp = vitlens.get_explainer(
        "integrated_gradients", model, n_steps=m, baseline=baseline, method="riemann_right", internal_batch_size=None
    )
    base = pixel_baseline(model, pixel, x[:1])
    for i in range(2):
        # one image at a time, so that Captum's batch of scaled images is the reference's batch: gradients of
        # random-init ResNet-50 change by up to 0.2 % with the batch composition, and its IG map by 2 % when
        # the baseline moves by one float32 ulp (max-pool ties / ReLU kinks), so exact agreement needs both
        ref = riemann_ig(model, x[i : i + 1], 2, base, m)[0]
        assert close(exp(x[i : i + 1], target=2)[0], ref, 1e-5)


@pytest.mark.parametrize("family", ["hf_vit", "vit_registers", "hf_deit_distilled"])
def test_integrated_gradients_completeness(family):
    """Sundararajan et al. 2017, Prop. 1: Σ IG = y(x) − y(x'). Gauss-Legendre with 32 steps reaches
    1e-3 relative here (measured ~1e-6); the right Riemann sum's error shrinks about as 1/m."""
    model = zoo_model(family)
    x = images(model)
    res = vitlens.get_explainer("integrated_gradients", model, n_steps=32).explain(x)
    base = pixel_baseline(model, 0.0, x)
    with torch.no_grad(), model.evaluating():
        t = res.target[:, None]
        diff = model.forward(x).gather(1, t)[:, 0] - model.forward(base).gather(1, t)[:, 0]
    err = (res.maps.sum(dim=(1, 2)) - diff).abs()
    assert (err <= 1e-3 * diff.abs()).all(), (err, diff)
    errs = []
    for m in (8, 64):
        maps = vitlens.get_explainer("integrated_gradients", model, n_steps=m, method="riemann_right")(x)
        errs.append(float((maps.sum(dim=(1, 2)) - diff).abs().max()))
    assert errs[1] < errs[0] / 3


# ----------------------------------------------------------------------------------- smoothgrad
def test_smoothgrad_equals_naive_average_with_the_same_noise():
    model = zoo_model("hf_vit")
    x = images(model)
    n, level, seed = 5, 0.2, 7
    maps = vitlens.get_explainer("smoothgrad", model, n_samples=n, noise_level=level, seed=seed, batch_size=4)(
        x, target=4
    )
    g = torch.Generator().manual_seed(seed)
    std = torch.tensor(model.preprocessing.std).view(1, -1, 1, 1)
    noise = torch.randn((n, *x.shape[1:]), generator=g) * (level / std)  # σ = level × pixel range (1/std)
    for i in range(2):
        mean_grad = sum(input_grad(model, x[i : i + 1] + noise[k : k + 1], 4)[0] for k in range(n)) / n
        assert close(maps[i], mean_grad.abs().amax(dim=0), 1e-4)


def test_smoothgrad_is_seeded_and_leaves_the_global_rng_alone():
    model = zoo_model("hf_vit")
    x = images(model)
    state = torch.get_rng_state()
    a = vitlens.get_explainer("smoothgrad", model, n_samples=4, seed=1)(x)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)  # the global seed must not matter
    b = vitlens.get_explainer("smoothgrad", model, n_samples=4, seed=1)(x)
    c = vitlens.get_explainer("smoothgrad", model, n_samples=4, seed=2)(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # chunking the samples differently gives the same average
    d = vitlens.get_explainer("smoothgrad", model, n_samples=4, seed=1, batch_size=2)(x)
    assert close(d, a, 1e-5)
    # without noise SmoothGrad is the saliency map
    z = vitlens.get_explainer("smoothgrad", model, n_samples=2, noise_level=0.0)(x)
    assert close(z, vitlens.get_explainer("saliency", model)(x), 1e-6)


# ----------------------------------------------------------------------------------- occlusion
@pytest.mark.parametrize(
    "family,window,stride,baseline,pixel",
    [
        ("hf_vit", 16, 8, "zero", None),
        ("hf_vit", 24, 16, "black", 0.0),  # the last window is clipped at the border
        ("vit_registers", (8, 16), (8, 16), 0.25, 0.25),
        ("resnet50", 64, 48, "zero", None),
    ],
)
def test_occlusion_equals_naive_loop(request, family, window, stride, baseline, pixel):
    model = get_model(request, family)
    x = images(model)
    maps = vitlens.get_explainer("occlusion", model, window=window, stride=stride, baseline=baseline, batch_size=8)(
        x, target=torch.tensor([0, 3])
    )
    win = window if isinstance(window, tuple) else (window, window)
    st = stride if isinstance(stride, tuple) else (stride, stride)
    for i, t in enumerate([0, 3]):
        ref = naive_occlusion(model, x[i : i + 1], t, win, st, pixel_baseline(model, pixel, x[i : i + 1]))
        assert close(maps[i], ref, 1e-4), float((maps[i] - ref).abs().max())


def test_occlusion_default_window_is_one_patch(request):
    for family, expected in [("hf_vit", (16, 16)), ("vit_registers", (8, 8)), ("resnet50", (32, 32))]:
        model = get_model(request, family)
        exp = vitlens.get_explainer("occlusion", model)
        assert exp.geometry(model.preprocessing.input_size) == (expected, expected)


# ----------------------------------------------------------------------------------- contract on every family
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", PIXEL)
def test_contract_batch_equals_one_at_a_time(request, family, method):
    model = get_model(request, family)
    x = images(model)
    exp = vitlens.get_explainer(method, model, **CHEAP[method])
    res = exp.explain(x)
    maps = res.maps
    info = vitlens.explainer_info(method)
    assert info["resolution"] == "pixel" and info["class_specific"]
    assert maps.dtype == torch.float32 and maps.shape == (2, *x.shape[-2:])
    assert torch.isfinite(maps).all()
    if not info["signed"]:
        assert (maps >= 0).all()
    assert res.target.tolist() == res.logits.argmax(-1).tolist()
    for i in range(2):
        assert close(exp(x[i : i + 1])[0], maps[i], 1e-4), (method, family)


@pytest.mark.parametrize("method", PIXEL)
def test_class_specific(method):
    model = zoo_model("hf_vit")
    x = images(model)
    exp = vitlens.get_explainer(method, model, **CHEAP[method])
    a, b = exp(x, target=1), exp(x, target=5)
    assert not torch.allclose(a, b)
    assert exp.explain(x, target=[5, 2]).target.tolist() == [5, 2]


@pytest.mark.parametrize("method", PIXEL)
def test_frozen_model_and_model_left_as_found(method):
    model = zoo_model("hf_deit_distilled")
    x = images(model)
    exp = vitlens.get_explainer(method, model, **CHEAP[method])

    def hooks():  # transformers may keep output-capturing hooks of its own (installed by earlier tests)
        return [
            (name, tuple(m._forward_hooks), tuple(m._forward_pre_hooks), tuple(m._backward_hooks))
            for name, m in model.module.named_modules()
        ]

    before = hooks()
    ref = exp(x)
    params = list(model.module.parameters())
    model.module.train()
    try:
        for p in params:
            p.requires_grad_(False)
        frozen = exp(x)
        assert all(not p.requires_grad for p in params)
        assert model.module.training and all(m.training for m in model.module.modules())
    finally:
        for p in params:
            p.requires_grad_(True)
        model.module.eval()
    assert close(frozen, ref, 1e-5)
    assert all(p.grad is None for p in params)
    assert hooks() == before


# ----------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    "method,params,match",
    [
        ("integrated_gradients", {"n_steps": 0}, "n_steps"),
        ("integrated_gradients", {"n_steps": 2.5}, "n_steps"),
        ("integrated_gradients", {"n_steps": 1, "method": "riemann_right"}, "n_steps"),
        ("integrated_gradients", {"baseline": "grey"}, "baseline"),
        ("integrated_gradients", {"baseline": 1.5}, "baseline"),
        ("integrated_gradients", {"baseline": True}, "baseline"),
        ("integrated_gradients", {"method": "riemann_trapezoid"}, "method"),
        ("integrated_gradients", {"internal_batch_size": 0}, "internal_batch_size"),
        ("smoothgrad", {"n_samples": 0}, "n_samples"),
        ("smoothgrad", {"noise_level": -0.1}, "noise_level"),
        ("smoothgrad", {"noise_level": "high"}, "noise_level"),
        ("smoothgrad", {"seed": -1}, "seed"),
        ("smoothgrad", {"batch_size": 0}, "batch_size"),
        ("occlusion", {"window": 0}, "window"),
        ("occlusion", {"window": (8, 8, 8)}, "window"),
        ("occlusion", {"window": 8, "stride": 16}, "stride"),
        ("occlusion", {"baseline": "mean"}, "baseline"),
        ("saliency", {"abs": False}, "no parameter"),
    ],
)
def test_bad_parameters_raise(method, params, match):
    with pytest.raises(vitlens.ExplainerError, match=match):
        vitlens.get_explainer(method, zoo_model("hf_vit"), **params)


def test_bad_geometry_raises_at_explain_time():
    model = zoo_model("hf_vit")  # 64x64 input
    x = images_for(model, batch=1)
    with pytest.raises(vitlens.ExplainerError, match="larger than"):
        vitlens.get_explainer("occlusion", model, window=80)(x)
    with pytest.raises(vitlens.ExplainerError, match="stride"):
        vitlens.get_explainer("occlusion", model, stride=32)(x)  # default window: one 16 px patch
