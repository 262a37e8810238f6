"""``vitlens bench --init LAYOUT DIR``: write a ready study config for a data set in a public layout.

The config names the data set (path, layout, split, and for the medical layouts the disease-positive
classes, as arXiv:2503.09535 scores only images with a finding), the models, every explainer (those that do not
apply to a model are commented out with the reason when the models can be loaded now; otherwise the runner
records them as skipped), and every metric the layout's annotations support:

* masks or boxes: the localisation metrics of arXiv:2503.09535, Das & Huddar 2025 and Coporan 2025 against
  the ``evidence`` mask (and the pointing game and top-5% IoU against the ``box`` mask when the layout has
  boxes, as arXiv:2503.09535 scores expert boxes);
* always: deletion/insertion (Barekatain & Glocker 2025), the positive/negative perturbation test (Chefer et
  al.) and sparseness;
* FAF/BAF (Das & Huddar 2025) against the cached ``vitlens masks`` foreground masks when they exist, else the line is
  written commented out with the command that makes them.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ExplainerError, VitlensError

# layout -> (classes to score: None = all, labels policy, note for the header)
TEMPLATES: dict[str, dict] = {
    "busi": {
        "classes": ["benign", "malignant"],
        "note": "BUSI breast ultrasound: lesion masks (Barekatain & Glocker 2025; Das & Huddar 2025)",
    },
    "kvasir": {"classes": None, "note": "Kvasir-SEG polyps: masks and boxes (arXiv:2503.09535)"},
    "pbc": {"classes": None, "note": "peripheral blood cells, class folders without masks (Barekatain & Glocker 2025)"},
    "voc": {
        "classes": None,
        "labels": "ignore",
        "split": "val",
        "note": "Pascal VOC: segmentation masks and boxes, scored with ImageNet models (Coporan 2025)",
    },
    "coco": {"classes": None, "labels": "ignore", "note": "COCO instances: masks and boxes"},
    "csv": {"classes": None, "note": "a CSV manifest"},
    "folders": {"classes": None, "note": "class folders"},
}
DEFAULT_MODELS = ["models/vit_b16_random", "models/vit_b16_supervised", "models/vit_b16_dino", "models/vit_b16_mae"]
REGION_METRICS = [
    "pointing_game",
    "energy_pointing_game",
    "{name: iou_top_k, params: {k: 5}}",
    "otsu_segmentation",
    "mean_threshold_segmentation",
    "relevance_mass",
    "relevance_rank",
    "faf_baf",
]
BOX_METRICS = ["{name: pointing_game, mask: box}", "{name: iou_top_k, params: {k: 5}, mask: box}"]
MODEL_METRICS = [
    "{name: deletion, params: {steps: 28}}",
    "{name: insertion, params: {steps: 28}}",
    "{name: perturbation, params: {order: positive}}",
    "{name: perturbation, params: {order: negative}}",
    "sparseness",
]
EXTRA_EXPLAINERS = [
    "{name: rollout, params: {head_fusion: max, discard_ratio: 0.9}}",
    "{name: rollout, params: {head_fusion: min}}",
]


def _load(models: list[str], seed: int) -> list | None:
    """The models, or None if one cannot be loaded yet (e.g. not trained)."""
    from ..models import load_model

    try:
        return [load_model(m, seed=seed) for m in models]
    except VitlensError:
        return None


def _steps(loaded: list | None, wanted: int = 28) -> int:
    """Insertion/deletion steps: 28 (one per 7 patches of ViT-B/16 at 224), at most the smallest patch count."""
    from ..metrics import get_metric

    if not loaded:
        return wanted
    metric = get_metric("deletion")
    counts = []
    for m in loaded:
        h, w = m.preprocessing.input_size
        ph, pw = metric.patch_size(m, (h, w))
        counts.append(-(-h // ph) * -(-w // pw))
    return min([wanted, *counts])


def _applicability(loaded: list) -> dict[str, str]:
    """explainer -> reason it applies to none of the models ('' if it applies to one)."""
    from ..explainers import get_explainer, list_explainers

    out = {}
    for name in list_explainers():
        reasons = []
        for m in loaded:
            try:
                get_explainer(name, m)
                reasons = []
                break
            except ExplainerError as e:
                reasons.append(str(e).split(";")[0])
        out[name] = reasons[0] if reasons else ""
    return out


def init_config(
    layout: str, data_dir: str | Path, models: list[str] | None = None, *, name: str | None = None, seed: int = 0
) -> str:
    """The YAML text of a study config for ``data_dir`` read as ``layout``."""
    from ..data.foreground import default_mask_dir
    from ..data.layouts import open_dataset
    from ..explainers import list_explainers

    if layout not in TEMPLATES:
        raise VitlensError(f"no study template for layout {layout!r}; available: {', '.join(sorted(TEMPLATES))}")
    tpl = TEMPLATES[layout]
    root = Path(data_dir).resolve()
    ds = open_dataset(root, layout)
    classes = tpl["classes"]
    if classes is not None:
        classes = [c for c in classes if c in ds.classes] or None
    models = list(models or DEFAULT_MODELS)
    name = name or f"{root.name}-study"
    loaded = _load(models, seed)
    applies = None if loaded is None else _applicability(loaded)
    steps = _steps(loaded)
    lines = [
        f"# vitlens study: {tpl['note']}.",
        f"# Written by `vitlens bench --init {layout} {data_dir}`; run it with `vitlens bench THIS_FILE`,",
        "# then `vitlens report runs/<name>`. Edit freely: `vitlens list -v` and `vitlens list --metrics -v`",
        "# list every explainer and metric with its parameters.",
        f"name: {name}",
        f"seed: {seed}",
        "batch_size: 16",
        "datasets:",
        f"  - name: {root.name}",
        f"    path: {root}",
        f"    layout: {layout}",
        f"    split: {tpl.get('split', 'test')}"
        "            # the layout's split, else vitlens' seeded 80/10/10 split; `all` for every image",
    ]
    if classes:
        lines.append(
            f"    classes: [{', '.join(classes)}]   # only images with a finding are scored (arXiv:2503.09535)"
        )
    if tpl.get("labels"):
        lines.append(f"    labels: {tpl['labels']}            # the models' classes are not the data set's")
    lines.append("    models:")
    lines += [f"      - {m}" for m in models]
    if applies is None:
        lines.append("# (the models could not be loaded now: every explainer is listed; the runner records those")
        lines.append("#  that do not apply to a model as skipped, with the reason)")
    lines.append("explainers:")
    for e in list_explainers():
        reason = (applies or {}).get(e, "")
        lines.append(f"  # - {e}    # does not apply: {reason}" if reason else f"  - {e}")
    if applies is None or not applies.get("rollout"):
        lines += [f"  - {e}" for e in EXTRA_EXPLAINERS]
    lines.append("metrics:")
    has_region = ds.has_masks() or ds.has_boxes()
    if has_region:
        lines += [f"  - {m}" for m in REGION_METRICS]
    if ds.has_boxes():
        lines += [f"  - {m}" for m in BOX_METRICS]
    lines += [f"  - {m}".replace("steps: 28", f"steps: {steps}") for m in MODEL_METRICS]
    fg = default_mask_dir(root)
    if fg.is_dir():
        lines.append("  - {name: faf_baf, mask: foreground}   # Mask R-CNN foreground masks (Das & Huddar 2025)")
    else:
        lines.append(f"  # - {{name: faf_baf, mask: foreground}}  # first: vitlens masks {root} --weights MASKRCNN.pth")
    return "\n".join(lines) + "\n"
