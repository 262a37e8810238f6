"""Metrics registered by name: ``get_metric("deletion", steps=196, baseline="blur")``."""

from __future__ import annotations

from typing import Any

from ..errors import MetricError
from .base import Metric

_REGISTRY: dict[str, type[Metric]] = {}


def register(cls: type[Metric]) -> type[Metric]:
    """Class decorator: add a metric under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"metric name {cls.name!r} is empty or registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def list_metrics() -> list[str]:
    return sorted(_REGISTRY)


def metric_class(name: str) -> type[Metric]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MetricError(f"unknown metric {name!r}; registered: {', '.join(list_metrics())}") from None


def get_metric(name: str, **params: Any) -> Metric:
    """Instantiate a registered metric; unknown or invalid parameters raise a MetricError naming the valid ones."""
    cls = metric_class(name)
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise MetricError(f"metric {name!r} has no parameter {', '.join(unknown)}; its parameters: {allowed or 'none'}")
    return cls(**params)


def metric_info(name: str) -> dict[str, Any]:
    """What a metric measures and how: citation, score direction (with default parameters), needs, params."""
    cls = metric_class(name)
    default = cls()
    doc = (cls.__doc__ or "").strip()
    return {
        "name": name,
        "citation": cls.citation,
        "higher_is_better": default.higher_is_better,
        "needs": list(cls.needs),
        "curve": cls.curve,
        "params": cls.param_defaults(),
        "summary": doc.splitlines()[0] if doc else "",
    }
