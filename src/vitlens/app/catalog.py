"""What the page offers: the methods that apply to a model with a form field per parameter, and builtin samples.

Methods are read from the registry at request time (``vitlens.applicable_explainers`` and
``vitlens.explainers.explainer_info``), so explainers added to vitlens appear without touching the app.
A parameter's field comes from :data:`PARAM_HINTS` where the app knows it (a choice list for
``head_fusion``, the valid Grad-CAM sites for ``layer``); numeric bounds come from the explainer's
``param_ranges``; any other parameter gets a field typed by its default value (number, checkbox or text).
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError, VitlensError
from ..explainers import applicable_explainers, explainer_class, explainer_info
from ..models import HEAD_FUSIONS, Model

PARAM_HINTS: dict[str, dict[str, Any]] = {
    "head_fusion": {
        "kind": "choice",
        "choices": list(HEAD_FUSIONS),
        "help": "how the attention heads of a layer are combined",
    },
    "discard_ratio": {
        "kind": "number",
        "step": 0.05,
        "help": "fraction of the weakest attention weights dropped per layer (0 keeps all)",
    },
    "alpha": {
        "kind": "number",
        "step": 0.05,
        "help": "weight of attention against the residual (identity) path",
    },
    "layer": {"kind": "layer", "help": "where Grad-CAM reads the features (default: the last block or stage)"},
}


#: cost parameters the web app bounds (the library does not): one request must not hold a model for minutes or
#: allocate gigabytes. Each cap is the largest value the form offers; larger values are refused with a message.
COST_LIMITS: dict[str, dict[str, int]] = {
    "rise": {"n_masks": 8000, "batch_size": 256, "grid_size": 64},
    "smoothgrad": {"n_samples": 200, "batch_size": 256},
    "integrated_gradients": {"n_steps": 200, "internal_batch_size": 256},
    "occlusion": {"batch_size": 512},
}


def check_cost(explainer: str, params: dict[str, Any]) -> None:
    """Refuse cost parameters above :data:`COST_LIMITS` (a VitlensError naming the cap)."""
    for param, cap in COST_LIMITS.get(explainer, {}).items():
        value = params.get(param)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
            raise InputError(
                f"{explainer} {param}={value} is more than the web app allows ({cap}); use `vitlens explain` "
                "for larger settings"
            )


def _jsonable(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else repr(v)


def layer_choices(model: Model, limit: int = 48) -> list[Any]:
    """Grad-CAM sites the model accepts: block/stage indices for transformers (last first), module names of
    the feature stages for CNNs. Each candidate is checked with the adapter's ``feature_site``."""
    hw = model.preprocessing.input_size

    def ok(layer: Any) -> bool:
        try:
            model.feature_site(layer, hw)
        except (VitlensError, NotImplementedError, AttributeError, TypeError, ValueError):
            return False
        return True

    if model.family in ("vit", "swin"):
        out = []
        for i in range(-1, -limit - 1, -1):
            if not ok(i):
                break
            out.append(i)
        return out
    names: list[str] = []
    info = getattr(model.module, "feature_info", None)
    try:
        names = [f["module"] for f in info] if info is not None else []
    except (TypeError, KeyError):
        names = []
    if not names:
        names = [n for n, _ in model.module.named_children() if n.startswith("layer")]
    return [n for n in reversed(names) if n and ok(n)][:limit]


def param_spec(explainer: str, param: str, default: Any, model: Model) -> dict[str, Any]:
    """The form field of one parameter; numeric bounds come from the explainer's declared ``param_ranges``
    (``explainer_info(name)["ranges"]``), the same declaration its constructor validates with."""
    spec: dict[str, Any] = {"name": param, "default": _jsonable(default)}
    spec.update(explainer_info(explainer)["ranges"].get(param, {}))
    if param in COST_LIMITS.get(explainer, {}):
        spec["max"] = COST_LIMITS[explainer][param]
    hint = PARAM_HINTS.get(param)
    if hint is not None:
        spec.update(hint)
        if hint["kind"] == "layer":
            spec["choices"] = layer_choices(model)
        return spec
    if isinstance(default, bool):
        spec["kind"] = "bool"
    elif isinstance(default, (int, float)):
        spec["kind"] = "number"
        spec["step"] = 1 if isinstance(default, int) else "any"
    else:
        spec["kind"] = "text"
    spec["help"] = f"{explainer} parameter {param!r} (leave empty for the default)"
    return spec


def param_defaults(name: str) -> dict[str, Any]:
    """Default value of every parameter of a registered explainer (``inspect.Parameter.empty`` if none)."""
    sig = inspect.signature(explainer_class(name).__init__)
    return {p: sig.parameters[p].default for p in explainer_info(name)["params"] if p in sig.parameters}


def method_specs(model: Model) -> list[dict[str, Any]]:
    """Every registered explainer that runs on ``model``, with its citation and a field per parameter."""
    out = []
    for name in applicable_explainers(model):
        info = explainer_info(name)
        defaults = param_defaults(name)
        params = [param_spec(name, p, defaults.get(p), model) for p in info["params"]]
        out.append(
            {
                "name": name,
                "summary": info["summary"].replace("``", ""),
                "citation": info["citation"],
                "class_specific": info["class_specific"],
                "signed": info["signed"],
                "params": params,
            }
        )
    return out


# ------------------------------------------------------------------------------------------------ samples
SAMPLE_SEED = 0
SAMPLE_SPLIT = "test"
SAMPLES_PER_BENCHMARK = 8


@dataclass(frozen=True)
class BuiltinSample:
    id: str  # "cells/3"
    benchmark: str
    index: int
    label: int
    label_name: str
    image: np.ndarray  # uint8 [H, W, 3]
    mask: np.ndarray  # bool [H, W]: the class-determining evidence (may be empty)
    marker: np.ndarray | None = None  # bool [H, W]: the spurious corner marker of ``shortcut`` images


def sample_ids() -> list[str]:
    from ..data.synthetic import BENCHMARKS

    return [f"{b}/{i}" for b in BENCHMARKS for i in range(SAMPLES_PER_BENCHMARK)]


@functools.lru_cache(maxsize=64)
def get_sample(sample_id: str) -> BuiltinSample:
    """A test image of a builtin benchmark (seed 0) with its exact evidence mask; ``InputError`` if unknown."""
    from ..data.synthetic import get_benchmark
    from ..errors import InputError

    if sample_id not in sample_ids():
        raise InputError(f"unknown sample {sample_id!r}; valid: {', '.join(sample_ids())}")
    bench_name, _, idx = sample_id.partition("/")
    bench = get_benchmark(bench_name)
    s = bench.sample(int(idx), SAMPLE_SEED, SAMPLE_SPLIT)
    image, mask = s.image.copy(), s.mask.astype(bool)
    marker = s.extra_masks["marker"].astype(bool) if "marker" in s.extra_masks else None
    for a in (image, mask, marker):
        if a is not None:
            a.flags.writeable = False  # cached and shared between requests
    return BuiltinSample(sample_id, bench_name, int(idx), s.label, bench.classes[s.label], image, mask, marker)


def sample_list() -> list[dict[str, Any]]:
    out = []
    for sid in sample_ids():
        s = get_sample(sid)
        out.append(
            {
                "id": sid,
                "benchmark": s.benchmark,
                "index": s.index,
                "label": s.label,
                "label_name": s.label_name,
                "has_mask": bool(s.mask.any()),
                "url": f"/api/samples/{sid}.png",
            }
        )
    return out
