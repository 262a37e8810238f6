"""Explain image files end to end: read (PNG/JPEG/16-bit/DICOM), prepare for the model, explain with several
methods in batches, write per image the raw maps (``<label>.npy``), overlays (``<label>.png``), a grid, and a
``summary.json`` of every image (prediction, targets, methods and how each file was read).

Used by ``vitlens explain``; the web app explains uploads in memory with the same parsing
(:mod:`vitlens.specs`) and drawing (:mod:`vitlens.viz`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .data.geometry import overlay_original
from .data.images import MAX_PIXELS, prepare, read_image_info
from .devices import resolve_device
from .errors import InputError
from .explainers import get_explainer
from .files import atomic_write_json
from .maps import upsample
from .models import Model, load_model
from .specs import method_label, parse_method, resolve_target
from .viz import overlay_map, save_grid


def explain_files(
    images: Sequence[str | Path],
    model_spec: str,
    methods: Sequence[str],
    out: str | Path,
    *,
    checkpoint: str | None = None,
    target: int | str | None = None,
    batch_size: int = 8,
    alpha: float = 0.5,
    seed: int = 0,
    model: Model | None = None,
    original: bool = False,
    device: str | None = None,
    precision: str = "fp32",
    max_pixels: int = MAX_PIXELS,
    pretrained: bool = False,
) -> list[dict[str, Any]]:
    """Explain image files with several methods (``NAME[:key=value...]`` specs); write overlays, grids, raw maps
    and a summary JSON (with how each file was read: format, bit depth, window, frames). ``target``: a class
    index or name (:func:`vitlens.specs.resolve_target`), None for the predicted class. ``original``: also
    ``<label>_original.png``, the overlay on the original image at its original resolution. ``device``:
    auto | cpu | cuda[:N] | mps (:func:`vitlens.devices.resolve_device`; None keeps a given ``model`` where it
    is, else auto); ``precision``: the model forwards' (:meth:`vitlens.models.Model.to`); ``max_pixels``: larger
    files are refused before decoding (default 40 MP; raise it for pathology tiles or mammograms);
    ``pretrained``: timm/HF/torchvision weights from the local hub cache. ``summary.json`` says where the weights
    came from (``weights``; ``random_weights`` is true for an untrained network)."""
    if not images:
        raise InputError("no images given")
    if batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {batch_size}")
    if not methods:
        raise InputError("no explainer given: name at least one method, e.g. --method rollout,gradcam")
    dev = resolve_device(device) if device is not None or model is None else None
    model = model or load_model(model_spec, checkpoint=checkpoint, seed=seed, pretrained=pretrained)
    model = model.to(dev, precision=precision)
    parsed = [parse_method(m) for m in methods]
    explainers = {method_label(n, p): get_explainer(n, model, **p) for n, p in parsed}
    tgt = resolve_target(target, model)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"--out {out}: a file of that name is in the way; give a directory") from None
    except OSError as e:
        raise InputError(f"--out {out}: cannot create the output directory ({e.strerror or e})") from None
    stems: dict[str, int] = {}
    records: list[dict[str, Any]] = []
    paths = [Path(p) for p in images]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start : start + batch_size]
        read = [read_image_info(p, max_pixels) for p in chunk]
        prepared = [prepare(img, model.preprocessing) for img, _ in read]
        x = torch.stack([p.tensor for p in prepared])
        results = {label: e.explain(x, tgt) for label, e in explainers.items()}
        first = next(iter(results.values()))
        probs = torch.softmax(first.logits.float(), dim=-1).cpu()
        for i, (path, prep) in enumerate(zip(chunk, prepared, strict=True)):
            stem = path.stem
            stems[stem] = stems.get(stem, 0) + 1
            if stems[stem] > 1:
                stem = f"{stem}_{stems[stem]}"
            img_dir = out / stem
            img_dir.mkdir(parents=True, exist_ok=True)
            pred = int(probs[i].argmax())
            panels = {}
            for label, res in results.items():
                raw = res.maps[i].cpu()
                np.save(img_dir / f"{label}.npy", raw.numpy())
                values = upsample(raw[None], prep.display.shape[:2], normalize=False)[0].numpy()
                ov = overlay_map(prep.display, values, signed=explainers[label].signed, alpha=alpha)
                Image.fromarray(ov).save(img_dir / f"{label}.png")
                if original:
                    orig = overlay_original(read[i][0], raw, prep, alpha=alpha, signed=explainers[label].signed)
                    Image.fromarray(orig).save(img_dir / f"{label}_original.png")
                cls_specific = explainers[label].class_specific
                key = f"{label}\n(target {model.class_name(int(res.target[i]))})" if cls_specific else label
                panels[key] = ov
            title = f"{path.name}: predicted {model.class_name(pred)} (p={float(probs[i, pred]):.3f})"
            save_grid(img_dir / "grid.png", prep.display, panels, title)
            records.append(
                {
                    "image": str(path),
                    "dir": str(img_dir),
                    "predicted": pred,
                    "predicted_name": model.class_name(pred),
                    "probability": float(probs[i, pred]),
                    "targets": {label: int(res.target[i]) for label, res in results.items()},
                    "methods": {label: e.params() | {"name": e.name} for label, e in explainers.items()},
                    "input": read[i][1],
                    "weights": model.weights,
                }
            )
    info = {
        "model": model.name,
        "weights": model.weights,
        "random_weights": model.random_weights,
        "device": str(model.device),
        "precision": model.precision,
        "images": records,
    }
    atomic_write_json(out / "summary.json", info)
    return records
