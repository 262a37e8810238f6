"""Explainers, registered by name (``vitlens.list_explainers()``); importing this package registers them."""

from . import (  # noqa: F401  (registration side effects)
    agcam,
    attention,
    cam,
    flow,
    gradient_rollout,
    gradients,
    isaw,
    legrad,
    lrp,
    perturbation,
    relevance,
    sampling,
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
