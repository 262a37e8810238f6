"""Study configuration: models × explainers × datasets × metrics, from YAML or TOML.

```yaml
name: attention-study
seed: 0
batch_size: 16
device: auto                    # auto | cpu | cuda[:N] | mps (--device overrides; not part of the run's identity)
precision: fp32                 # fp32 | bf16 | fp16: the model forwards of explainers and metrics
memory_budget_mb: 4096          # perturbation-metric forwards chunked to fit (default: the metrics' batch_size)
datasets:
  - name: cells                 # a label for tables
    builtin: cells              # a builtin benchmark (split: test by default) ...
    n: 64
    models: [builtin:cells_vit, builtin:cells_cnn]
explainers:                     # each runs on every model it applies to; others are recorded as skipped
  - rollout
  - {name: rollout, params: {head_fusion: max, discard_ratio: 0.9}}
metrics:
  - pointing_game
  - {name: deletion, params: {steps: 28}}
```
Builtin configs ship in ``vitlens/bench/configs`` and are named ``builtin:<name>``.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..devices import PRECISIONS
from ..errors import VitlensError
from ..specs import check_target_policy, parse_method

CONFIG_DIR = Path(__file__).parent / "configs"
TOP_KEYS = frozenset(
    {"name", "seed", "batch_size", "device", "precision", "memory_budget_mb", "datasets", "explainers", "metrics"}
)


class ConfigError(VitlensError):
    """A study configuration that cannot be run."""


@dataclass(frozen=True)
class Component:
    """A named explainer or metric with its parameters; ``key`` identifies it in the results store."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    mask: str = "evidence"  # metrics only: which ground-truth mask to score against ("evidence" or an extra mask)

    @property
    def key(self) -> str:
        key = self.name
        if self.params:
            key += "(" + ",".join(f"{k}={self.params[k]}" for k in sorted(self.params)) + ")"
        return key if self.mask == "evidence" else f"{key}[{self.mask}]"


@dataclass(frozen=True)
class DatasetSpec:
    """One data set of a study: a builtin benchmark (``builtin``) or a directory on disk (``path``).

    Disk data sets: ``layout`` (auto-detected by default), ``split`` (the layout's split or vitlens' seeded
    80/10/10 one; ``all`` for every image), ``classes`` (only images of these classes, e.g. the
    disease-positive ones as in the attention-map evaluation of arXiv:2503.09535), ``n`` images from
    ``start`` (all when omitted),
    ``foreground_masks`` (``auto``: the ``vitlens masks`` cache in the data set if present; a directory; or
    ``none``), ``labels`` (``match``: the model's classes must be the data set's; ``ignore``: e.g. an
    ImageNet model on Pascal VOC, where only the masks matter) and ``target`` (explain the ``predicted``
    class, or the ``label``; :data:`vitlens.specs.TARGET_POLICIES`).
    """

    name: str
    models: list[str]
    builtin: str | None = None
    split: str = "test"
    n: int | None = 64
    start: int = 0
    path: str | None = None
    layout: str = "auto"
    classes: list[str] | None = None
    split_seed: int = 0
    foreground_masks: str | None = "auto"
    labels: str = "match"
    target: str = "predicted"


@dataclass
class StudyConfig:
    name: str
    datasets: list[DatasetSpec]
    explainers: list[Component]
    metrics: list[Component]
    seed: int = 0
    batch_size: int = 16
    source: str = ""
    device: str = "auto"  # where it runs: not part of the results' identity (a run may resume elsewhere)
    precision: str = "fp32"
    memory_budget_mb: float | None = None  # chunking only: not part of the results' identity

    def to_dict(self) -> dict[str, Any]:
        """What identifies the results: a run directory holds the results of one such dict."""
        out = {
            "name": self.name,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "datasets": [d.__dict__ for d in self.datasets],
            "explainers": [{"name": c.name, "params": c.params} for c in self.explainers],
            "metrics": [{"name": c.name, "params": c.params, "mask": c.mask} for c in self.metrics],
        }
        if self.precision != "fp32":  # (runs made before precision existed are fp32 and keep their identity)
            out["precision"] = self.precision
        return out


def _component(raw: Any, where: str) -> Component:
    if isinstance(raw, str):  # NAME or NAME:key=value[:key=value...], as on the command line
        try:
            name, params = parse_method(raw)
        except VitlensError as e:
            raise ConfigError(f"{where}: {e}") from None
        return Component(name, params)
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        params = raw.get("params", {}) or {}
        extra = set(raw) - {"name", "params", "mask"}
        if not isinstance(params, dict) or extra:
            raise ConfigError(
                f"{where}: entries are NAME[:key=value...] or {{name: NAME, params: {{...}}}}, got {raw!r}"
            )
        return Component(raw["name"], dict(params), str(raw.get("mask", "evidence")))
    raise ConfigError(f"{where}: entries are NAME[:key=value...] or {{name: NAME, params: {{...}}}}, got {raw!r}")


def _dataset(raw: Any, where: str, base_dir: Path | None = None) -> DatasetSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a dataset is a mapping with name, builtin, n and models, got {raw!r}")
    known = {
        "name",
        "builtin",
        "path",
        "layout",
        "split",
        "split_seed",
        "classes",
        "n",
        "start",
        "models",
        "foreground_masks",
        "labels",
        "target",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(known)}")
    raw = {k: v for k, v in raw.items() if v is not None or k == "foreground_masks"}
    if ("builtin" in raw) == ("path" in raw):
        raise ConfigError(f"{where}: give exactly one of 'builtin' (a builtin benchmark) or 'path' (a data set)")
    models = raw.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}: 'models' must be a non-empty list of model specs")
    n = raw.get("n", 64 if "builtin" in raw else None)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"{where}: 'n' must be a positive integer, got {n!r}")
    split = str(raw.get("split", "test"))
    if split not in ("train", "val", "test") and not (split == "all" and "path" in raw):
        raise ConfigError(f"{where}: 'split' must be train, val or test (or all, for a data set on disk)")
    classes = raw.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise ConfigError(f"{where}: 'classes' must be a list of class names, got {classes!r}")
    if raw.get("labels", "match") not in ("match", "ignore"):
        raise ConfigError(f"{where}: 'labels' must be one of ['match', 'ignore'], got {raw['labels']!r}")
    try:
        target = check_target_policy(raw.get("target", "predicted"), where)
    except VitlensError as e:
        raise ConfigError(str(e)) from None
    if raw.get("target") == "label" and raw.get("labels") == "ignore":
        raise ConfigError(f"{where}: target: label needs the model's classes to match (labels: match)")
    path = raw.get("path")
    if path is not None:  # relative to the config file, else to the working directory
        path = str(((base_dir or Path.cwd()) / str(path)).resolve())
    fg = raw.get("foreground_masks", "auto")
    if fg not in (None, "auto", "none"):
        fg = str(((base_dir or Path.cwd()) / str(fg)).resolve())
    return DatasetSpec(
        name=str(raw.get("name", raw.get("builtin") or Path(str(path)).name)),
        models=models,
        builtin=raw.get("builtin"),
        split=split,
        n=n,
        start=int(raw.get("start", 0)),
        path=None if path is None else str(path),
        layout=str(raw.get("layout", "auto")),
        classes=None if classes is None else list(classes),
        split_seed=int(raw.get("split_seed", 0)),
        foreground_masks=None if fg is None else str(fg),
        labels=str(raw.get("labels", "match")),
        target=target,
    )


def parse_config(data: dict[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> StudyConfig:
    """Validate a configuration; relative data set paths are taken relative to ``base_dir`` (the config
    file's folder), else to the working directory."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping")
    for key in ("datasets", "explainers", "metrics"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise ConfigError(f"{source}: '{key}' must be a non-empty list")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; valid: {sorted(TOP_KEYS)}")
    precision = str(data.get("precision", "fp32"))
    if precision not in PRECISIONS:
        raise ConfigError(f"{source}: 'precision' must be one of {list(PRECISIONS)}, got {precision!r}")
    budget = data.get("memory_budget_mb")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0):
        raise ConfigError(f"{source}: 'memory_budget_mb' must be a positive number of MiB, got {budget!r}")
    device = data.get("device", "auto")
    if not isinstance(device, str):
        raise ConfigError(f"{source}: 'device' must be auto, cpu, cuda[:N] or mps, got {device!r}")
    cfg = StudyConfig(
        name=str(data.get("name", Path(source).stem)),
        datasets=[_dataset(d, f"{source}: datasets[{i}]", base_dir) for i, d in enumerate(data["datasets"])],
        explainers=[_component(e, f"{source}: explainers[{i}]") for i, e in enumerate(data["explainers"])],
        metrics=[_component(m, f"{source}: metrics[{i}]") for i, m in enumerate(data["metrics"])],
        seed=int(data.get("seed", 0)),
        batch_size=int(data.get("batch_size", 16)),
        source=source,
        device=device,
        precision=precision,
        memory_budget_mb=None if budget is None else float(budget),
    )
    _validate_names(cfg)
    return cfg


def _validate_names(cfg: StudyConfig) -> None:
    from ..explainers import explainer_class
    from ..metrics import get_metric

    for e in cfg.explainers:
        cls = explainer_class(e.name)
        unknown = sorted(set(e.params) - set(cls.param_names()))
        if unknown:
            raise ConfigError(f"{cfg.source}: explainer {e.name!r} has no parameter {unknown}")
    for m in cfg.metrics:
        get_metric(m.name, **m.params)  # raises a VitlensError naming what is wrong
    names = [d.name for d in cfg.datasets]
    if len(set(names)) != len(names):
        raise ConfigError(f"{cfg.source}: dataset names must be unique, got {names}")


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(spec: str | Path) -> StudyConfig:
    """Read ``builtin:<name>`` or a ``.yaml`` / ``.yml`` / ``.toml`` / ``.json`` file."""
    text_spec = str(spec)
    if text_spec.startswith("builtin:"):
        name = text_spec.split(":", 1)[1]
        path = CONFIG_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown builtin study {name!r}; available: {', '.join(builtin_configs())}")
    else:
        path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"study config {path}: no such file")
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, ValueError) as e:  # yaml.YAMLError and TOMLDecodeError are ValueErrors / subclasses
        raise ConfigError(f"study config {path}: cannot be parsed ({e})") from e
    except Exception as e:  # yaml.YAMLError is not a ValueError
        raise ConfigError(f"study config {path}: cannot be parsed ({type(e).__name__}: {e})") from e
    return parse_config(data, str(path), path.resolve().parent)
