"""vitlens.registry: one mechanism for explainers and metrics (registration, lookup, parameters, ranges)."""

from __future__ import annotations

import math

import pytest

import vitlens
from vitlens.errors import ExplainerError, MetricError
from vitlens.registry import Registry, check_choice, check_number


def test_registry_refuses_empty_and_duplicate_names_and_names_the_valid_ones():
    reg: Registry = Registry("widget", MetricError)

    @reg.register
    class A:
        name = "a"

    with pytest.raises(ValueError, match="registered twice"):
        reg.register(type("A2", (), {"name": "a"}))
    with pytest.raises(ValueError, match="empty"):
        reg.register(type("E", (), {"name": ""}))
    assert reg.get("a") is A and reg.names() == ["a"]
    with pytest.raises(MetricError, match="unknown widget 'b'; registered: a"):
        reg.get("b")
    with pytest.raises(MetricError, match=r"widget 'a' has no parameter x, y; its parameters: \['k'\]"):
        reg.check_params("a", {"y": 1, "x": 2}, ["k"])


def test_checks_raise_the_callers_error_with_one_format():
    assert check_choice("f", "max", ("mean", "max")) == "max"
    with pytest.raises(ExplainerError, match=r"f='sum' is not valid; choose one of \['mean', 'max'\]"):
        check_choice("f", "sum", ("mean", "max"), error=ExplainerError)
    assert check_number("p", 1, 0, 1) == 1 and check_number("n", 5, 1, None, integer=True) == 5
    for bad, match in (
        (1.0, r"out of range \[0, 1\)"),
        (math.nan, "out of range"),
        (True, "must be a number"),
        ("x", "must be a number"),
    ):
        with pytest.raises(MetricError, match=match):
            check_number("p", bad, 0, 1, hi_open=True, error=MetricError, prefix="metric 'm': ")
    with pytest.raises(MetricError, match=r"\(0, 1\]"):
        check_number("p", 0, 0, 1, lo_open=True, error=MetricError)
    with pytest.raises(MetricError, match=r"\[1, ∞\)"):
        check_number("n", 0, 1, None, integer=True, error=MetricError)
    assert check_number("p", "0.5", 0, 1, coerce=True) == 0.5


def test_declared_ranges_are_what_the_constructor_accepts():
    model = vitlens.load_model("builtin:cells_vit")
    info = vitlens.explainer_info("rollout")["ranges"]
    assert info == {
        "discard_ratio": {"min": 0.0, "max": 1.0, "max_open": True},
        "alpha": {"min": 0.0, "max": 1.0, "max_open": False},
    }
    vitlens.get_explainer("rollout", model, discard_ratio=0.999, alpha=1.0)
    with pytest.raises(ExplainerError, match=r"discard_ratio=1.0 is out of range \[0.0, 1.0\)"):
        vitlens.get_explainer("rollout", model, discard_ratio=1.0)
    assert vitlens.explainer_info("attention_flow")["ranges"]["alpha"]["max"] == 1.0


def test_the_app_form_uses_the_declared_ranges():
    from vitlens.app.catalog import method_specs

    model = vitlens.load_model("builtin:cells_vit")
    fields = {p["name"]: p for m in method_specs(model) if m["name"] == "rollout" for p in m["params"]}
    assert fields["discard_ratio"]["min"] == 0.0 and fields["discard_ratio"]["max"] == 1.0
    assert fields["discard_ratio"]["max_open"] is True  # 0.99 (and 0.999) are valid; 1.0 is refused
