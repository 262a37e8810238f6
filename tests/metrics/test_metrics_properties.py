"""Properties every metric must have: registry and validation, documented values for degenerate inputs,
determinism, batch == one-at-a-time, and that faithfulness metrics measure what they should."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from tests.conftest import images_for, zoo_model

import vitlens
from vitlens.errors import MetricError, VitlensError
from vitlens.metrics import MetricWarning, metric_class

ALL = vitlens.list_metrics()
MODEL_METRICS = ["deletion", "insertion", "perturbation", "randomisation_sanity"]
REGION_METRICS = [n for n in ALL if "region" in metric_class(n).needs]
# metrics that rank pixels or patches: a constant map ranks nothing -> NaN
RANKING = [
    "deletion",
    "insertion",
    "perturbation",
    "pointing_game",
    "iou_top_k",
    "top_k_intersection",
    "relevance_rank",
    "otsu_segmentation",
    "mean_threshold_segmentation",
    "randomisation_sanity",
]
MASS = ["energy_pointing_game", "relevance_mass", "faf_baf"]
# cheap parameters for tests
CHEAP = {
    "insertion": {"steps": 5},
    "deletion": {"steps": 5},
    "perturbation": {"fractions": (0.3, 0.6)},
    "top_k_intersection": {"k": 200},
}


def test_every_metric_is_classified():
    assert set(ALL) == set(RANKING) | set(MASS) | {"sparseness"}
    assert set(ALL) >= {
        "insertion",
        "deletion",
        "perturbation",
        "pointing_game",
        "energy_pointing_game",
        "iou_top_k",
        "otsu_segmentation",
        "mean_threshold_segmentation",
        "faf_baf",
        "relevance_mass",
        "sparseness",
        "randomisation_sanity",
    }


def _setup(batch: int = 3):
    model = zoo_model("test_vit")  # 160 px, 10x10 patch grid
    images = images_for(model, batch)
    g = torch.Generator().manual_seed(11)
    maps = torch.rand(batch, 10, 10, generator=g)
    masks = torch.zeros(batch, 160, 160, dtype=torch.bool)
    for i in range(batch):
        masks[i, 20 + 10 * i : 90 + 10 * i, 30 : 100 + 5 * i] = True
    return model, images, maps, masks


def _call(name, model, images, maps, masks, **kw):
    return vitlens.get_metric(name, **{**CHEAP.get(name, {}), **kw})(model, images, maps, masks=masks)


# ------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", ALL)
def test_info_states_citation_direction_and_needs(name):
    info = vitlens.metric_info(name)
    assert info["citation"] and isinstance(info["higher_is_better"], bool)
    doc = metric_class(name).__doc__
    assert "better" in doc  # the score direction
    assert re.search(r"\b(19|20)\d\d\b", doc)  # a (year) citation
    assert set(info["needs"]) <= {"model", "region"}


def test_unknown_metric_and_parameters_list_valid_ones():
    with pytest.raises(VitlensError, match=r"registered: .*deletion"):
        vitlens.get_metric("nope")
    with pytest.raises(VitlensError, match=r"its parameters: .*steps"):
        vitlens.get_metric("deletion", step=3)
    with pytest.raises(VitlensError, match="none"):
        vitlens.get_metric("sparseness", k=3)


@pytest.mark.parametrize(
    "name,params",
    [
        ("deletion", {"baseline": "black"}),
        ("deletion", {"steps": 0}),
        ("insertion", {"kernel_size": 4}),
        ("insertion", {"sigma": -1.0}),
        ("insertion", {"patch": (16,)}),
        ("perturbation", {"order": "up"}),
        ("perturbation", {"fractions": (0.5, 0.2)}),
        ("perturbation", {"fractions": (0.0, 0.5)}),
        ("iou_top_k", {"k": 0}),
        ("iou_top_k", {"k": 150}),
        ("top_k_intersection", {"k": 2.5}),
        ("pointing_game", {"tolerance": -1}),
        ("randomisation_sanity", {"explainer": "nope"}),
        ("randomisation_sanity", {"explainer_params": {"bogus": 1}}),
    ],
)
def test_bad_parameter_values_raise(name, params):
    with pytest.raises(MetricError):
        vitlens.get_metric(name, **params)


def test_direction_of_perturbation_follows_order():
    assert vitlens.get_metric("perturbation", order="positive").higher_is_better is False
    assert vitlens.get_metric("perturbation", order="negative").higher_is_better is True
    assert vitlens.get_metric("deletion").higher_is_better is False
    assert vitlens.get_metric("insertion").higher_is_better is True


# ----------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("name", ALL)
def test_bad_shapes_raise(name):
    model, images, maps, masks = _setup(2)
    metric = vitlens.get_metric(name, **CHEAP.get(name, {}))
    with pytest.raises(VitlensError, match="maps"):
        metric(model, images, maps[0], masks=masks)  # [h, w]
    with pytest.raises(VitlensError, match="2 images"):
        metric(model, images, maps[:1], masks=masks)  # batch mismatch
    with pytest.raises(VitlensError, match=r"\[B,C,H,W\]"):
        metric(model, images[0], maps, masks=masks)
    if name in REGION_METRICS:
        with pytest.raises(VitlensError, match="masks"):
            metric(model, images, maps, masks=masks[:, :80])  # not at image resolution
        with pytest.raises(VitlensError, match="needs ground truth"):
            metric(model, images, maps)
        with pytest.raises(VitlensError, match="not inside"):
            metric(model, images, maps, boxes=torch.tensor([[0, 0, 200, 10], [0, 0, 5, 5]]))
        with pytest.raises(VitlensError, match=r"\[B,4\]"):
            metric(model, images, maps, boxes=torch.tensor([[0, 0, 5, 5]]))
        with pytest.raises(VitlensError, match="integer"):
            metric(model, images, maps, boxes=torch.zeros(2, 4))
    if name in MODEL_METRICS:
        with pytest.raises(VitlensError, match="model"):
            metric(None, images, maps)
        with pytest.raises(VitlensError, match="target"):
            metric(model, images, maps, target=10_000)


def test_steps_and_patch_must_fit_the_image():
    model, images, maps, _ = _setup(1)
    with pytest.raises(MetricError, match="steps=101"):
        vitlens.get_metric("deletion", steps=101)(model, images, maps)
    with pytest.raises(MetricError, match="larger than"):
        vitlens.get_metric("deletion", patch=200)(model, images, maps)
    with pytest.raises(MetricError, match="k=30000"):
        vitlens.get_metric("top_k_intersection", k=30000)(None, images, maps, masks=torch.ones(1, 160, 160, dtype=bool))


# -------------------------------------------------------------------------------- degenerate inputs
def _special(kind: str, maps: torch.Tensor) -> torch.Tensor:
    out = maps.clone()
    out[1] = {"nan": math.nan, "constant": 0.7, "zero": 0.0}[kind]
    if kind == "nan":
        out[1] = maps[1]
        out[1, 3, 4] = math.nan
    return out


@pytest.mark.parametrize("kind", ["nan", "constant", "zero"])
@pytest.mark.parametrize("name", ALL)
def test_degenerate_maps_give_documented_values(name, kind):
    model, images, maps, masks = _setup(2)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = _call(name, model, images, _special(kind, maps), masks)
    ours = [w for w in rec if issubclass(w.category, MetricWarning)]
    assert math.isfinite(res.scores[0].item())  # the other image is unaffected
    nan_expected = kind in ("nan", "zero") or name in RANKING
    if nan_expected:
        assert math.isnan(res.scores[1].item())
        assert len(ours) == 1 and "[1]" in str(ours[0].message)
        if res.curves is not None:
            assert torch.isnan(res.curves[1]).all() and not torch.isnan(res.curves[0]).any()
        for v in res.extra.values():
            assert math.isnan(v[1].item())
    else:
        assert not ours
        if name == "sparseness":
            assert res.scores[1].item() == pytest.approx(0.0, abs=1e-9)
        elif name == "faf_baf":  # a constant map spreads its mass like the area: FAF = mask area fraction
            assert res.scores[1].item() == pytest.approx(masks[1].double().mean().item())
        else:
            assert res.scores[1].item() == pytest.approx(masks[1].double().mean().item(), rel=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_empty_masks_give_nan_and_one_warning(name):
    model, images, maps, masks = _setup(2)
    masks[1] = False
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = _call(name, model, images, maps, masks)
    ours = [w for w in rec if issubclass(w.category, MetricWarning)]
    assert math.isfinite(res.scores[0].item())
    if name in REGION_METRICS:
        assert math.isnan(res.scores[1].item()) and len(ours) == 1 and "empty" in str(ours[0].message)
        assert math.isnan(res.mean()) is False and res.mean() == pytest.approx(res.scores[0].item())
    else:
        assert math.isfinite(res.scores[1].item()) and not ours


# ---------------------------------------------------------------------------------------- consistency
@pytest.mark.parametrize("name", ALL)
def test_batch_equals_one_at_a_time_and_is_deterministic(name):
    model, images, maps, masks = _setup(3)
    batch = _call(name, model, images, maps, masks)
    again = _call(name, model, images, maps, masks)
    torch.testing.assert_close(batch.scores, again.scores, rtol=0, atol=0)  # same inputs, same scores
    assert batch.scores.dtype == torch.float64 and batch.scores.shape == (3,)
    for i in range(3):
        one = _call(name, model, images[i : i + 1], maps[i : i + 1], masks[i : i + 1])
        torch.testing.assert_close(one.scores, batch.scores[i : i + 1], rtol=1e-5, atol=1e-7)
        if batch.curves is not None:
            torch.testing.assert_close(one.curves, batch.curves[i : i + 1], rtol=1e-5, atol=1e-7)
        for k, v in batch.extra.items():
            torch.testing.assert_close(one.extra[k], v[i : i + 1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["insertion", "deletion", "perturbation"])
def test_chunk_size_does_not_change_results(name):
    model, images, maps, masks = _setup(2)
    a = _call(name, model, images, maps, masks, batch_size=1)
    b = _call(name, model, images, maps, masks, batch_size=64)
    torch.testing.assert_close(a.curves, b.curves, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", REGION_METRICS)
def test_box_of_minus_ones_is_an_empty_region(name):
    _, images, maps, _ = _setup(2)
    boxes = torch.tensor([[10, 20, 90, 70], [-1, -1, -1, -1]])
    with pytest.warns(MetricWarning, match="empty"):
        res = vitlens.get_metric(name, **CHEAP.get(name, {}))(None, images, maps, boxes=boxes)
    assert math.isfinite(res.scores[0].item()) and math.isnan(res.scores[1].item())


@pytest.mark.parametrize("name", REGION_METRICS)
def test_boxes_equal_their_masks(name):
    _, images, maps, _ = _setup(2)
    boxes = torch.tensor([[10, 20, 90, 70], [50, 0, 160, 40]])
    masks = torch.zeros(2, 160, 160, dtype=torch.bool)
    masks[0, 20:70, 10:90] = True
    masks[1, 0:40, 50:160] = True
    metric = vitlens.get_metric(name, **CHEAP.get(name, {}))
    by_box = metric(None, images, maps, boxes=boxes)
    by_mask = metric(None, images, maps, masks=masks)
    torch.testing.assert_close(by_box.scores, by_mask.scores)


def test_faf_plus_baf_is_one():
    g = torch.Generator().manual_seed(12)
    maps = torch.rand(4, 7, 7, generator=g)
    masks = torch.rand(4, 112, 112, generator=g) > 0.7
    res = vitlens.get_metric("faf_baf")(None, torch.zeros(4, 3, 112, 112), maps, masks=masks)
    torch.testing.assert_close(res.extra["faf"] + res.extra["baf"], torch.ones(4, dtype=torch.float64))


def test_localisation_scores_are_in_range():
    _, images, maps, masks = _setup(3)
    for name in [*REGION_METRICS, "sparseness"]:
        s = _call(name, None, images, maps, masks).scores
        assert ((s >= 0) & (s <= 1)).all(), name


# --------------------------------------------------------------------------- measures what it should
def _cells(model: vitlens.Model, n: int):
    from vitlens.data.synthetic import get_benchmark

    bench = get_benchmark("cells")
    samples = [bench.sample(i, 0, "test") for i in range(n)]
    img = torch.tensor(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(model.preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.preprocessing.std).view(1, 3, 1, 1)
    masks = torch.tensor(np.stack([s.mask for s in samples]))
    return (img - mean) / std, masks


def test_maps_on_the_evidence_are_faithful_on_cells_vit():
    """The generator's evidence mask as a map: deleting it first destroys the prediction (low deletion AUC),
    revealing it first restores it (high insertion AUC); its inverse does the opposite. Insertion uses the
    ``zero`` baseline: this model still recognises a blurred cell, so ``blur`` saturates insertion."""
    model = vitlens.load_model("builtin:cells_vit")
    images, masks = _cells(model, 3)
    good, bad = masks.float(), 1.0 - masks.float()
    deletion = vitlens.get_metric("deletion", steps=14)
    insertion = vitlens.get_metric("insertion", steps=14, baseline="zero")
    d_good, d_bad = deletion(model, images, good).scores, deletion(model, images, bad).scores
    i_good, i_bad = insertion(model, images, good).scores, insertion(model, images, bad).scores
    assert (d_good < d_bad).all() and (i_good > i_bad).all()
    assert d_good.mean() < 0.3 < 0.7 < d_bad.mean()
    # and the localisation metrics score the mask as a perfect map
    for name in ("pointing_game", "relevance_mass", "energy_pointing_game", "otsu_segmentation"):
        s = vitlens.get_metric(name)(None, images, good, masks=masks).scores
        torch.testing.assert_close(s, torch.ones(3, dtype=torch.float64), msg=name)


def test_cnn_uses_16_pixel_patches():
    model = vitlens.load_model("builtin:cells_cnn")
    images, masks = _cells(model, 2)
    res = vitlens.get_metric("deletion", steps=7)(model, images, masks.float())
    assert res.curves.shape == (2, 8)
    res = vitlens.get_metric("deletion", steps=49, batch_size=200)(model, images, masks.float())
    assert res.x.tolist() == [i / 49 for i in range(50)]  # 112 / 16 = 7: a 7x7 grid
