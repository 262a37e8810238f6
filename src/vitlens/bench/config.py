"""Study configuration: models × explainers × datasets × metrics, from YAML or TOML.

```yaml
name: attention-study
seed: 0
batch_size: 16
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

from ..errors import VitlensError

CONFIG_DIR = Path(__file__).parent / "configs"


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
    name: str
    models: list[str]
    builtin: str | None = None
    split: str = "test"
    n: int = 64
    start: int = 0


@dataclass
class StudyConfig:
    name: str
    datasets: list[DatasetSpec]
    explainers: list[Component]
    metrics: list[Component]
    seed: int = 0
    batch_size: int = 16
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "datasets": [d.__dict__ for d in self.datasets],
            "explainers": [{"name": c.name, "params": c.params} for c in self.explainers],
            "metrics": [{"name": c.name, "params": c.params, "mask": c.mask} for c in self.metrics],
        }


def _component(raw: Any, where: str) -> Component:
    if isinstance(raw, str):
        return Component(raw)
    if isinstance(raw, dict) and isinstance(raw.get("name"), str):
        params = raw.get("params", {}) or {}
        extra = set(raw) - {"name", "params", "mask"}
        if not isinstance(params, dict) or extra:
            raise ConfigError(f"{where}: entries are NAME or {{name: NAME, params: {{...}}}}, got {raw!r}")
        return Component(raw["name"], dict(params), str(raw.get("mask", "evidence")))
    raise ConfigError(f"{where}: entries are NAME or {{name: NAME, params: {{...}}}}, got {raw!r}")


def _dataset(raw: Any, where: str) -> DatasetSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a dataset is a mapping with name, builtin, n and models, got {raw!r}")
    known = {"name", "builtin", "split", "n", "start", "models"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {sorted(known)}")
    if "builtin" not in raw:
        raise ConfigError(f"{where}: only builtin benchmarks are supported so far (key 'builtin')")
    models = raw.get("models")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}: 'models' must be a non-empty list of model specs")
    n = raw.get("n", 64)
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"{where}: 'n' must be a positive integer, got {n!r}")
    return DatasetSpec(
        name=str(raw.get("name", raw["builtin"])), models=models, builtin=raw["builtin"],
        split=str(raw.get("split", "test")), n=n, start=int(raw.get("start", 0)),
    )


def parse_config(data: dict[str, Any], source: str = "<dict>") -> StudyConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a mapping")
    for key in ("datasets", "explainers", "metrics"):
        if not isinstance(data.get(key), list) or not data[key]:
            raise ConfigError(f"{source}: '{key}' must be a non-empty list")
    cfg = StudyConfig(
        name=str(data.get("name", Path(source).stem)),
        datasets=[_dataset(d, f"{source}: datasets[{i}]") for i, d in enumerate(data["datasets"])],
        explainers=[_component(e, f"{source}: explainers[{i}]") for i, e in enumerate(data["explainers"])],
        metrics=[_component(m, f"{source}: metrics[{i}]") for i, m in enumerate(data["metrics"])],
        seed=int(data.get("seed", 0)),
        batch_size=int(data.get("batch_size", 16)),
        source=source,
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
    return parse_config(data, str(path))
