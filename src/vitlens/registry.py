"""The one registry mechanism and the one set of parameter checks, for explainers and metrics alike.

A :class:`Registry` maps names to classes: a decorator registers a class under its ``name`` (empty or
duplicate names are a bug and raise at import time), lookups of unknown names and unknown parameters raise
the registry's own :class:`~vitlens.errors.VitlensError` subclass naming what is valid, and listing is
sorted. Parameter checks (:func:`check_choice`, :func:`check_number`) raise the caller's error class with one
message format, so that a bad value reads the same from Python, the CLI, the web app and a study config.
Classes may declare numeric bounds as data (``param_ranges``), which the checks and the web app's form
fields both read.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from .errors import VitlensError, did_you_mean

T = TypeVar("T")

#: ``param -> (lo, hi, hi_open)``: a number in ``[lo, hi]``, or ``[lo, hi)`` when ``hi_open``.
ParamRanges = dict[str, tuple[float, float, bool]]


class Registry(Generic[T]):
    """Classes registered by their ``name`` attribute (``kind``: "explainer", "metric")."""

    def __init__(self, kind: str, error: type[VitlensError]) -> None:
        self.kind = kind
        self.error = error
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: add ``cls`` under ``cls.name``."""
        name = getattr(cls, "name", "")
        if not name or name in self._classes:
            raise ValueError(f"{self.kind} name {name!r} is empty or registered twice")
        self._classes[name] = cls
        return cls

    def names(self) -> list[str]:
        return sorted(self._classes)

    def items(self) -> Iterator[tuple[str, type[T]]]:
        return iter(sorted(self._classes.items()))

    def get(self, name: str) -> type[T]:
        try:
            return self._classes[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self.names())}; registered: {', '.join(self.names())}"
            ) from None

    def check_params(self, name: str, params: dict[str, Any], allowed: Sequence[str]) -> None:
        unknown = sorted(set(params) - set(allowed))
        if unknown:
            hint = did_you_mean(unknown[0], allowed) if len(unknown) == 1 else ""
            raise self.error(
                f"{self.kind} {name!r} has no parameter {', '.join(unknown)}{hint}; its parameters: "
                f"{list(allowed) or 'none'}"
            )


def _interval(lo: float, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    top = "∞)" if hi is None else f"{hi}{')' if hi_open else ']'}"
    return f"{'(' if lo_open else '['}{lo}, {top}"


def check_choice(
    name: str, value: Any, choices: Sequence[Any], *, error: type[VitlensError] = VitlensError, prefix: str = ""
) -> Any:
    """``value`` if it is one of ``choices``, else ``error`` naming them."""
    if value not in choices:
        raise error(f"{prefix}{name}={value!r} is not valid; choose one of {list(choices)}")
    return value


def check_number(
    name: str,
    value: Any,
    lo: float,
    hi: float | None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
    coerce: bool = False,
    error: type[VitlensError] = VitlensError,
    prefix: str = "",
) -> Any:
    """A number (an int when ``integer``; bools rejected; NaN rejected) in the interval from ``lo`` to ``hi``
    (``None``: unbounded above). ``coerce``: text or other numeric types are read with ``float()``."""
    kind = "an integer" if integer else "a number"
    given = value
    if coerce and not integer and not isinstance(value, bool):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise error(f"{prefix}{name} must be {kind}, got {given!r}") from None
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise error(f"{prefix}{name} must be {kind}, got {given!r}")
    ok = (lo < value if lo_open else lo <= value) and (hi is None or (value < hi if hi_open else value <= hi))
    if not ok or (isinstance(value, float) and math.isnan(value)):
        raise error(f"{prefix}{name}={given!r} is out of range {_interval(lo, hi, lo_open, hi_open)}")
    return value


def ranges_info(ranges: ParamRanges) -> dict[str, dict[str, Any]]:
    """``param_ranges`` as JSON-ready ``{param: {"min", "max", "max_open"}}`` (registry listings, the app)."""
    return {k: {"min": lo, "max": hi, "max_open": bool(open_)} for k, (lo, hi, open_) in ranges.items()}
