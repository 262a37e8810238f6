"""Run a study: every (dataset, model, explainer) over batches of images, every metric on each batch.

Work is split into units (one batch of one dataset × model × explainer); each finished unit is stored at
once (see :mod:`vitlens.bench.store`), so killing the run loses at most the unit in progress, and
rerunning the same command computes only what is missing. Explainers that do not apply to a model
(attention methods on a CNN) are recorded as skipped with the reason.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ExplainerError, InputWarning
from ..explainers import get_explainer
from ..metrics import get_metric
from ..models import Model, load_model
from .config import ConfigError, StudyConfig, load_config
from .sources import ModelBatch, make_source
from .store import ResultsStore, unit_id


def _check_classes(model: Model, dataset, classes: list[str]) -> None:
    if dataset.labels == "ignore":
        return
    hint = " (set labels: ignore on the data set to score a model of other classes against its masks)"
    if model.class_names is not None and list(model.class_names) != classes:
        raise ConfigError(
            f"model {model.name!r} has classes {model.class_names}, dataset {dataset.name!r} has {classes}" + hint
        )
    if model.num_classes != len(classes):
        raise ConfigError(
            f"model {model.name!r} has {model.num_classes} classes, dataset {dataset.name!r} {len(classes)}" + hint
        )


def plan(cfg: StudyConfig, sources: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every unit of the study, in run order."""
    units = []
    sources = sources if sources is not None else {ds.name: make_source(ds) for ds in cfg.datasets}
    for ds in cfg.datasets:
        ids = sources[ds.name].ids()
        for model_spec in ds.models:
            for expl in cfg.explainers:
                for b in range(0, len(ids), cfg.batch_size):
                    chunk = ids[b : b + cfg.batch_size]
                    key = (ds.name, model_spec, expl.key, chunk[0], chunk[-1], cfg.seed)
                    units.append(
                        {"id": unit_id(*key), "dataset": ds, "model": model_spec, "explainer": expl, "ids": chunk}
                    )
    return units


def _rows(unit, batch: ModelBatch, metric_key: str, metric_name: str, res, expl_out, model: Model) -> list[dict]:
    pred = expl_out.logits.argmax(-1).cpu().numpy()
    target = expl_out.target.cpu().numpy()
    outputs = {"score": res.scores, **res.extra}
    rows = []
    expl = unit["explainer"]
    labels = batch.labels if unit["dataset"].labels == "match" else np.full(len(batch.labels), -1)
    for out_name, values in outputs.items():
        vals = values.cpu().numpy()
        for i, image_id in enumerate(batch.image_ids):
            curve = res.curves[i].cpu().numpy().tolist() if (res.curves is not None and out_name == "score") else None
            rows.append(
                {
                    "dataset": unit["dataset"].name,
                    "model": unit["model"],
                    "explainer": expl.name,
                    "explainer_key": expl.key,
                    "explainer_params": json.dumps(expl.params, sort_keys=True),
                    "metric": metric_name,
                    "metric_key": metric_key,
                    "output": out_name,
                    "image_id": int(image_id),
                    "image": batch.keys[i],
                    "value": float(vals[i]),
                    "curve": curve,
                    "true": int(labels[i]),
                    "predicted": int(pred[i]),
                    "target": int(target[i]),
                    "correct": bool(pred[i] == labels[i]),
                }
            )
    return rows


def _metric(comp):
    """The metric of a config entry; per-metric progress bars are off unless asked for (the run has one)."""
    from ..metrics import metric_info

    params = dict(comp.params)
    if "progress" in metric_info(comp.name)["params"]:
        params.setdefault("progress", False)
    return get_metric(comp.name, **params)


def run_study(cfg: StudyConfig | str | Path, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a study into ``run_dir``; returns counts of done, skipped and newly computed units."""
    from tqdm.auto import tqdm

    if not isinstance(cfg, StudyConfig):
        cfg = load_config(cfg)
    store = ResultsStore(run_dir)
    cfg_path = Path(run_dir) / "config.json"
    cfg_json = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    if cfg_path.is_file() and cfg_path.read_text() != cfg_json:
        raise ConfigError(f"{run_dir} holds a run of another configuration; use a new run directory")
    cfg_path.write_text(cfg_json)

    sources = {ds.name: make_source(ds) for ds in cfg.datasets}
    prints = {name: src.fingerprint() for name, src in sources.items()}
    prints_path = Path(run_dir) / "datasets.json"
    if prints_path.is_file() and json.loads(prints_path.read_text()) != prints:
        raise ConfigError(
            f"{run_dir}: the images of a data set changed since this run started "
            f"({json.loads(prints_path.read_text())} -> {prints}); use a new run directory"
        )
    prints_path.write_text(json.dumps(prints, indent=2, sort_keys=True))
    units = plan(cfg, sources)
    todo = [u for u in units if store.status(u["id"]) is None]
    metrics = [(m, _metric(m)) for m in cfg.metrics]
    for ds in cfg.datasets:  # say once which configured metrics a data set cannot score, and why
        kinds = sources[ds.name].mask_kinds
        for comp, metric in metrics:
            if comp.mask not in kinds and "region" in type(metric).needs:
                hint = (
                    f"; write them with `vitlens masks {ds.path} --weights PATH`" if comp.mask == "foreground" else ""
                )
                warnings.warn(
                    f"dataset {ds.name!r} has no {comp.mask!r} masks (it has {kinds or 'none'}): "
                    f"metric {comp.key} is not computed on it{hint}",
                    InputWarning,
                    stacklevel=2,
                )
    models: dict[str, Model] = {}
    explainers: dict[tuple[str, str], Any] = {}
    computed = 0
    t0 = time.time()
    with tqdm(total=len(units), initial=len(units) - len(todo), desc=cfg.name, disable=not progress) as bar:
        for unit in todo:
            ds, expl = unit["dataset"], unit["explainer"]
            if unit["model"] not in models:
                models[unit["model"]] = load_model(unit["model"], seed=cfg.seed)
                _check_classes(models[unit["model"]], ds, sources[ds.name].classes)
            model = models[unit["model"]]
            ek = (unit["model"], expl.key)
            if ek not in explainers:
                try:
                    explainers[ek] = get_explainer(expl.name, model, **expl.params)
                except ExplainerError as e:  # parameters were validated with the config: it does not apply
                    explainers[ek] = e
            explainer = explainers[ek]
            if isinstance(explainer, Exception):
                store.mark(
                    unit["id"],
                    {
                        "status": "skipped",
                        "reason": str(explainer),
                        "dataset": ds.name,
                        "model": unit["model"],
                        "explainer": expl.key,
                    },
                )
                bar.update(1)
                continue
            batch = sources[ds.name].batch(unit["ids"], cfg.seed, model)
            x, masks = batch.x, batch.masks
            crops = unit_id(ds.name, unit["model"], "crops", unit["ids"][0], unit["ids"][-1], cfg.seed)
            if not store.has_crops(crops):
                evidence = masks.get("evidence")
                store.write_crops(
                    crops, batch.display, unit["ids"], batch.keys, None if evidence is None else evidence.numpy()
                )
            target = None  # the predicted class
            if ds.target == "label":
                if (batch.labels < 0).any():
                    raise ConfigError(f"dataset {ds.name!r}: target: label, but some images have no label")
                target = torch.from_numpy(batch.labels)
            out = explainer.explain(x, target)
            rows = []
            for comp, metric in metrics:
                region, boxes = masks.get(comp.mask), batch.boxes if comp.mask in ("evidence", "box") else None
                if region is None:
                    if "region" in type(metric).needs:
                        continue  # e.g. the shortcut marker on other benchmarks, masks a data set lacks
                    boxes = None
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # NaN scores are recorded as NaN; the report counts them
                    res = metric(model, x, out.maps, target=out.target, masks=region, boxes=boxes)
                rows += _rows(unit, batch, comp.key, comp.name, res, out, model)
            store.write_unit(
                unit["id"],
                rows,
                out.maps.cpu().numpy(),
                unit["ids"],
                {
                    "dataset": ds.name,
                    "model": unit["model"],
                    "explainer": expl.key,
                    "first_image": unit["ids"][0],
                    "n_images": len(unit["ids"]),
                    "crops": crops,
                },
            )
            computed += 1
            bar.update(1)
    statuses = [store.status(u["id"]) or {} for u in units]
    return {
        "units": len(units),
        "done": sum(s.get("status") == "done" for s in statuses),
        "skipped": sum(s.get("status") == "skipped" for s in statuses),
        "computed_now": computed,
        "seconds": round(time.time() - t0, 1),
        "run_dir": str(run_dir),
    }
