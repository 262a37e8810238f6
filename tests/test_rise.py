"""RISE (Petsiuk et al. 2018) against a naive per-mask loop, and its mask generator against an independent
(scikit-image) upsampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vitlens
from vitlens.explainers.sampling import rise_grids, rise_masks, upsample_masks

from .conftest import images_for, zoo_model


def naive_rise(model: vitlens.Model, x: torch.Tensor, t: int, masks: torch.Tensor, p: float) -> torch.Tensor:
    """S = 1/(K p) Σ_i softmax(f(x ⊙ M_i))_t · M_i, one mask at a time."""
    sal = torch.zeros(x.shape[-2:])
    with torch.no_grad(), model.evaluating():
        for m in masks:
            prob = model.forward(x * m).softmax(dim=-1)[0, t]
            sal += prob * m
    return sal / (len(masks) * p)


@pytest.mark.parametrize("family", ["hf_vit", "vit_registers", "swin"])
def test_rise_equals_naive_per_mask_loop(request, family):
    model = request.getfixturevalue(family) if family == "swin" else zoo_model(family)
    x = images_for(model, batch=3)
    exp = vitlens.get_explainer("rise", model, n_masks=10, grid_size=4, p=0.3, batch_size=7, seed=3)
    res = exp.explain(x, target=torch.tensor([1, 4, 1]))
    masks = exp.masks(tuple(x.shape[-2:]))
    assert masks.shape == (10, *x.shape[-2:])
    for i, t in enumerate([1, 4, 1]):
        ref = naive_rise(model, x[i : i + 1], t, masks, 0.3)
        assert torch.allclose(res.maps[i], ref, rtol=1e-5, atol=1e-7), float((res.maps[i] - ref).abs().max())


def test_rise_masks_match_scikit_image_upsampling():
    """Each mask = bilinear resize of the s×s grid to (s+1)·C, cropped at the shift (authors' generate_masks).
    skimage with mode='edge' is the same interpolation as torch's (half-pixel centres, clamped edges); the
    authors' mode='reflect' differs only within half a grid cell of the up-sized border."""
    transform = pytest.importorskip("skimage.transform")
    hw, s = (50, 37), 5
    grids, shifts = rise_grids(6, s, 0.5, hw, seed=11)
    masks = upsample_masks(grids, shifts, hw)
    ch, cw = math.ceil(hw[0] / s), math.ceil(hw[1] / s)
    assert int(shifts[:, 0].max()) < ch and int(shifts[:, 1].max()) < cw
    for k in range(6):
        for mode, tol in (("edge", 1e-5), ("reflect", None)):
            up = transform.resize(
                grids[k].numpy().astype(np.float64),
                ((s + 1) * ch, (s + 1) * cw),
                order=1,
                mode=mode,
                anti_aliasing=False,
            )
            y, x = int(shifts[k, 0]), int(shifts[k, 1])
            ref = torch.from_numpy(up[y : y + hw[0], x : x + hw[1]]).float()
            if tol is not None:
                assert torch.allclose(masks[k], ref, atol=tol)
            else:  # the authors' mirror padding: equal away from the up-sized mask's border
                hy, hx = math.ceil((s + 1) * ch / s / 2), math.ceil((s + 1) * cw / s / 2)
                inner = (slice(max(0, hy - y), (s + 1) * ch - hy - y), slice(max(0, hx - x), (s + 1) * cw - hx - x))
                assert torch.allclose(masks[k][inner], ref[inner], atol=1e-5)


def test_rise_masks_are_seeded_bounded_and_keep_a_fraction_p():
    state = torch.get_rng_state()
    a = rise_masks(400, 7, 0.3, (32, 32), seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, rise_masks(400, 7, 0.3, (32, 32), seed=5))
    assert torch.equal(a[100:130], rise_masks(400, 7, 0.3, (32, 32), seed=5, start=100, stop=130))
    assert not torch.equal(a, rise_masks(400, 7, 0.3, (32, 32), seed=6))
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # E[M] = p (bilinear interpolation of Bernoulli(p) cells); 400 masks × 49 cells: std of the mean ≈ 0.003
    assert abs(float(a.mean()) - 0.3) < 0.02


def test_rise_is_deterministic_and_independent_of_the_batch_size():
    model = zoo_model("hf_vit")
    x = images_for(model, batch=3)
    state = torch.get_rng_state()
    a = vitlens.get_explainer("rise", model, n_masks=9, batch_size=64)(x)
    assert torch.equal(torch.get_rng_state(), state)
    for bs in (1, 2, 5):  # chunks that split a mask's images over two forwards
        b = vitlens.get_explainer("rise", model, n_masks=9, batch_size=bs)(x)
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(a, vitlens.get_explainer("rise", model, n_masks=9, seed=1)(x))
    assert (a >= 0).all()


def test_rise_with_p_one_is_the_class_probability():
    """With p = 1 every mask keeps the whole image (all ones), so S = K·P_c(x)·1 / (K·1) = P_c(x) everywhere."""
    model = zoo_model("hf_vit")
    x = torch.zeros(1, 3, 64, 64)
    exp = vitlens.get_explainer("rise", model, n_masks=5, p=1.0)
    res = exp.explain(x, target=2)
    prob = res.logits.softmax(-1)[0, 2]
    assert torch.allclose(res.maps[0], prob.expand(64, 64), rtol=1e-5)


@pytest.mark.parametrize(
    "params,match",
    [
        ({"n_masks": 0}, "n_masks"),
        ({"grid_size": 0}, "grid_size"),
        ({"p": 0.0}, "p="),
        ({"p": 1.5}, "p="),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_rise_bad_parameters(params, match):
    with pytest.raises(vitlens.ExplainerError, match=match):
        vitlens.get_explainer("rise", zoo_model("hf_vit"), **params)


def test_rise_grid_larger_than_image():
    model = zoo_model("hf_vit")
    with pytest.raises(vitlens.ExplainerError, match="grid_size"):
        vitlens.get_explainer("rise", model, grid_size=65)(images_for(model, batch=1))
