"""vitlens.specs: the parsing every shell shares, and the one target-class rule (hand-written expectations)."""

from __future__ import annotations

import pytest
import torch

import vitlens
from vitlens.bench.config import ConfigError, parse_config
from vitlens.specs import method_label, parse_kwargs, parse_method, parse_value, resolve_target


class _Named:
    """The two attributes the rule reads, for class names chosen to make the rule's order visible."""

    name = "toy"

    def __init__(self, names: list[str]) -> None:
        self.class_names = names
        self.num_classes = len(names)

    def class_name(self, i: int) -> str:
        return self.class_names[i]


def test_parse_value():
    assert parse_value("0.9") == 0.9 and isinstance(parse_value("3"), int)
    assert parse_value("TRUE") is True and parse_value("false") is False
    assert parse_value("none") is None and parse_value("null") is None
    assert parse_value("max") == "max" and parse_value("-2") == -2


def test_parse_method_and_label():
    assert parse_method(" rollout ") == ("rollout", {})
    assert parse_method("rollout:head_fusion=max:discard_ratio=0.9") == (
        "rollout",
        {"head_fusion": "max", "discard_ratio": 0.9},
    )
    assert method_label("rollout", {"discard_ratio": 0.9, "head_fusion": "max"}) == (
        "rollout_discard_ratio-0.9_head_fusion-max"
    )  # sorted by key
    for bad in ("rollout:max", ":a=1", "rollout:=1"):
        with pytest.raises(vitlens.InputError):
            parse_method(bad)


def test_parse_kwargs_tuples_and_errors():
    assert parse_kwargs("img_size=112,depths=(2,2),num_heads=[1,2],drop=0.1") == {
        "img_size": 112,
        "depths": (2, 2),
        "num_heads": (1, 2),
        "drop": 0.1,
    }
    assert parse_kwargs(None) == {} and parse_kwargs(" , ") == {}
    with pytest.raises(vitlens.InputError, match="--model-kwargs entry 'depth'"):
        parse_kwargs("depth")


def test_target_rule_names_first_then_indices():
    m = _Named(["cat", "dog", "0"])
    assert resolve_target(None, m) is None and resolve_target("  ", m) is None
    assert resolve_target(1, m) == 1
    assert resolve_target("dog", m) == 1
    assert resolve_target(" 2 ", m) == 2  # no class is named "2": an index
    assert resolve_target("0", m) == 2  # a class *named* "0" wins over index 0
    for bad, match in (
        (3, "out of range"),
        (-1, "out of range"),
        ("7", "out of range"),
        ("bird", "neither"),
        (True, "class index or a class name"),
        (1.5, "class index or a class name"),
    ):
        with pytest.raises(vitlens.InputError, match=match):
            resolve_target(bad, m)


def test_cli_app_and_explainers_follow_the_same_rule(tmp_path):
    """The CLI's ``--target NAME`` and the app's ``target`` field give the class of that name."""
    from vitlens.app.service import Service, parse_settings

    model = vitlens.load_model("builtin:cells_vit")
    name = model.class_name(2)
    service = Service({"builtin:cells_vit": model})
    out = service.explain(
        parse_settings(
            {
                "model": "builtin:cells_vit",
                "sample": "cells/0",
                "methods": ["rollout", "gradcam"],
                "metrics": False,
                "target": name,
            },
            need_methods=True,
        )
    )
    assert out["target"]["index"] == 2 and {m["target"] for m in out["methods"]} == {2}

    from PIL import Image

    from vitlens.explain_files import explain_files

    Image.fromarray(torch.zeros(112, 112, 3, dtype=torch.uint8).numpy()).save(tmp_path / "a.png")
    records = explain_files([tmp_path / "a.png"], "", ["gradcam"], tmp_path / "out", model=model, target=name)
    assert records[0]["targets"] == {"gradcam": 2}


def test_study_config_reads_method_specs():
    cfg = parse_config(
        {
            "datasets": [{"builtin": "cells", "n": 2, "models": ["builtin:cells_vit"]}],
            "explainers": ["rollout:head_fusion=max:discard_ratio=0.5", "gradcam"],
            "metrics": ["pointing_game"],
        }
    )
    assert [(e.name, e.params) for e in cfg.explainers] == [
        ("rollout", {"head_fusion": "max", "discard_ratio": 0.5}),
        ("gradcam", {}),
    ]
    with pytest.raises(ConfigError, match=r"explainers\[0\].*not key=value"):
        parse_config(
            {
                "datasets": [{"builtin": "cells", "n": 2, "models": ["builtin:cells_vit"]}],
                "explainers": ["rollout:max"],
                "metrics": ["pointing_game"],
            }
        )
