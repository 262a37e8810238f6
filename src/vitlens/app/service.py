"""The app's logic, without HTTP: load the served models, validate a request's settings, predict, explain,
score the maps, keep recent results for download.

Request isolation. A :class:`vitlens.Model` records attention by hooking the shared ``nn.Module`` (and
switching timm's fused attention off for that forward); two forwards of the same module at the same time
would append to each other's recordings. So every use of a model (prediction, explanation, the
deletion/insertion forwards) runs while holding that model's lock: requests for one model are serialised,
requests for different models run in parallel. Decoding, preprocessing and PNG encoding happen outside the
lock. The maps of parallel requests are therefore exactly those of the same requests made one by one (a
test checks bit equality).

Scores. Deletion and insertion AUC (Petsiuk et al. 2018) with :data:`METRIC_STEPS` steps (14: each step
changes 1/14 of the patches, e.g. 14 of the 196 patches of deit_tiny) and the ``zero`` baseline for both,
as in the builtin attention study (the builtin models still classify a blurred image correctly, which
makes RISE's blurred insertion start near its end point). Fewer steps than patches is a coarser curve than
the paper's one-patch steps; ``steps`` in the settings changes it. Pointing game (Zhang et al. 2018,
tolerance 15 px on the model's input) for builtin samples, whose evidence mask is exact. The maps of all
methods with the same grid are scored in one batched metric call, which gives the same scores as one call
per method (images of a batch are independent).

Cost. Each explanation has a time budget (:data:`TIME_BUDGET_S`, ``vitlens serve --time-budget``) that also
bounds how long it waits for the model's lock, and stops early when the page that asked for it goes away:
the model checks before every forward (:meth:`vitlens.models.Model.interruptible`), so methods of many
forwards stop within one forward; the request then ends with a :class:`~vitlens.errors.Cancelled` message.
Cost parameters are capped besides (:data:`vitlens.app.catalog.COST_LIMITS`).
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data.geometry import transform_mask
from ..data.images import MAX_PIXELS, PreparedImage, prepare
from ..devices import resolve_device
from ..errors import Cancelled, InputError, ModelError
from ..explainers import Explainer, get_explainer
from ..metrics import get_metric
from ..models import Model, list_builtin, load_model
from ..specs import method_label, parse_method, parse_value, resolve_target
from ..viz import outline_rgba
from . import render
from .catalog import BuiltinSample, check_cost, get_sample, method_specs, param_defaults
from .uploads import DecodedImage

DEFAULT_MODELS = tuple(
    f"builtin:{n}" for n in ("cells_vit", "cells_cnn", "ultrasound_vit", "ultrasound_cnn", "shortcut_vit")
)
METRIC_STEPS = 14
MAX_STEPS = 64
MAX_METHODS = 8
MAX_RESULTS = 32
TOP_K = 5
TIME_BUDGET_S = 120.0  # per explanation request, lock wait included


@dataclass
class ModelEntry:
    spec: str
    model: Model
    note: str
    benchmark: str | None  # the builtin benchmark a builtin model was trained on
    methods: list[dict[str, Any]] = field(default_factory=list)  # applicable explainers, their form fields
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> dict[str, Any]:
        m = self.model
        return {
            "spec": self.spec,
            "family": m.family,
            "num_classes": m.num_classes,
            "classes": [m.class_name(i) for i in range(m.num_classes)],
            "input_size": list(m.preprocessing.input_size),
            "benchmark": self.benchmark,
            "note": self.note,
            "random_weights": m.random_weights,
            "methods": self.methods,
        }


def describe(spec: str, model: Model) -> tuple[str, str | None]:
    """(a one-line note for the page, the builtin benchmark the model was trained on)."""
    card = model.card
    if model.random_weights:
        return (
            "RANDOM WEIGHTS: this model was never trained (no checkpoint, not pretrained); its maps explain noise. "
            "For trying the app and timing only",
            None,
        )
    if not card:
        return f"weights: {model.weights}", None
    data = str(card.get("data", ""))
    bench = data.split(":", 1)[1] if data.startswith("builtin:") else None
    arch = card.get("architecture", {}).get("timm_name", "")
    acc = card.get("test_accuracy")
    parts = [arch, f"trained on {data}" if data else "", f"test accuracy {acc:.1%}" if acc is not None else ""]
    return ", ".join(p for p in parts if p), bench


@dataclass
class Settings:
    model: str
    sample: str | None = None
    methods: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    target: int | str | None = None
    metrics: bool = True
    steps: int = METRIC_STEPS


def _clean_params(method: str, params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InputError(f"params of method {method!r} must be an object of name: value, got {params!r}")
    out: dict[str, Any] = {}
    for k, v in params.items():
        if isinstance(v, str):
            if not v.strip():
                continue  # an empty field: the default
            v = parse_value(v.strip())
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise InputError(f"parameter {k!r} of method {method!r} must be a number, text or true/false, got {v!r}")
        out[str(k)] = v
    return out


def parse_settings(raw: Any, *, need_methods: bool) -> Settings:
    """Validate the JSON settings of a request; every problem is an ``InputError`` naming the field."""
    if not isinstance(raw, dict):
        raise InputError("settings must be a JSON object")
    unknown = sorted(set(raw) - {"model", "sample", "methods", "target", "metrics", "steps"})
    if unknown:
        raise InputError(f"unknown settings {unknown}; valid: model, sample, methods, target, metrics, steps")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise InputError("settings.model is required: one of the served model specs (GET /api/models)")
    sample = raw.get("sample")
    if sample is not None and not isinstance(sample, str):
        raise InputError(f"settings.sample must be a sample id such as 'cells/0', got {sample!r}")
    methods: list[tuple[str, dict[str, Any]]] = []
    raw_methods = raw.get("methods") or []
    if not isinstance(raw_methods, list):
        raise InputError("settings.methods must be a list of {name, params} objects or 'name:key=value' strings")
    for m in raw_methods:
        if isinstance(m, str):
            name, params = parse_method(m)
        elif isinstance(m, dict) and isinstance(m.get("name"), str):
            name, params = m["name"], _clean_params(m["name"], m.get("params"))
        else:
            raise InputError(f"method {m!r} is neither {{'name': ..., 'params': {{...}}}} nor 'name:key=value'")
        methods.append((name, params))
    if need_methods and not methods:
        raise InputError("choose at least one explanation method")
    if len(methods) > MAX_METHODS:
        raise InputError(f"at most {MAX_METHODS} methods per request, got {len(methods)}")
    target = raw.get("target")
    if isinstance(target, bool) or not (target is None or isinstance(target, (int, str))):
        raise InputError(f"settings.target must be a class index, a class name or null, got {target!r}")
    if isinstance(target, str) and not target.strip():
        target = None
    metrics = raw.get("metrics", True)
    if not isinstance(metrics, bool):
        raise InputError(f"settings.metrics must be true or false, got {metrics!r}")
    steps = raw.get("steps", METRIC_STEPS)
    if steps is None:
        steps = METRIC_STEPS
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InputError(f"settings.steps must be an integer in 1..{MAX_STEPS}, got {steps!r}")
    return Settings(model, sample, methods, target, metrics, steps)


@dataclass
class Input:
    prepared: PreparedImage
    mask: np.ndarray | None  # bool [H, W] on the model's input crop (builtin samples)
    sample: BuiltinSample | None
    meta: dict[str, Any]
    marker: np.ndarray | None = None  # the spurious marker of a shortcut sample, on the input crop

    @property
    def x(self) -> torch.Tensor:
        return self.prepared.tensor[None]


def _finite(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


class ResultStore:
    """The last :data:`MAX_RESULTS` explanations, for the download button (bounded memory)."""

    def __init__(self, capacity: int = MAX_RESULTS) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, result: dict[str, Any]) -> str:
        key = secrets.token_urlsafe(12)
        with self._lock:
            self._items[key] = result
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return key

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            return self._items.get(key)


class Service:
    """The served models and what the API does with them."""

    def __init__(
        self, models: dict[str, Model], time_budget_s: float = TIME_BUDGET_S, max_pixels: int = MAX_PIXELS
    ) -> None:
        if not models:
            raise ModelError("no models to serve")
        self.time_budget_s = float(time_budget_s)
        self.max_pixels = int(max_pixels)  # uploads with more pixels are refused from their header
        self.entries: dict[str, ModelEntry] = {}
        for spec, model in models.items():
            note, bench = describe(spec, model)
            self.entries[spec] = ModelEntry(spec, model, note, bench, method_specs(model))
        self.results = ResultStore()

    @classmethod
    def from_specs(
        cls,
        specs: list[str] | tuple[str, ...] | None = None,
        seed: int = 0,
        device: str = "auto",
        time_budget_s: float = TIME_BUDGET_S,
        max_pixels: int = MAX_PIXELS,
    ) -> Service:
        """Load models by spec (default: the builtin models shipped with this installation) onto ``device``."""
        dev = resolve_device(device)
        if not specs:
            shipped = set(list_builtin())
            specs = [s for s in DEFAULT_MODELS if s.split(":", 1)[1] in shipped]
            if not specs:
                raise ModelError("no builtin models are installed; pass --model SPEC")
        models: dict[str, Model] = {}
        for spec in specs:
            if spec not in models:
                models[spec] = load_model(spec, seed=seed).to(dev)
        return cls(models, time_budget_s=time_budget_s, max_pixels=max_pixels)

    # ---------------------------------------------------------------------------------------- lookups
    def entry(self, spec: str) -> ModelEntry:
        try:
            return self.entries[spec]
        except KeyError:
            raise InputError(f"unknown model {spec!r}; this server has: {', '.join(self.entries)}") from None

    def models_info(self) -> list[dict[str, Any]]:
        return [e.info() for e in self.entries.values()]

    def _input(self, entry: ModelEntry, settings: Settings, upload: DecodedImage | None) -> Input:
        pre = entry.model.preprocessing
        if upload is not None and settings.sample is not None:
            raise InputError("give either an uploaded image or a builtin sample, not both")
        if upload is not None:
            prep = prepare(upload.image, pre)
            meta = {
                "source": "upload",
                "name": upload.name,
                "sha256": upload.sha256,
                "format": upload.format,
                "mode": upload.mode,
                "width": upload.size[0],
                "height": upload.size[1],
            }
            return Input(prep, None, None, meta)
        if settings.sample is None:
            raise InputError("choose an image: upload a file or pick a builtin sample")
        s = get_sample(settings.sample)
        prep = prepare(Image.fromarray(s.image), pre)
        meta = {
            "source": "sample",
            "name": f"builtin {s.benchmark} test image {s.index}",
            "sample": s.id,
            "sample_label": s.label_name,
            "width": s.image.shape[1],
            "height": s.image.shape[0],
        }
        if s.benchmark == entry.benchmark:  # the model's own classes: its prediction can be right or wrong
            meta["true_label"] = s.label_name
        marker = transform_mask(s.marker, prep) if s.marker is not None else None
        meta["marker"] = marker is not None and bool(marker.any())
        return Input(prep, transform_mask(s.mask, prep), s, meta, marker)

    def _image_payload(self, inp: Input) -> dict[str, Any]:
        out = {**inp.meta, "display": render.data_url(inp.prepared.display), "outline": None}
        if inp.mask is not None and inp.mask.any():
            layer = outline_rgba(inp.mask)
            if inp.marker is not None and inp.marker.any():  # the shortcut's corner marker, in yellow
                marker = outline_rgba(inp.marker, colour=(255, 214, 0))
                layer = np.where(marker[..., 3:] > 0, marker, layer)
            out["outline"] = render.data_url(layer)
        out["input_size"] = list(inp.prepared.display.shape[:2])
        return out

    def _top(self, logits: torch.Tensor, model: Model) -> list[dict[str, Any]]:
        probs = torch.softmax(logits.float(), dim=-1)[0]
        vals, idx = probs.topk(min(TOP_K, probs.numel()))
        return [
            {"index": int(i), "name": model.class_name(int(i)), "probability": float(v)}
            for v, i in zip(vals, idx, strict=True)
        ]

    # ------------------------------------------------------------------------------------------ predict
    def predict(self, settings: Settings, upload: DecodedImage | None = None) -> dict[str, Any]:
        entry = self.entry(settings.model)
        inp = self._input(entry, settings, upload)
        deadline, _check = self._budget(None)
        with self._holding(entry, deadline), torch.inference_mode():
            logits = entry.model.logits(inp.x)
        top = self._top(logits, entry.model)
        return {"model": entry.spec, "image": self._image_payload(inp), "top": top, "predicted": top[0]}

    # ------------------------------------------------------------------------------------------ explain
    def _budget(self, cancel: threading.Event | None) -> tuple[float, Callable[[], None]]:
        """(deadline, check): ``check()`` raises :class:`Cancelled` once ``cancel`` is set or the time budget
        of one request is spent; the model calls it before every forward (:meth:`Model.interruptible`)."""
        deadline = time.monotonic() + self.time_budget_s

        def check() -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled("the request was cancelled: the page that asked for it went away")
            if time.monotonic() > deadline:
                raise Cancelled(
                    f"the explanation took longer than this server's time budget of {self.time_budget_s:g} s per "
                    "request; choose lighter settings (fewer masks, samples or steps) or use `vitlens explain`"
                )

        return deadline, check

    @contextlib.contextmanager
    def _holding(self, entry: ModelEntry, deadline: float) -> Iterator[None]:
        """The model's lock, waited for at most until ``deadline`` (so a long request cannot starve others)."""
        if not entry.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise Cancelled(
                f"model {entry.spec!r} stayed busy with other requests for this server's whole time budget "
                f"({self.time_budget_s:g} s); try again"
            )
        try:
            yield
        finally:
            entry.lock.release()

    def explain(
        self, settings: Settings, upload: DecodedImage | None = None, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        t_start = time.perf_counter()
        entry = self.entry(settings.model)
        model = entry.model
        inp = self._input(entry, settings, upload)
        target = resolve_target(settings.target, model)
        x = inp.x
        deadline, check = self._budget(cancel)
        # explainers are made under the lock too: nothing touches the module concurrently
        with self._holding(entry, deadline), model.interruptible(check):
            labels: dict[str, int] = {}
            explainers: list[tuple[str, Explainer]] = []
            for name, params in settings.methods:
                check_cost(name, params)
                e = get_explainer(name, model, **params)  # unknown, bad parameters, not applicable: ExplainerError
                defaults = param_defaults(name)
                label = method_label(name, {k: v for k, v in params.items() if k not in defaults or defaults[k] != v})
                labels[label] = labels.get(label, 0) + 1
                explainers.append((label if labels[label] == 1 else f"{label}_{labels[label]}", e))
            t0 = time.perf_counter()
            results = [(label, e, e.explain(x, target)) for label, e in explainers]
            t_explain = time.perf_counter() - t0
            logits = results[0][2].logits
            t = int(results[0][2].target[0]) if target is None else target
            scores, t_metrics = self._scores(model, x, [r.maps for _, _, r in results], t, inp.mask, settings)
        top = self._top(logits, model)
        size = inp.prepared.display.shape[:2]
        methods, maps = [], {}
        for i, (label, e, res) in enumerate(results):
            raw = res.maps[0].cpu().numpy()
            maps[label] = raw
            methods.append(
                {
                    "label": label,
                    "name": e.name,
                    "params": {k: render_value(v) for k, v in e.params().items()},
                    "class_specific": e.class_specific,
                    "target": int(res.target[0]),
                    "map": render.map_payload(raw),
                    "signed": e.signed,
                    "heat": render.data_url(render.heat_image(res.maps[0].cpu(), size, e.signed)),
                    **{k: v[i] for k, v in scores.items()},
                }
            )
        probs = torch.softmax(logits.float(), dim=-1)[0]
        target_info = {
            "index": t,
            "name": model.class_name(t),
            "probability": float(probs[t]),
            "requested": settings.target is not None,
        }
        record = {
            "model": entry.spec,
            "image": {k: v for k, v in inp.meta.items()},
            "target": target_info,
            "top": top,
            "methods": [
                {
                    k: m[k]
                    for k in (
                        "label",
                        "name",
                        "params",
                        "class_specific",
                        "target",
                        "deletion",
                        "insertion",
                        "pointing_game",
                    )
                }
                for m in methods
            ],
            "metrics": self._metric_settings(settings, inp.mask is not None),
        }
        result_id = self.results.put(
            {
                "display": inp.prepared.display,
                "mask": inp.mask,
                "maps": maps,
                "signed": {label: e.signed for label, e, _ in results},
                "settings": {"vitlens_app": 1, **record},
            }
        )
        return {
            **record,
            "image": self._image_payload(inp),
            "predicted": top[0],
            "methods": methods,
            "result_id": result_id,
            "download_url": f"/api/results/{result_id}.zip",
            "seconds": {
                "explain": round(t_explain, 4),
                "metrics": round(t_metrics, 4),
                "total": round(time.perf_counter() - t_start, 4),
            },
        }

    def _metric_settings(self, settings: Settings, has_mask: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if settings.metrics:
            out["deletion"] = {"steps": settings.steps, "baseline": "zero"}
            out["insertion"] = {"steps": settings.steps, "baseline": "zero"}
        if has_mask:
            out["pointing_game"] = {"tolerance": 15}
        return out

    def _scores(
        self,
        model: Model,
        x: torch.Tensor,
        maps: list[torch.Tensor],
        target: int,
        mask: np.ndarray | None,
        settings: Settings,
    ) -> tuple[dict[str, list[Any]], float]:
        """Deletion/insertion AUC and pointing game of every map; one batched metric call per map grid."""
        n = len(maps)
        out: dict[str, list[Any]] = {"deletion": [None] * n, "insertion": [None] * n, "pointing_game": [None] * n}
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, m in enumerate(maps):
            groups.setdefault(tuple(m.shape), []).append(i)
        t0 = time.perf_counter()
        for idx in groups.values():
            mm = torch.cat([maps[i] for i in idx])
            xx = x.expand(len(idx), *x.shape[1:])
            tt = torch.full((len(idx),), target, dtype=torch.long)
            if settings.metrics:
                for name in ("deletion", "insertion"):
                    patches = _patch_count(get_metric(name, progress=False), model, x)
                    metric = get_metric(name, steps=min(settings.steps, patches), baseline="zero", progress=False)
                    res = metric(model, xx, mm, target=tt)
                    for j, i in enumerate(idx):
                        out[name][i] = _finite(float(res.scores[j]))
            if mask is not None and mask.any():
                masks = torch.from_numpy(np.ascontiguousarray(mask))[None].expand(len(idx), *mask.shape)
                res = get_metric("pointing_game")(None, xx, mm, masks=masks)
                for j, i in enumerate(idx):
                    v = _finite(float(res.scores[j]))
                    out["pointing_game"][i] = None if v is None else ("hit" if v > 0.5 else "miss")
        return out, time.perf_counter() - t0

    # ----------------------------------------------------------------------------------------- download
    def download(self, result_id: str, opacity: float = 0.5) -> bytes:
        result = self.results.get(result_id)
        if result is None:
            raise KeyError(result_id)
        return render.build_zip(result, opacity)


def _patch_count(metric, model: Model, x: torch.Tensor) -> int:
    h, w = x.shape[-2:]
    ph, pw = metric.patch_size(model, (h, w))
    return (-(-h // ph)) * (-(-w // pw))


def render_value(v: Any) -> Any:
    return v if isinstance(v, (str, int, float, bool)) or v is None else repr(v)
