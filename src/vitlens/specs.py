"""Text specs that users type, parsed in one place for the CLI, the web app and study configs.

* Method specs ``NAME[:key=value[:key=value...]]`` (``rollout:head_fusion=max:discard_ratio=0.9``) and the
  file-name-safe label of a method with its parameters.
* Parameter values: ``0.9`` -> 0.9, ``3`` -> 3, ``true`` -> True, ``none`` -> None, other text stays text.
* Constructor keyword lists ``img_size=112,depths=(2,2)`` (bracketed values are tuples).
* The target-class rule (:func:`resolve_target`): what ``--target``, the app's ``target`` field and a study's
  ``target:`` policies (:data:`TARGET_POLICIES`) mean.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import InputError, did_you_mean

#: A study data set's ``target:``: explain the model's ``predicted`` class, or the image's ``label``.
TARGET_POLICIES = ("predicted", "label")


def parse_value(text: str) -> Any:
    """'0.9' -> 0.9, '3' -> 3, 'true' -> True, 'none' -> None, anything else stays a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``NAME[:key=value[:key=value...]]`` -> (name, params), e.g. ``rollout:head_fusion=max:discard_ratio=0.9``."""
    name, *parts = spec.strip().split(":")
    params: dict[str, Any] = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise InputError(f"method parameter {part!r} in {spec!r} is not key=value")
        params[key.strip()] = parse_value(value.strip())
    if not name:
        raise InputError(f"empty method name in {spec!r}")
    return name, params


def method_label(name: str, params: dict[str, Any]) -> str:
    """File-name-safe label: ``rollout`` or ``rollout_head_fusion-max_discard_ratio-0.9``."""
    if not params:
        return name
    return name + "_" + "_".join(f"{k}-{v}" for k, v in sorted(params.items()))


def parse_kwargs(text: str | None, what: str = "--model-kwargs") -> dict[str, Any]:
    """``img_size=112,patch_size=8`` -> {"img_size": 112, "patch_size": 8}; a bracketed value is a tuple:
    ``depths=(2,2),num_heads=[1,2]`` -> {"depths": (2, 2), "num_heads": (1, 2)}."""
    out: dict[str, Any] = {}
    for part in re.split(r",(?![^()\[\]]*[)\]])", text or ""):  # commas outside brackets
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{what} entry {part!r} is not key=value")
        value = value.strip()
        if value[:1] in "([" and value[-1:] in ")]":
            out[key.strip()] = tuple(parse_value(v.strip()) for v in value[1:-1].split(",") if v.strip())
        else:
            out[key.strip()] = parse_value(value)
    return out


def resolve_target(target: int | str | None, model: Any) -> int | None:
    """The one target-class rule: ``None`` (or empty text) is the predicted class (returned as None); an int is
    a class index; text is first matched exactly against the model's class names (so that a data set whose
    classes are named ``"0"``, ``"1"``, … gets the class of that *name*), else read as an integer index.
    The index is checked against ``model.num_classes``; anything else is an :class:`InputError`."""
    if target is None:
        return None
    if isinstance(target, bool):
        raise InputError(f"target must be a class index or a class name, got {target!r}")
    if isinstance(target, str):
        text = target.strip()
        if not text:
            return None
        names = [model.class_name(i) for i in range(model.num_classes)]
        if text in names:
            return names.index(text)
        try:
            index = int(text)
        except ValueError:
            shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
            raise InputError(
                f"target {target!r} is neither a class index nor a class name of {model.name!r}"
                f"{did_you_mean(text, names)}; its classes: {shown}"
            ) from None
    elif isinstance(target, int):
        index = target
    else:
        raise InputError(f"target must be a class index or a class name, got {target!r}")
    if not 0 <= index < model.num_classes:
        raise InputError(
            f"target class {index} is out of range: model {model.name!r} has classes 0..{model.num_classes - 1}"
        )
    return index


def check_target_policy(value: Any, where: str) -> str:
    """A study data set's ``target:``, one of :data:`TARGET_POLICIES`."""
    if value not in TARGET_POLICIES:
        raise InputError(f"{where}: 'target' must be one of {list(TARGET_POLICIES)}, got {value!r}")
    return str(value)
