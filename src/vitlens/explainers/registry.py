"""Explainers registered by name: ``get_explainer("rollout", model, head_fusion="max")``."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ExplainerError, VitlensError
from ..models import Model, load_model
from ..registry import Registry, ranges_info
from .base import Explainer

EXPLAINERS: Registry[Explainer] = Registry("explainer", ExplainerError)
register = EXPLAINERS.register


def list_explainers() -> list[str]:
    return EXPLAINERS.names()


def explainer_class(name: str) -> type[Explainer]:
    return EXPLAINERS.get(name)


def get_explainer(name: str, model: Model | Any, **params: Any) -> Explainer:
    """Instantiate a registered explainer for ``model`` (a Model, a spec string or an nn.Module)."""
    cls = explainer_class(name)
    EXPLAINERS.check_params(name, params, cls.param_names())
    return cls(model if isinstance(model, Model) else load_model(model), **params)


def applicable_explainers(model: Model) -> list[str]:
    """Names of the registered explainers that run on ``model`` (the others raise a VitlensError saying why)."""
    names = []
    for name, cls in EXPLAINERS.items():
        try:
            cls(model)
        except VitlensError:
            continue
        names.append(name)
    return names


def explainer_info(name: str) -> dict[str, Any]:
    cls = explainer_class(name)
    return {
        "name": name,
        "citation": cls.citation,
        "class_specific": cls.class_specific,
        "signed": cls.signed,
        "needs_attention": cls.needs_attention,
        "resolution": cls.resolution,
        "params": cls.param_names(),
        "defaults": {
            p: v.default
            for p, v in inspect.signature(cls.__init__).parameters.items()
            if p in cls.param_names() and v.default is not inspect.Parameter.empty
        },
        "ranges": ranges_info(cls.param_ranges),
        "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
    }
