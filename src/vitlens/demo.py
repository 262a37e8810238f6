"""``vitlens demo``: the main job on the embedded default.

Loads the builtin models of a builtin benchmark (default ``cells``: a ViT and the CNN baseline), explains
a handful of its test images with every registered explainer that applies to each model, and writes one
self-contained HTML page plus a PNG grid per image and model. Ground-truth evidence masks are outlined on
the input so that a reader sees at a glance whether a map points at the evidence.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import torch

from .devices import resolve_device
from .errors import VitlensError
from .explainers import applicable_explainers, explainer_class, get_explainer
from .maps import upsample
from .models import list_builtin, load_model
from .viz import Row, Section, outline, overlay_map, render_page, save_grid

# lighter settings for the costliest methods, so that the demo answers in seconds (the page states them; the
# papers' defaults: RISE 4000 masks, SmoothGrad 50 samples, IG 50 steps, occlusion one patch, flow all layers)
DEMO_PARAMS = {
    "rise": {"n_masks": 128},
    "smoothgrad": {"n_samples": 16},
    "integrated_gradients": {"n_steps": 16},
    "occlusion": {"window": 16, "stride": 16},
    "attention_flow": {"layers": 2},
}


def demo(
    out: str | Path,
    benchmark: str = "cells",
    n_images: int = 4,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    timings: dict[tuple[str, str], float] | None = None,
) -> Path:
    """Explain ``n_images`` builtin test images with every applicable method on ``device``; write the page.
    A progress bar names the method in progress; ``timings`` (if given) receives the seconds of every
    (model, method), which the page shows too."""
    import time

    from tqdm.auto import tqdm

    from .data.images import to_unit_tensor
    from .data.synthetic import get_benchmark

    bench = get_benchmark(benchmark)
    names = [n for n in list_builtin() if n.startswith(benchmark + "_")]
    if not names:
        raise VitlensError(
            f"no builtin models for benchmark {benchmark!r} (installed: {list_builtin() or 'none'}); "
            f"train one with `vitlens train --recipe {benchmark}_vit --out DIR`"
        )
    if n_images < 1:
        raise VitlensError(f"--n must be >= 1, got {n_images}")
    dev = resolve_device(device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    samples = [bench.sample(i, seed, "test") for i in range(n_images)]
    images = np.stack([s.image for s in samples])
    sections = []
    for name in sorted(names, key=lambda n: (not n.endswith("_vit"), n)):
        model = load_model(f"builtin:{name}").to(dev)
        pre = model.preprocessing
        x = pre.normalise(to_unit_tensor(images))
        methods = applicable_explainers(model)
        results, seconds = {}, {}
        bar = tqdm(methods, desc=f"builtin:{name}", disable=not progress, leave=False)
        for m in bar:
            bar.set_postfix_str(m)
            t0 = time.perf_counter()
            results[m] = get_explainer(m, model, **DEMO_PARAMS.get(m, {})).explain(x)
            seconds[m] = time.perf_counter() - t0
            if timings is not None:
                timings[(name, m)] = seconds[m]
        probs = torch.softmax(next(iter(results.values())).logits.float(), dim=-1).cpu()
        card = model.card or {}
        acc = card.get("test_accuracy")
        sec = Section(
            heading=f"builtin:{name} — {card.get('architecture', {}).get('timm_name', '')}",
            text=(
                f"test accuracy {acc:.1%} on {card.get('test_size')} images; methods: {', '.join(methods)} "
                f"(demo settings: {DEMO_PARAMS})"
                if acc is not None
                else ""
            )
            + f"; seconds for {n_images} images: "
            + ", ".join(f"{m} {seconds[m]:.1f}" for m in sorted(seconds, key=seconds.get, reverse=True)),
        )
        for i, s in enumerate(samples):
            pred = int(probs[i].argmax())
            panels = {}
            for m, res in results.items():
                values = upsample(res.maps[i : i + 1].cpu(), images.shape[1:3], normalize=False)[0].numpy()
                panels[m] = overlay_map(s.image, values, signed=explainer_class(m).signed)
            truth = bench.classes[s.label]
            ok = pred == s.label
            title = f"true {truth}, predicted {model.class_name(pred)} (p={float(probs[i, pred]):.2f})"
            save_grid(out / f"{name}_{i:02d}.png", outline(s.image, s.mask), panels, title)
            sec.rows.append(
                Row(
                    title=f"test image {i}",
                    note=f"true <b>{html.escape(truth)}</b><br>predicted <span class='{'ok' if ok else 'bad'}'>"
                    f"{html.escape(model.class_name(pred))}</span> (p={float(probs[i, pred]):.2f})",
                    cells=[("input, evidence outlined", outline(s.image, s.mask)), *panels.items()],
                )
            )
        sections.append(sec)
    page = render_page(
        f"vitlens demo — {benchmark}",
        sections,
        intro=html.escape(bench.description)
        + " Unsigned maps are min-max normalised per map (jet: red = high); signed maps (AttnLRP, input×gradient,"
        " Integrated Gradients) are scaled by their largest |value| (red = for the class, blue = against, the"
        " image shows through where the map is zero).",
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
