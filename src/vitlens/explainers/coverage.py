"""Which explainer runs on which model family: the coverage matrix of the README, computed from the registry.

Every registered explainer is built and run on one small random-init model of each family
(:data:`FAMILIES`). A cell is either ``yes`` (it ran and returned a valid map) or the reason the explainer
refused the model (the message of its :class:`~vitlens.errors.VitlensError`). Anything else (a crash, an
invalid map) is an error of the explainer, raised as :class:`CoverageError`.

``python -m vitlens.explainers.coverage`` (or ``vitlens list --coverage``) prints the matrix as Markdown;
``tests/test_coverage.py`` checks every cell and that the README holds the current matrix.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import VitlensError
from ..models import Model, load_model
from .registry import explainer_class, get_explainer, list_explainers

# cheap settings for parameters that only trade accuracy for time (so the matrix runs in seconds)
FAST_PARAMS = {
    "n_masks": 16, "n_steps": 4, "n_samples": 2, "batch_size": 8, "internal_batch_size": 8, "window": 32, "stride": 32
}


class CoverageError(AssertionError):
    """An explainer crashed or returned an invalid map on a model family (a bug, not a refusal)."""


def _timm_vit(**kw) -> Callable[[], Model]:
    def make() -> Model:
        torch.manual_seed(0)
        dims = dict(img_size=64, patch_size=16, embed_dim=48, depth=2, num_heads=3, num_classes=5)
        return load_model("timm:vit_small_patch16_224", **(dims | kw))

    return make


def _deit_distilled() -> Model:
    torch.manual_seed(0)
    return load_model(
        "timm:deit_tiny_distilled_patch16_224", img_size=64, embed_dim=48, depth=2, num_heads=3, num_classes=5
    )


def _hf_vit() -> Model:
    try:
        from transformers import ViTConfig, ViTForImageClassification
    except ImportError as e:  # pragma: no cover - transformers is in the test extra
        raise VitlensError("transformers is not installed (pip install 'vitlens[hf]')") from e
    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=64, patch_size=16, hidden_size=48, num_hidden_layers=2, num_attention_heads=3,
        intermediate_size=96, num_labels=5,
    )
    return load_model(ViTForImageClassification(cfg).eval())


def _swin() -> Model:
    torch.manual_seed(0)
    return load_model(
        "timm:swin_tiny_patch4_window7_224", embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=5
    )


def _resnet50() -> Model:
    torch.manual_seed(0)
    return load_model("torchvision:resnet50", num_classes=5)


@dataclass(frozen=True)
class Family:
    label: str
    make: Callable[[], Model]
    input_hw: tuple[int, int]


FAMILIES: list[Family] = [
    Family("timm ViT", _timm_vit(), (64, 64)),
    Family("DeiT distilled", _deit_distilled, (64, 64)),
    Family("ViT + registers", _timm_vit(reg_tokens=4), (64, 64)),
    Family("HF ViT", _hf_vit, (64, 64)),
    Family("Swin", _swin, (224, 224)),
    Family("ResNet-50", _resnet50, (64, 64)),
]


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
