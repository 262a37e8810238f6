"""Explainers, registered by name (``vitlens.list_explainers()``); importing this package registers them."""

from . import (  # noqa: F401  (registration side effects)
    attention,
    attention_methods,
    cam,
    chefer,
    flow,
    gradient,
    lrp,
    perturbation,
    relevance,
)
from .base import Explainer, Explanation
from .registry import applicable_explainers, explainer_class, explainer_info, get_explainer, list_explainers

__all__ = [
    "Explainer",
    "Explanation",
    "applicable_explainers",
    "explainer_class",
    "explainer_info",
    "get_explainer",
    "list_explainers",
]
