"""Explainers, registered by name (``vitlens.list_explainers()``); importing this package registers them."""

from . import attention, cam, chefer, gradient, lrp, perturbation, relevance  # noqa: F401  (registration side effects)
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
