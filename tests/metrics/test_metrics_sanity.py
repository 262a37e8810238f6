"""Cascading randomisation (Adebayo et al. 2018): the user's model is untouched, the cascade covers every
parameter, and the batched Spearman helper equals scipy's."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.conftest import images_for, zoo_model

import vitlens
from vitlens.metrics import rankdata, spearman
from vitlens.metrics.sanity import cascade


# ---------------------------------------------------------------------------------------- Spearman
def test_rankdata_and_spearman_equal_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 6, (5, 40), generator=g).float()  # many ties
    b = a + torch.randint(-3, 4, (5, 40), generator=g).float()
    ours_r = rankdata(a)
    for i in range(5):
        torch.testing.assert_close(ours_r[i], torch.from_numpy(stats.rankdata(a[i].numpy())).double())
    expected = torch.tensor([stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(5)])
    torch.testing.assert_close(spearman(a, b), expected.double(), rtol=1e-12, atol=1e-12)
    c = torch.rand(5, 40, generator=g)
    torch.testing.assert_close(spearman(c, -c), -torch.ones(5, dtype=torch.float64))


def test_spearman_of_a_constant_row_is_nan():
    r = spearman(torch.tensor([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]]))
    assert torch.isnan(r[0]) and r[1].item() == pytest.approx(-0.5)


# ----------------------------------------------------------------------------------------- cascade
def _step_params(model):
    return [[p for _, m in mods for p in m.parameters(recurse=False)] for _, mods in cascade(model)]


@pytest.mark.parametrize("which", ["test_vit", "hf_deit_distilled", "cells_cnn", "swin"])
def test_cascade_covers_every_parameter_once(which, swin):
    model = {"cells_cnn": lambda: vitlens.load_model("builtin:cells_cnn"), "swin": lambda: swin}.get(
        which, lambda: zoo_model(which)
    )()
    steps = cascade(model)
    labels = [label for label, _ in steps]
    assert labels[0] == "head" and labels[-1] == "stem" and len(labels) >= 4
    covered = [id(p) for ps in _step_params(model) for p in ps]
    assert len(covered) == len(set(covered))
    assert set(covered) == {id(p) for p in model.module.parameters()}


def test_vit_cascade_order_is_head_then_blocks_last_to_first():
    labels = [label for label, _ in cascade(zoo_model("test_vit"))]
    assert labels == ["head", "blocks.5", "blocks.4", "blocks.3", "blocks.2", "blocks.1", "blocks.0", "stem"]
    head = dict(cascade(zoo_model("test_vit"))[0][1])
    assert set(head) == {"norm", "head"}


# ------------------------------------------------------------------------------------------- metric
def test_user_model_is_unchanged():
    model = zoo_model("test_vit")
    module = model.module
    before = copy.deepcopy(module.state_dict())
    flags = [(m.training, m) for m in module.modules()]
    rng = torch.get_rng_state()
    images = images_for(model, 2)
    res = vitlens.get_metric("randomisation_sanity", explainer="gradcam")(model, images, None)
    assert model.module is module
    after = module.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(m.training == t for t, m in flags)
    assert torch.equal(torch.get_rng_state(), rng)  # seeded re-initialisation leaves the global RNG alone
    assert res.curves.shape == (2, 8) and res.x_labels[0] == "head"
    torch.testing.assert_close(res.scores, res.curves.mean(dim=1))
    torch.testing.assert_close(res.extra["last"], res.curves[:, -1])


def test_unrandomised_point_is_one_and_optional():
    model = zoo_model("test_vit")
    images = images_for(model, 2)
    res = vitlens.get_metric("randomisation_sanity", explainer="gradcam", include_original=True)(model, images, None)
    assert res.x_labels[0] == "original" and res.curves.shape == (2, 9)
    torch.testing.assert_close(res.curves[:, 0], torch.ones(2, dtype=torch.float64))


def test_method_independent_of_the_head_keeps_correlation_one_at_the_head_step():
    """Rollout reads only the attention of the blocks: randomising the head (and final norm) leaves its maps
    unchanged (correlation 1), whereas Grad-CAM's class-specific maps change."""
    model = zoo_model("test_vit")
    images = images_for(model, 2)
    rollout = vitlens.get_metric("randomisation_sanity", explainer="rollout")(model, images, None)
    torch.testing.assert_close(rollout.curves[:, 0], torch.ones(2, dtype=torch.float64))
    assert (rollout.curves[:, -1] < 0.99).all()  # randomising the blocks does change rollout
    gradcam = vitlens.get_metric("randomisation_sanity", explainer="gradcam")(model, images, None)
    assert (gradcam.curves[:, 0] < 0.99).all()


def test_seeded_and_given_maps_are_used():
    model = zoo_model("test_vit")
    images = images_for(model, 2)
    maps = vitlens.get_explainer("rollout", model)(images)
    a = vitlens.get_metric("randomisation_sanity", explainer="rollout", seed=3)(model, images, maps)
    b = vitlens.get_metric("randomisation_sanity", explainer="rollout", seed=3)(model, images, None)
    c = vitlens.get_metric("randomisation_sanity", explainer="rollout", seed=4)(model, images, maps)
    torch.testing.assert_close(a.curves, b.curves, rtol=0, atol=0)
    assert not torch.equal(a.curves[:, 1:], c.curves[:, 1:])
    # maps at another resolution than the explainer's are compared at image resolution
    up = vitlens.upsample(maps, images.shape[-2:], normalize=False)
    d = vitlens.get_metric("randomisation_sanity", explainer="rollout", seed=3)(model, images, up)
    assert d.curves.shape == a.curves.shape and torch.isfinite(d.curves).all()


@pytest.mark.filterwarnings("ignore::vitlens.metrics.MetricWarning")  # Grad-CAM maps of a random CNN may be all 0
def test_explainer_params_are_passed_and_cnn_works():
    model = vitlens.load_model("builtin:cells_cnn")
    images = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    res = vitlens.get_metric("randomisation_sanity", explainer="gradcam", explainer_params={"layer": "layer3"})(
        model, images, None
    )
    assert res.x_labels == ["head", "layer4", "layer3", "layer2", "layer1", "stem"]
