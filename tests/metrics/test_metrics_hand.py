"""Every metric on inputs small enough to compute the answer by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vitlens
from vitlens.models import Preprocessing, wrap_module

# images only give the metrics their size for the localisation metrics
IMG4 = torch.zeros(1, 3, 4, 4)


def run(name, maps, masks=None, boxes=None, images=IMG4, model=None, **params):
    return vitlens.get_metric(name, **params)(
        model, images, torch.as_tensor(maps, dtype=torch.float32)[None], masks=masks, boxes=boxes
    )


def grid_mask(rows, cols, size=4):
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[0, rows, cols] = True
    return m


# ------------------------------------------------------------------------------------- localisation
def test_faf_baf_by_hand():
    # map on a 2x2 grid, 4x4 image, mask = the top-left quadrant: FAF = 1 / (1 + 3)
    res = run("faf_baf", [[1.0, 0.0], [0.0, 3.0]], masks=grid_mask(slice(0, 2), slice(0, 2)))
    assert res.scores.item() == pytest.approx(0.25)
    assert res.extra["faf"].item() == pytest.approx(0.25) and res.extra["baf"].item() == pytest.approx(0.75)


def test_faf_baf_partial_cells_by_area():
    # mask covers 1 of the 4 pixels of the top-left cell and the whole top-right cell: M = [[.25, 1], [0, 0]]
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    mask[0, 0:2, 2:4] = True
    res = run("faf_baf", [[2.0, 1.0], [1.0, 0.0]], masks=mask)
    assert res.scores.item() == pytest.approx((2 * 0.25 + 1 * 1) / 4)


def test_faf_baf_clamps_negative_values():
    res = run("faf_baf", [[1.0, -5.0], [0.0, 3.0]], masks=grid_mask(slice(0, 2), slice(0, 2)))
    assert res.scores.item() == pytest.approx(0.25)


def test_pointing_game_by_hand():
    m = torch.zeros(4, 4)
    m[1, 2] = 1.0
    assert run("pointing_game", m, masks=grid_mask(1, 2), tolerance=0).scores.item() == 1.0
    assert run("pointing_game", m, masks=grid_mask(3, 0), tolerance=0).scores.item() == 0.0
    # (3, 0) is sqrt(4 + 4) = 2.83 px from the maximum at (1, 2)
    assert run("pointing_game", m, masks=grid_mask(3, 0), tolerance=2.8).scores.item() == 0.0
    assert run("pointing_game", m, masks=grid_mask(3, 0), tolerance=2.9).scores.item() == 1.0
    # boxes when no mask is given: (x0, y0, x1, y1) = columns 2..3, rows 0..1 contains (1, 2)
    assert run("pointing_game", m, boxes=torch.tensor([[2, 0, 4, 2]]), tolerance=0).scores.item() == 1.0
    assert run("pointing_game", m, boxes=torch.tensor([[0, 2, 2, 4]]), tolerance=0).scores.item() == 0.0


def test_pointing_game_ties_use_first_maximum():
    m = torch.zeros(4, 4)
    m[0, 3] = m[2, 1] = 1.0  # the first maximum in row-major order is (0, 3)
    assert run("pointing_game", m, masks=grid_mask(0, 3), tolerance=0).scores.item() == 1.0
    assert run("pointing_game", m, masks=grid_mask(2, 1), tolerance=0).scores.item() == 0.0


def test_energy_pointing_game_by_hand():
    # box = the top-left pixel; energy 1 of 1 + 2 + 3 + 4
    res = run(
        "energy_pointing_game",
        [[1.0, 2.0], [3.0, 4.0]],
        images=torch.zeros(1, 3, 2, 2),
        boxes=torch.tensor([[0, 0, 1, 1]]),
    )
    assert res.scores.item() == pytest.approx(0.1)
    # negative values carry no energy; boxes win over masks for this metric
    res = run(
        "energy_pointing_game",
        [[1.0, -2.0], [3.0, 4.0]],
        images=torch.zeros(1, 3, 2, 2),
        boxes=torch.tensor([[1, 1, 2, 2]]),
        masks=torch.tensor([[[True, False], [False, False]]]),
    )
    assert res.scores.item() == pytest.approx(4 / 8)


def test_relevance_mass_by_hand():
    img = torch.zeros(1, 3, 2, 2)
    top_row = torch.tensor([[[True, True], [False, False]]])
    # positive relevance inside = 2, total positive = 2 + 1 + 1
    assert run("relevance_mass", [[2.0, -1.0], [1.0, 1.0]], images=img, masks=top_row).scores.item() == pytest.approx(
        0.5
    )


def test_relevance_rank_by_hand():
    img = torch.zeros(1, 3, 2, 2)
    mask = torch.tensor([[[False, True], [True, False]]])  # K = 2; the top-2 pixels are (0,0) and (0,1)
    assert run("relevance_rank", [[4.0, 3.0], [2.0, 1.0]], images=img, masks=mask).scores.item() == pytest.approx(0.5)


def test_iou_top_k_and_top_k_intersection_by_hand():
    m = torch.arange(16.0).view(4, 4)  # the top 4 pixels are the last row
    mask = grid_mask(slice(2, 4), slice(0, 2))  # 4 pixels, 2 of them in the last row
    res = run("iou_top_k", m, masks=mask, k=25.0)
    assert res.scores.item() == pytest.approx(2 / 6)
    assert res.extra["intersection"].item() == 2
    assert run("top_k_intersection", m, masks=mask, k=4).scores.item() == pytest.approx(0.5)
    assert run("top_k_intersection", m, masks=mask, k=1).scores.item() == 0.0  # (3, 3) is outside


def test_iou_top_k_ties_are_broken_by_index():
    m = torch.ones(4, 4)
    m[0, 0] = 0.0  # 15 tied pixels; the 4 with the lowest index after (0,0) are (0,1), (0,2), (0,3), (1,0)
    res = run("iou_top_k", m, masks=grid_mask(0, slice(0, 4)), k=25.0)
    assert res.extra["intersection"].item() == 3
    assert res.scores.item() == pytest.approx(3 / 5)


def _two_level_map():
    m = torch.zeros(4, 4)
    m[0, :] = 1.0  # four bright pixels: any threshold between the two levels separates them
    return m


def test_otsu_segmentation_by_hand():
    m = _two_level_map()
    res = run("otsu_segmentation", m, masks=grid_mask(0, slice(0, 4)))
    assert res.scores.item() == 1.0 and res.extra["jaccard"].item() == 1.0 and res.extra["accuracy"].item() == 1.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True
    mask[0, 1, :2] = True  # tp = 2, fp = 2, fn = 2, tn = 10
    res = run("otsu_segmentation", m, masks=mask)
    assert res.extra["f1"].item() == pytest.approx(4 / 8)
    assert res.extra["jaccard"].item() == pytest.approx(2 / 6)
    assert res.extra["accuracy"].item() == pytest.approx(12 / 16)
    assert 0 < res.extra["threshold"].item() < 1


def test_mean_threshold_segmentation_by_hand():
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True
    mask[0, 1, :2] = True  # foreground predicted = row 0 (above the mean 0.25): tp 2, fp 2, fn 2, tn 10
    res = run("mean_threshold_segmentation", _two_level_map(), masks=mask)
    assert res.extra["iou_fg"].item() == pytest.approx(2 / 6)
    assert res.extra["iou_bg"].item() == pytest.approx(10 / 14)
    assert res.scores.item() == pytest.approx((2 / 6 + 10 / 14) / 2)
    assert res.extra["pixel_accuracy"].item() == pytest.approx(12 / 16)
    assert res.extra["inter_fg"].item() == 2 and res.extra["union_fg"].item() == 6
    assert res.extra["inter_bg"].item() == 10 and res.extra["union_bg"].item() == 14


def test_sparseness_by_hand():
    img = torch.zeros(1, 3, 2, 2)
    # sorted |a| = [0, 0, 0, 1]: (2*4 - 4 - 1) * 1 / (4 * 1) = 0.75
    assert run("sparseness", [[0.0, 0.0], [-1.0, 0.0]], images=img).scores.item() == pytest.approx(0.75)
    # [1, 2, 3, 4]: ((-3)*1 + (-1)*2 + 1*3 + 3*4) / (4 * 10) = 0.25
    assert run("sparseness", [[4.0, 1.0], [3.0, 2.0]], images=img).scores.item() == pytest.approx(0.25)
    assert run("sparseness", [[2.0, 2.0], [2.0, 2.0]], images=img).scores.item() == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------- faithfulness
class SumModel(nn.Module):
    """logits = [log(sum of the pixels), 0]: p(class 0) = s / (s + 1) for a 1-channel image."""

    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.conv(x).sum(dim=(1, 2, 3))
        return torch.stack([torch.log(s), torch.zeros_like(s)], dim=1)


@pytest.fixture(scope="module")
def sum_model():
    pre = Preprocessing(input_size=(2, 2), mean=(0.0,), std=(1.0,), in_chans=1)
    return wrap_module(SumModel(), name="sum", preprocessing=pre)


def _p(s: float) -> float:
    return s / (s + 1)


def test_deletion_by_hand(sum_model):
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    res = vitlens.get_metric("deletion", patch=1, baseline="zero")(sum_model, x, x[:, 0])
    curve = [_p(10), _p(6), _p(3), _p(1), 0.0]  # remove 4, 3, 2, 1
    torch.testing.assert_close(res.curves[0], torch.tensor(curve, dtype=torch.float64))
    expected = 0.25 * (curve[0] / 2 + curve[1] + curve[2] + curve[3] + curve[4] / 2)
    assert res.scores.item() == pytest.approx(expected)
    torch.testing.assert_close(res.x, torch.tensor([0, 0.25, 0.5, 0.75, 1], dtype=torch.float64))
    # two steps: two patches per step
    res2 = vitlens.get_metric("deletion", patch=1, baseline="zero", steps=2)(sum_model, x, x[:, 0])
    torch.testing.assert_close(res2.curves[0], torch.tensor([_p(10), _p(3), 0.0], dtype=torch.float64))


def test_insertion_by_hand(sum_model):
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    res = vitlens.get_metric("insertion", patch=1, baseline="zero")(sum_model, x, x[:, 0])
    curve = [0.0, _p(4), _p(7), _p(9), _p(10)]  # reveal 4, 3, 2, 1
    torch.testing.assert_close(res.curves[0], torch.tensor(curve, dtype=torch.float64))
    # mean baseline: every pixel starts at 2.5
    res = vitlens.get_metric("insertion", patch=1, baseline="mean")(sum_model, x, x[:, 0])
    curve = [_p(10), _p(4 + 7.5), _p(7 + 5), _p(9 + 2.5), _p(10)]
    torch.testing.assert_close(res.curves[0], torch.tensor(curve, dtype=torch.float64))


def test_perturbation_by_hand(sum_model):
    x = torch.tensor([[[[0.5, 2.0], [3.0, 5.0]]]])
    fr = (0.25, 0.5, 0.75)
    # positive: remove 5, 3, 2 -> sums 5.5, 2.5, 0.5; class 0 while the sum is > 1
    res = vitlens.get_metric("perturbation", order="positive", fractions=fr)(sum_model, x, x[:, 0])
    torch.testing.assert_close(res.curves[0], torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64))
    assert res.scores.item() == pytest.approx(0.25 * (1 + 1 + 0.5))
    # negative: remove 0.5, 2, 3 -> sums 10, 8, 5
    res = vitlens.get_metric("perturbation", order="negative", fractions=fr)(sum_model, x, x[:, 0])
    assert res.scores.item() == pytest.approx(0.75)
    # the removed pixels are black: 0 before normalisation = -mean/std after it
    pre = Preprocessing(input_size=(2, 2), mean=(1.0,), std=(2.0,), in_chans=1)
    shifted = wrap_module(SumModel(), name="sum", preprocessing=pre)
    res = vitlens.get_metric("perturbation", fractions=(0.25,))(shifted, x, x[:, 0])  # 5 -> -0.5: sum 5.0
    assert res.curves[0].tolist() == [1.0, 1.0]
    x2 = torch.tensor([[[[0.5, 0.2], [0.3, 1.0]]]])  # sum 2.0; remove 1.0 -> 0.5 instead of 1.0 -> class 1
    assert vitlens.get_metric("perturbation", fractions=(0.25,))(shifted, x2, x2[:, 0]).curves[0].tolist() == [1.0, 0.0]
    assert vitlens.get_metric("perturbation", fractions=(0.25,), baseline="zero")(shifted, x2, x2[:, 0]).curves[
        0
    ].tolist() == [1.0, 1.0]


def test_perturbation_target_is_kept_class(sum_model):
    x = torch.tensor([[[[0.5, 2.0], [3.0, 5.0]]]])
    res = vitlens.get_metric("perturbation", fractions=(0.25, 0.5, 0.75))(sum_model, x, x[:, 0], target=1)
    torch.testing.assert_close(res.curves[0], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))


class ConstModel(SumModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 2) + 0 * self.conv(x).sum()


@pytest.mark.parametrize("name", ["insertion", "deletion"])
def test_auc_of_a_flat_curve_is_its_height(name):
    """The x axis is the fraction in [0, 1]: a model that ignores its input (p = 0.5) has AUC 0.5."""
    pre = Preprocessing(input_size=(4, 4), mean=(0.0,), std=(1.0,), in_chans=1)
    model = wrap_module(ConstModel(), name="const", preprocessing=pre)
    x = torch.randn(3, 1, 4, 4)
    res = vitlens.get_metric(name, patch=2, steps=3)(model, x, torch.rand(3, 2, 2))
    torch.testing.assert_close(res.scores, torch.full((3,), 0.5, dtype=torch.float64))
    torch.testing.assert_close(res.x, torch.tensor([0, 1 / 4, 2 / 4, 1], dtype=torch.float64))
