"""The coverage matrix: every explainer on every model family either runs and returns a valid map,
or refuses with a VitlensError that says why; the README shows the current matrix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import vitlens
from vitlens.explainers.coverage import FAMILIES, coverage_matrix, to_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def matrix():
    return coverage_matrix()  # raises CoverageError on any crash or invalid map


def test_every_cell_runs_or_says_why(matrix):
    assert set(matrix) == set(vitlens.list_explainers())
    for name, row in matrix.items():
        assert set(row) == {f.label for f in FAMILIES}
        for label, cell in row.items():
            assert cell == "yes" or len(cell) > 30, f"{name} on {label}: refusal without an explanation: {cell!r}"


def test_expected_support(matrix):
    """What the issue requires: gradient, CAM and perturbation methods everywhere; attention methods on the
    whole ViT family (timm, distilled, registers, HF) and refused on Swin and CNNs."""
    vit_family = ("timm ViT", "DeiT distilled", "ViT + registers", "HF ViT")
    for name in ("gradcam", "saliency", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion", "rise"):
        assert name in matrix, f"{name} is missing from the coverage matrix"
        assert set(matrix[name].values()) == {"yes"}, (name, matrix[name])
    for name, row in matrix.items():
        cls = vitlens.explainers.explainer_class(name)
        if cls.needs_attention:
            assert all(row[f] == "yes" for f in vit_family), (name, row)
            assert row["ResNet-50"] != "yes"


def test_readme_shows_the_current_matrix(matrix):
    text = README.read_text()
    found = re.search(r"<!-- coverage:start -->\n(.*?)<!-- coverage:end -->", text, re.S)
    assert found, "README has no coverage matrix block"
    assert found.group(1) == to_markdown(matrix), (
        "README coverage matrix is stale: regenerate with `vitlens list --coverage` and paste it between the markers"
    )
