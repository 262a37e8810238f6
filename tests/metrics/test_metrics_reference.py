"""Metrics against independent references: Quantus on identical inputs, naive per-image per-step loops,
scikit-image's Otsu threshold and torchvision's Gaussian blur."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.conftest import images_for, zoo_model

import vitlens
from vitlens.maps import minmax
from vitlens.metrics import otsu_threshold
from vitlens.metrics.faithfulness import gaussian_blur


# --------------------------------------------------------------------------------------------- Quantus
def _localisation_inputs(b: int = 5, h: int = 48, w: int = 40, seed: int = 0):
    """Pixel-resolution, tie-free, non-negative maps (upsampling is then the identity) and blob masks."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, h, w, generator=g)
    maps = torch.rand(b, h, w, generator=g, dtype=torch.float64).float() ** 2
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    cy = torch.randint(5, h - 5, (b, 1, 1), generator=g)
    cx = torch.randint(5, w - 5, (b, 1, 1), generator=g)
    r = torch.randint(4, 12, (b, 1, 1), generator=g)
    masks = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    # make the maximum of half of the maps fall inside the mask, so that hits and misses both occur
    for i in range(0, b, 2):
        maps[i][masks[i]] += 0.5 * torch.rand(int(masks[i].sum()), generator=g)
    assert all(len(torch.unique(m)) == m.numel() for m in maps)
    return images, maps, masks


def _quantus(metric, images, maps, masks):
    return np.asarray(
        metric(
            model=None,
            x_batch=images.numpy(),
            y_batch=np.zeros(len(images), dtype=int),
            a_batch=maps[:, None].numpy().copy(),
            s_batch=masks[:, None].numpy().astype(float),
            channel_first=True,
            explain_func=None,
            explain_func_kwargs=None,
            model_predict_kwargs=None,
            softmax=None,
        ),
        dtype=np.float64,
    )


@pytest.mark.parametrize(
    "ours,params,theirs,their_params",
    [
        # Quantus' pointing game has no tolerance and counts any tied maximum: tolerance=0 on tie-free maps
        ("pointing_game", {"tolerance": 0}, "PointingGame", {}),
        ("relevance_mass", {}, "RelevanceMassAccuracy", {}),
        ("relevance_rank", {}, "RelevanceRankAccuracy", {}),
        ("top_k_intersection", {"k": 100}, "TopKIntersection", {"k": 100}),
        ("top_k_intersection", {"k": 1000}, "TopKIntersection", {"k": 1000}),
        # Quantus adds 1e-7 to every value before the Gini index; vitlens does not (atol below)
        ("sparseness", {}, "Sparseness", {"abs": True}),
    ],
)
def test_localisation_equals_quantus(ours, params, theirs, their_params):
    quantus = pytest.importorskip("quantus")
    images, maps, masks = _localisation_inputs()
    kw = {"abs": False, "normalise": False, "disable_warnings": True, **their_params}
    expected = _quantus(getattr(quantus, theirs)(**kw), images, maps, masks)
    got = vitlens.get_metric(ours, **params)(None, images, maps, masks=masks).scores.numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    if ours == "pointing_game":
        assert 0 < got.sum() < len(got)  # both hits and misses were compared


def test_iou_top_k_intersection_equals_quantus_top_k():
    """iou_top_k's intersection count over k pixels is Quantus' TopKIntersection with the same k."""
    quantus = pytest.importorskip("quantus")
    images, maps, masks = _localisation_inputs()
    h, w = maps.shape[-2:]
    res = vitlens.get_metric("iou_top_k", k=10.0)(None, images, maps, masks=masks)
    k = round(0.1 * h * w)
    tki = _quantus(
        quantus.TopKIntersection(k=k, abs=False, normalise=False, disable_warnings=True), images, maps, masks
    )
    np.testing.assert_allclose(res.extra["intersection"].numpy() / k, tki, atol=1e-12)


def test_top_k_mask_equals_stable_full_sort():
    from vitlens.metrics.base import descending_ranks, top_k_mask

    g = torch.Generator().manual_seed(13)
    values = torch.randint(0, 5, (6, 300), generator=g).float()  # many ties at every threshold
    for k in (1, 7, 150, 300):
        assert torch.equal(top_k_mask(values, k), descending_ranks(values) < k)
    ks = torch.tensor([0, 1, 2, 50, 299, 300])
    assert torch.equal(top_k_mask(values, ks), descending_ranks(values) < ks[:, None])


# ------------------------------------------------------------------------------------------------ Otsu
def test_batched_otsu_equals_skimage():
    filters = pytest.importorskip("skimage.filters")
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(6, 14, 14, generator=g) ** 3
    up = minmax(F.interpolate(maps[:, None], size=(112, 112), mode="bilinear")[:, 0]).reshape(6, -1)
    ours = otsu_threshold(up)
    theirs = torch.tensor([filters.threshold_otsu(u.double().numpy(), nbins=256) for u in up], dtype=torch.float64)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)


def test_batched_otsu_equals_naive_loop():
    """Exhaustive search of the between-class variance over the 256-bin histogram, one image at a time."""
    g = torch.Generator().manual_seed(4)
    vals = torch.rand(3, 500, generator=g, dtype=torch.float64) ** 2
    ours = otsu_threshold(vals)
    for i, v in enumerate(vals.numpy()):
        lo, hi = v.min(), v.max()
        hist, edges = np.histogram(v, bins=256, range=(lo, hi))
        centres = (edges[:-1] + edges[1:]) / 2
        best, thr = -1.0, None
        for k in range(255):
            w0, w1 = hist[: k + 1].sum(), hist[k + 1 :].sum()
            if w0 == 0 or w1 == 0:
                continue
            m0 = (hist[: k + 1] * centres[: k + 1]).sum() / w0
            m1 = (hist[k + 1 :] * centres[k + 1 :]).sum() / w1
            var = w0 * w1 * (m0 - m1) ** 2
            if var > best + 1e-12:
                best, thr = var, centres[k]
        assert abs(float(ours[i]) - thr) < 1e-12


# ------------------------------------------------------------------------------ insertion / deletion
def _naive_curve(model, images, maps, *, insertion, baseline, steps, patch, sigma=5.0, ksize=11):
    """One forward per perturbed image: per image, per step, patches by a Python sort with the index as
    tie-breaker; blur by torchvision."""
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    b, _, h, w = images.shape
    nh, nw = h // patch, w // patch
    p = nh * nw
    up = F.interpolate(maps[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    on_grid = tuple(maps.shape[-2:]) == (nh, nw)
    scores = []
    for i in range(b):
        x = images[i]
        if baseline == "blur":
            base = tv_blur(x[None], [ksize, ksize], [sigma, sigma])[0]
        elif baseline == "mean":
            base = x.mean(dim=(1, 2), keepdim=True).expand_as(x)
        else:
            base = torch.zeros_like(x)
        rel = [
            float(maps[i, r, c])
            if on_grid
            else float(up[i, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch].double().mean())
            for r in range(nh)
            for c in range(nw)
        ]
        order = sorted(range(p), key=lambda j: (-rel[j], j))
        with torch.no_grad():
            target = int(model(x[None]).argmax())
        probs = []
        for s in range(steps + 1):
            chosen = order[: (s * p) // steps]
            img = base.clone() if insertion else x.clone()
            for j in chosen:
                r, c = divmod(j, nw)
                sl = (slice(None), slice(r * patch, (r + 1) * patch), slice(c * patch, (c + 1) * patch))
                img[sl] = x[sl] if insertion else base[sl]
            with torch.no_grad():
                probs.append(float(torch.softmax(model(img[None]), dim=-1)[0, target]))
        xs = np.array([(s * p) // steps for s in range(steps + 1)]) / p
        scores.append(np.trapezoid(probs, xs))
    return np.array(scores)


@pytest.mark.parametrize("name", ["insertion", "deletion"])
@pytest.mark.parametrize("baseline,steps,grid", [("blur", 20, 10), ("mean", 100, 13), ("zero", 7, 10)])
def test_insertion_deletion_equal_naive_loop(name, baseline, steps, grid):
    """On the patch grid (10x10: the map's own values rank the patches) and off it (13x13: patch means of
    the bilinearly upsampled map)."""
    model = zoo_model("test_vit")  # 160 px, patch 16: a 10x10 grid
    images = images_for(model, 2)
    maps = torch.rand(2, grid, grid, generator=torch.Generator().manual_seed(5))
    metric = vitlens.get_metric(name, baseline=baseline, steps=steps, batch_size=48)
    got = metric(model, images, maps)
    expected = _naive_curve(
        model, images, maps, insertion=name == "insertion", baseline=baseline, steps=steps, patch=16
    )
    np.testing.assert_allclose(got.scores.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert got.curves.shape == (2, steps + 1) and got.x[0] == 0 and got.x[-1] == 1


def test_deletion_equals_naive_loop_on_deit_tiny():
    model = zoo_model("deit_tiny")
    images = images_for(model, 1)
    maps = torch.rand(1, 224, 224, generator=torch.Generator().manual_seed(6))  # pixel-level map
    got = vitlens.get_metric("deletion", steps=14, baseline="blur")(model, images, maps)
    expected = _naive_curve(model, images, maps, insertion=False, baseline="blur", steps=14, patch=16)
    np.testing.assert_allclose(got.scores.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_blur_equals_torchvision():
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    x = torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(gaussian_blur(x, 2.5, 7), tv_blur(x, [7, 7], [2.5, 2.5]), rtol=1e-5, atol=1e-5)


def test_perturbation_equals_naive_loop():
    """Chefer et al.'s loop: pixels by relevance (numpy stable argsort), set to black, one forward each."""
    model = zoo_model("test_vit")
    images = images_for(model, 2)
    maps = torch.rand(2, 10, 10, generator=torch.Generator().manual_seed(8))
    h, w = images.shape[-2:]
    mean = torch.tensor(model.preprocessing.mean).view(3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(3, 1, 1)
    up = F.interpolate(maps[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0].reshape(2, -1)
    fractions = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    for order in ("positive", "negative"):
        got = vitlens.get_metric("perturbation", order=order)(model, images, maps)
        for i in range(2):
            vis = up[i].numpy() if order == "positive" else -up[i].numpy()
            ranked = np.argsort(-vis, kind="stable")
            with torch.no_grad():
                target = int(model(images[i : i + 1]).argmax())
            acc = [1.0]
            for f in fractions:
                raw = (images[i] * std + mean).reshape(3, -1).clone()  # un-normalise, as the paper's data
                raw[:, torch.from_numpy(ranked[: int(h * w * f)].copy())] = 0
                x = ((raw.reshape(3, h, w) - mean) / std)[None]
                with torch.no_grad():
                    acc.append(float(model(x).argmax() == target))
            np.testing.assert_allclose(got.curves[i].numpy(), acc, atol=0)
            assert abs(float(got.scores[i]) - np.trapezoid(acc, [0.0, *fractions])) < 1e-12


def test_quantus_selectivity_matches_deletion_curve():
    """Quantus' Selectivity (Montavon, Samek, Müller 2018) is deletion of patches, most relevant first, one
    forward per step: with a zero baseline (our "zero") on the 16-px patch grid, its curve is ours after the
    first point (Quantus omits the unperturbed image)."""
    quantus = pytest.importorskip("quantus")
    model = zoo_model("test_vit")
    images = images_for(model, 2)
    # one value per patch (no ties), expanded to pixels so that both rank the same patches
    maps = torch.randperm(100, generator=torch.Generator().manual_seed(9)).float().view(1, 10, 10).repeat(2, 1, 1)
    maps[1] = maps[1].flip(0)
    pixel_maps = maps.repeat_interleave(16, 1).repeat_interleave(16, 2)
    with torch.no_grad():
        y = model(images).argmax(-1).numpy()
    sel = quantus.Selectivity(patch_size=16, perturb_baseline=0.0, abs=False, normalise=False, disable_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel(
            model=model.module.eval(),
            x_batch=images.numpy(),
            y_batch=y,
            a_batch=pixel_maps[:, None].numpy(),
            s_batch=None,
            channel_first=True,
            explain_func=None,
            explain_func_kwargs=None,
            model_predict_kwargs=None,
            softmax=True,
            device="cpu",
        )
    theirs = np.asarray(sel.evaluation_scores, dtype=np.float64)  # [B, 100]: after each removed patch
    ours = vitlens.get_metric("deletion", baseline="zero")(model, images, pixel_maps)
    np.testing.assert_allclose(ours.curves[:, 1:].numpy(), theirs, rtol=1e-4, atol=1e-6)
