"""Run a study: every (dataset, model, explainer) over batches of images, every metric on each batch.

Work is split into units (one batch of one dataset × model × explainer); each finished unit is stored at
once (see :mod:`vitlens.bench.store`), so killing the run loses at most the unit in progress, and
rerunning the same command computes only what is missing. Explainers that do not apply to a model
(attention methods on a CNN) are recorded as skipped with the reason.

The same function runs a study with many workers (``torchrun ... -m vitlens bench``, see
:mod:`vitlens.bench.workers`): every worker plans the same units and takes the next unit index from the
job's store until none is left; rank 0 checks and writes the run's config first and ``run.json`` (counts,
workers, seconds) after every worker has finished. Each unit is logged to ``logs/rank<R>.jsonl`` (worker,
device, seconds, peak device memory). On CUDA, a unit whose explainer runs out of memory is explained again
in halves (and so on, down to one image); perturbation metrics halve their own chunks.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices import check_precision, is_out_of_memory, peak_memory, reset_peak_memory
from ..errors import ExplainerError, InputWarning
from ..explainers import get_explainer
from ..files import atomic_write_json, atomic_write_text
from ..metrics import get_metric
from ..models import Model, load_model
from .config import ConfigError, StudyConfig, load_config
from .sources import ModelBatch, make_source
from .store import ResultsStore, unit_id
from .workers import RunLock, Workers, join, worker_info

log = logging.getLogger("vitlens.bench")


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


def _metric(comp, memory_mb: float | None):
    """The metric of a config entry; per-metric progress bars are off unless asked for (the run has one); the
    study's memory budget goes to metrics that chunk forwards, unless the entry sets its own."""
    from ..metrics import metric_info

    params = dict(comp.params)
    known = metric_info(comp.name)["params"]
    if "progress" in known:
        params.setdefault("progress", False)
    if memory_mb is not None and "memory_mb" in known:
        params.setdefault("memory_mb", memory_mb)
    return get_metric(comp.name, **params)


def explain_halving(explainer, x: torch.Tensor, target: torch.Tensor | None, unit_name: str):
    """``explainer.explain(x, target)``; on out-of-memory the batch is explained in halves (recursively, down
    to one image) and the parts joined. Images are independent in eval mode, so the maps are the same."""
    try:
        return explainer.explain(x, target)
    except (RuntimeError, MemoryError) as e:
        if x.shape[0] == 1 or not (isinstance(e, MemoryError) or is_out_of_memory(e)):
            raise
    if explainer.model.device.type == "cuda":
        torch.cuda.empty_cache()
    half = x.shape[0] // 2
    log.warning("unit %s: out of memory explaining %d images; retrying in halves", unit_name, x.shape[0])
    parts = [
        explain_halving(explainer, x[sl], None if target is None else target[sl], unit_name)
        for sl in (slice(0, half), slice(half, None))
    ]
    first = parts[0]
    return type(first)(
        maps=torch.cat([p.maps for p in parts]),
        logits=torch.cat([p.logits for p in parts]),
        target=torch.cat([p.target for p in parts]),
    )


def _prepare(cfg: StudyConfig, run_dir: Path, sources: dict[str, Any], workers: Workers) -> None:
    """Rank 0 checks the run directory against this config and writes it; every other worker then checks
    that it sees the same files (a run directory must be shared by all workers) and the same data."""
    cfg_json = json.dumps(cfg.to_dict(), indent=2, sort_keys=True)
    prints = {name: src.fingerprint() for name, src in sources.items()}
    problem, token = None, None
    if workers.main:
        try:
            cfg_path, prints_path = run_dir / "config.json", run_dir / "datasets.json"
            if cfg_path.is_file() and cfg_path.read_text() != cfg_json:
                raise ConfigError(f"{run_dir} holds a run of another configuration; use a new run directory")
            if prints_path.is_file() and json.loads(prints_path.read_text()) != prints:
                raise ConfigError(
                    f"{run_dir}: the images of a data set changed since this run started "
                    f"({json.loads(prints_path.read_text())} -> {prints}); use a new run directory"
                )
            atomic_write_text(cfg_path, cfg_json)
            atomic_write_text(prints_path, json.dumps(prints, indent=2, sort_keys=True))
            classes = {name: list(src.classes) for name, src in sources.items()}  # names for the report
            atomic_write_text(run_dir / "classes.json", json.dumps(classes, indent=2))
            ResultsStore(run_dir).remove_partial()  # a killed worker's half-written files
            token = secrets.token_hex(8)
            atomic_write_text(run_dir / ".workers-token", token)
        except ConfigError as e:
            problem = str(e)
    shared = workers.gather((problem, token, cfg_json, prints))
    main_problem, main_token, main_cfg, main_prints = shared[0]
    mine = None
    if main_problem:
        mine = main_problem
    elif not workers.main:
        token_path = run_dir / ".workers-token"
        seen = token_path.read_text() if token_path.is_file() else None
        if seen != main_token:
            mine = (
                f"worker {workers.rank} does not see the run directory {run_dir} that worker 0 wrote: every "
                "worker must write to the same shared filesystem path"
            )
        elif cfg_json != main_cfg:
            mine = f"worker {workers.rank} read another study configuration than worker 0"
        elif prints != main_prints:
            mine = f"worker {workers.rank} sees other images than worker 0 ({prints} vs {main_prints})"
    workers.agree(mine)


def run_study(
    cfg: StudyConfig | str | Path,
    run_dir: str | Path,
    *,
    progress: bool = True,
    device: str | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) a study into ``run_dir``; returns counts of done, skipped and newly computed units.

    ``device`` / ``precision`` override the config's ``device`` / ``precision``. Under torchrun, every
    worker calls this with the same arguments (see the module docstring)."""
    if not isinstance(cfg, StudyConfig):
        cfg = load_config(cfg)
    if precision is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, precision=check_precision(precision))
    run_dir = Path(run_dir)
    with join(device if device is not None else cfg.device) as workers:
        lock, problem = None, None
        if workers.main:
            try:
                lock = RunLock(run_dir)
            except ConfigError as e:
                problem = str(e)
        try:
            workers.agree(problem)  # every worker stops when rank 0 cannot have the run directory
            return _run(cfg, run_dir, workers, progress and workers.main)
        finally:
            if lock is not None:
                lock.release()


def _warn_missing_masks(cfg: StudyConfig, sources: dict[str, Any], metrics) -> None:
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
                    stacklevel=3,
                )


def _run(cfg: StudyConfig, run_dir: Path, workers: Workers, progress: bool) -> dict[str, Any]:
    from tqdm.auto import tqdm

    store = ResultsStore(run_dir)
    sources = {ds.name: make_source(ds) for ds in cfg.datasets}
    _prepare(cfg, run_dir, sources, workers)
    units = plan(cfg, sources)
    metrics = [(m, _metric(m, cfg.memory_budget_mb)) for m in cfg.metrics]
    if workers.main:
        _warn_missing_masks(cfg, sources, metrics)
    log_path = run_dir / "logs" / f"rank{workers.rank}.jsonl"
    log_path.parent.mkdir(exist_ok=True)
    me = worker_info(workers)
    models: dict[str, Model] = {}
    explainers: dict[tuple[str, str], Any] = {}
    computed = 0
    t0 = time.time()
    done_before = sum(store.status(u["id"]) is not None for u in units)
    with (
        tqdm(total=len(units), initial=done_before, desc=cfg.name, disable=not progress) as bar,
        open(log_path, "a") as unit_log,
    ):
        i = workers.take()
        while i < len(units):
            unit = units[i]
            if store.status(unit["id"]) is None:
                t_unit = time.time()
                reset_peak_memory(workers.device)
                status = _run_unit(cfg, unit, store, sources, metrics, models, explainers, workers)
                computed += status == "done"
                entry = {
                    **me,
                    "unit": unit["id"],
                    "index": i,
                    "status": status,
                    "seconds": round(time.time() - t_unit, 3),
                    "finished": round(time.time(), 3),
                    "peak_memory_bytes": peak_memory(workers.device),
                }
                unit_log.write(json.dumps(entry) + "\n")
                unit_log.flush()
                if not workers.distributed:
                    bar.update(1)
            i = workers.take()
            if workers.distributed:  # the job's progress: units handed out so far (rank 0 shows the bar)
                bar.update(max(0, min(i, len(units)) - bar.n))
    counts = workers.gather({"rank": workers.rank, "computed": computed, "device": str(workers.device)})
    statuses = [store.status(u["id"]) or {} for u in units]
    summary = {
        "units": len(units),
        "done": sum(s.get("status") == "done" for s in statuses),
        "skipped": sum(s.get("status") == "skipped" for s in statuses),
        "computed_now": sum(c["computed"] for c in counts),
        "seconds": round(time.time() - t0, 1),
        "run_dir": str(run_dir),
        "workers": workers.world,
    }
    if workers.main:
        atomic_write_json(
            run_dir / "run.json",
            {
                **summary,
                "config": cfg.name,
                "precision": cfg.precision,
                "memory_budget_mb": cfg.memory_budget_mb,
                "per_worker": counts,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            },
        )
    return summary


def _run_unit(cfg, unit, store, sources, metrics, models, explainers, workers) -> str:
    """Compute and store one unit; returns ``"done"`` or ``"skipped"``."""
    ds, expl = unit["dataset"], unit["explainer"]
    if unit["model"] not in models:
        model = load_model(unit["model"], seed=cfg.seed)
        _check_classes(model, ds, sources[ds.name].classes)
        models[unit["model"]] = model.to(workers.device, precision=cfg.precision)
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
        return "skipped"
    batch = sources[ds.name].batch(unit["ids"], cfg.seed, model)
    x, masks = batch.x, batch.masks
    crops = unit_id(ds.name, unit["model"], "crops", unit["ids"][0], unit["ids"][-1], cfg.seed)
    if not store.has_crops(crops):
        evidence = masks.get("evidence")
        store.write_crops(crops, batch.display, unit["ids"], batch.keys, None if evidence is None else evidence.numpy())
    target = None  # the predicted class
    if ds.target == "label":
        if (batch.labels < 0).any():
            raise ConfigError(f"dataset {ds.name!r}: target: label, but some images have no label")
        target = torch.from_numpy(batch.labels)
    out = explain_halving(explainer, x, target, unit["id"])
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
            "device": str(workers.device),
        },
    )
    return "done"
