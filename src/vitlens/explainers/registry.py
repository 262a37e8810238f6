"""Explainers registered by name: ``get_explainer("rollout", model, head_fusion="max")``."""

from __future__ import annotations

from typing import Any

from ..errors import ExplainerError, VitlensError
from ..models import Model, load_model
from .base import Explainer

_REGISTRY: dict[str, type[Explainer]] = {}


def register(cls: type[Explainer]) -> type[Explainer]:
    """Class decorator: add an explainer under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"explainer name {cls.name!r} is empty or registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def list_explainers() -> list[str]:
    return sorted(_REGISTRY)


def explainer_class(name: str) -> type[Explainer]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ExplainerError(f"unknown explainer {name!r}; registered: {', '.join(list_explainers())}") from None


def get_explainer(name: str, model: Model | Any, **params: Any) -> Explainer:
    """Instantiate a registered explainer for ``model`` (a Model, a spec string or an nn.Module)."""
    cls = explainer_class(name)
    allowed = cls.param_names()
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ExplainerError(
            f"explainer {name!r} has no parameter {', '.join(unknown)}; its parameters: {allowed or 'none'}"
        )
    return cls(model if isinstance(model, Model) else load_model(model), **params)


def applicable_explainers(model: Model) -> list[str]:
    """Names of the registered explainers that run on ``model`` (the others raise a VitlensError saying why)."""
    names = []
    for name, cls in sorted(_REGISTRY.items()):
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
        "summary": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else "",
    }
