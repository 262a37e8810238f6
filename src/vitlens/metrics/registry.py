"""Metrics registered by name: ``get_metric("deletion", steps=196, baseline="blur")``."""

from __future__ import annotations

from typing import Any

from ..errors import MetricError
from ..registry import Registry
from .base import Metric

METRICS: Registry[Metric] = Registry("metric", MetricError)
register = METRICS.register


def list_metrics() -> list[str]:
    return METRICS.names()


def metric_class(name: str) -> type[Metric]:
    return METRICS.get(name)


def get_metric(name: str, **params: Any) -> Metric:
    """Instantiate a registered metric; unknown or invalid parameters raise a MetricError naming the valid ones."""
    cls = metric_class(name)
    METRICS.check_params(name, params, cls.param_names())
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
