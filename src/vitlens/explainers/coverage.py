"""Which explainer runs on which model family: the coverage matrix of the README, computed from the registry.

Every registered explainer is built and run on one small random-init model of each family
(:data:`FAMILIES` = :data:`vitlens.models.zoo.SMALL_FAMILIES`). A cell is either ``yes`` (it ran and returned
a valid map) or the reason the explainer refused the model (the message of its
:class:`~vitlens.errors.VitlensError`). Anything else (a crash, an invalid map) is an error of the explainer,
raised as :class:`CoverageError`.

``python -m vitlens.explainers.coverage`` (or ``vitlens list --coverage``) prints the matrix as Markdown;
``tests/test_coverage.py`` checks every cell and that the README holds the current matrix.
"""

from __future__ import annotations

import sys

import torch

from ..errors import VitlensError
from ..models import Model
from ..models.zoo import SMALL_FAMILIES, Family
from .registry import explainer_class, get_explainer, list_explainers

# cheap settings for parameters that only trade accuracy for time (so the matrix runs in seconds)
FAST_PARAMS = {
    "n_masks": 16,
    "n_steps": 4,
    "n_samples": 2,
    "batch_size": 8,
    "internal_batch_size": 8,
    "window": 32,
    "stride": 32,
}


class CoverageError(AssertionError):
    """An explainer crashed or returned an invalid map on a model family (a bug, not a refusal)."""


FAMILIES: list[Family] = SMALL_FAMILIES


def fast_params(name: str) -> dict:
    return {k: v for k, v in FAST_PARAMS.items() if k in explainer_class(name).param_names()}


def check_cell(name: str, model: Model, input_hw: tuple[int, int]) -> str:
    """Run one explainer on one model: ``"yes"`` or the refusal message. Raises CoverageError on a crash
    or an invalid map."""
    try:
        explainer = get_explainer(name, model, **fast_params(name))
    except VitlensError as e:
        return " ".join(str(e).split())
    x = torch.randn(2, model.preprocessing.in_chans, *input_hw, generator=torch.Generator().manual_seed(0))
    try:
        maps = explainer(x)
    except VitlensError as e:
        return " ".join(str(e).split())
    except Exception as e:
        raise CoverageError(f"{name} crashed on {model.name}: {type(e).__name__}: {e}") from e
    cls = explainer_class(name)
    problems = []
    if maps.ndim != 3 or maps.shape[0] != 2 or maps.dtype != torch.float32:
        problems.append(f"shape/dtype {tuple(maps.shape)} {maps.dtype}")
    elif not torch.isfinite(maps).all():
        problems.append("non-finite values")
    elif not cls.signed and (maps < 0).any():
        problems.append("negative values from an unsigned method")
    elif cls.resolution == "pixel" and tuple(maps.shape[-2:]) != tuple(input_hw):
        problems.append(f"pixel map of size {tuple(maps.shape[-2:])} for input {input_hw}")
    if problems:
        raise CoverageError(f"{name} on {model.name}: " + "; ".join(problems))
    return "yes"


def coverage_matrix(families: list[Family] | None = None) -> dict[str, dict[str, str]]:
    """``{explainer: {family label: "yes" | reason}}`` for every registered explainer."""
    families = FAMILIES if families is None else families
    out: dict[str, dict[str, str]] = {name: {} for name in list_explainers()}
    for fam in families:
        try:
            model = fam.make()
        except VitlensError as e:
            for name in out:
                out[name][fam.label] = f"model unavailable: {e}"
            continue
        for name in out:
            out[name][fam.label] = check_cell(name, model, fam.input_hw)
    return out


def to_markdown(matrix: dict[str, dict[str, str]]) -> str:
    """The matrix as a Markdown table (``yes`` / ``no``) followed by the distinct refusal reasons."""
    labels = list(next(iter(matrix.values())).keys())
    reasons: list[str] = []
    lines = ["| explainer | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, row in matrix.items():
        cells = []
        for label in labels:
            cell = row[label]
            if cell == "yes":
                cells.append("yes")
                continue
            cell = cell.replace(f"explainer {name!r}", "this method").replace(name, "this method")
            if cell not in reasons:
                reasons.append(cell)
            cells.append(f"no [{reasons.index(cell) + 1}]")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"[{i}] {r}  " for i, r in enumerate(reasons, 1)]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:  # pragma: no cover - exercised through the CLI test
    sys.stdout.write(to_markdown(coverage_matrix()))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
