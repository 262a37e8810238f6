"""The study runner (resumable results store) and the report."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

import vitlens
import vitlens.bench.store as store_mod
from vitlens.bench.config import ConfigError, load_config, parse_config
from vitlens.bench.runner import run_study
from vitlens.bench.sources import load_batch, to_model_input
from vitlens.bench.store import ResultsStore
from vitlens.cli import main
from vitlens.report.study import bootstrap_ci, holm, summarise, write_report

TINY = {
    "name": "tiny",
    "seed": 0,
    "batch_size": 2,
    "datasets": [{"name": "cells", "builtin": "cells", "n": 4, "models": ["builtin:cells_vit", "builtin:cells_cnn"]}],
    "explainers": ["rollout", "gradcam"],
    "metrics": ["pointing_game", {"name": "deletion", "params": {"steps": 7}}, "otsu_segmentation"],
}


def test_builtin_study_config_is_valid():
    cfg = load_config("builtin:attention-study")
    assert {d.name for d in cfg.datasets} == {"cells", "ultrasound", "shortcut"}
    assert "relevance_mass[marker]" in [m.key for m in cfg.metrics]


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"explainers": ["nope"]}, "unknown explainer"),
        ({"explainers": [{"name": "rollout", "params": {"fusion": "max"}}]}, "no parameter"),
        ({"metrics": ["nope"]}, "nope"),
        ({"datasets": [{"name": "x", "builtin": "cells", "n": 2, "models": []}]}, "models"),
        ({"datasets": [{"name": "x", "builtin": "cells", "n": 2, "models": ["m"], "colour": 1}]}, "unknown key"),
        ({"metrics": []}, "non-empty"),
    ],
)
def test_bad_configs_are_rejected(patch, needle):
    with pytest.raises(vitlens.VitlensError, match=needle):
        parse_config({**TINY, **patch})


def test_config_files_yaml_and_toml(tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(TINY))
    toml = """name = "tiny"
explainers = ["rollout"]
metrics = ["pointing_game"]
[[datasets]]
name = "cells"
builtin = "cells"
n = 2
models = ["builtin:cells_vit"]
"""
    (tmp_path / "s.toml").write_text(toml)
    assert load_config(tmp_path / "s.yaml").to_dict() == parse_config(TINY).to_dict()
    assert load_config(tmp_path / "s.toml").datasets[0].n == 2
    (tmp_path / "bad.yaml").write_text("datasets: [\n")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="unknown builtin study"):
        load_config("builtin:nope")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    res = run_study(parse_config(TINY), run, progress=False)
    return run, res


def test_run_stores_every_image_metric_and_skips_what_does_not_apply(tiny_run):
    run, res = tiny_run
    # cells_vit: rollout + gradcam; cells_cnn: gradcam only (rollout skipped); 2 batches each
    assert res["units"] == 8 and res["skipped"] == 2 and res["done"] == 6
    frame = ResultsStore(run).frame()
    m = vitlens.load_model("builtin:cells_vit")
    otsu = vitlens.get_metric("otsu_segmentation")(
        m, torch.zeros(1, 3, 112, 112), torch.rand(1, 14, 14), masks=torch.ones(1, 112, 112, dtype=torch.bool)
    )
    expected = {("pointing_game", "score"), ("deletion(steps=7)", "score"), ("otsu_segmentation", "score")}
    expected |= {("otsu_segmentation", k) for k in otsu.extra}
    counts = frame.groupby(["metric_key", "output"]).size()
    assert set(counts.index) == expected
    assert (counts == 3 * 4).all()  # 3 (model, explainer) pairs that apply x 4 images
    assert set(frame.groupby(["model", "explainer_key"]).image_id.nunique()) == {4}
    skipped = [u for u in ResultsStore(run).units() if u["status"] == "skipped"]
    assert all("gradcam" in u["reason"] for u in skipped)


def test_stored_values_equal_direct_metric_calls(tiny_run):
    run, _ = tiny_run
    frame = ResultsStore(run).frame()
    cfg = parse_config(TINY)
    model = vitlens.load_model("builtin:cells_vit")
    batch = load_batch(cfg.datasets[0], [0, 1], 0)
    x, masks = to_model_input(model, batch)
    out = vitlens.get_explainer("rollout", model).explain(x)
    res = vitlens.get_metric("deletion", steps=7)(model, x, out.maps, target=out.target, masks=masks["evidence"])
    stored = frame[
        (frame.model == "builtin:cells_vit")
        & (frame.explainer_key == "rollout")
        & (frame.metric_key == "deletion(steps=7)")
        & (frame.image_id < 2)
    ].sort_values("image_id")
    np.testing.assert_allclose(stored.value.to_numpy(), res.scores.numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.stack(stored.curve.to_list()), res.curves.numpy(), rtol=1e-6)


def test_killed_run_resumes_without_losing_or_redoing_work(tmp_path, monkeypatch, tiny_run):
    real = store_mod.ResultsStore.write_unit
    count = {"n": 0}

    def die_after_three(self, *a, **k):
        if count["n"] == 3:
            raise KeyboardInterrupt
        count["n"] += 1
        return real(self, *a, **k)

    monkeypatch.setattr(store_mod.ResultsStore, "write_unit", die_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_study(parse_config(TINY), tmp_path, progress=False)
    monkeypatch.setattr(store_mod.ResultsStore, "write_unit", real)
    res = run_study(parse_config(TINY), tmp_path, progress=False)
    assert res["computed_now"] == 3 and res["done"] == 6
    key = ["model", "explainer_key", "metric_key", "output", "image_id"]
    a = ResultsStore(tmp_path).frame().sort_values(key).reset_index(drop=True)
    b = ResultsStore(tiny_run[0]).frame().sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(a.drop(columns="curve"), b.drop(columns="curve"))
    assert run_study(parse_config(TINY), tmp_path, progress=False)["computed_now"] == 0
    with pytest.raises(ConfigError, match="another configuration"):
        run_study(parse_config({**TINY, "seed": 1}), tmp_path, progress=False)


def test_bootstrap_and_holm_against_hand_values():
    lo, hi = bootstrap_ci(np.array([1.0, 1.0, 1.0, np.nan]))
    assert lo == hi == 1.0
    v = np.random.default_rng(0).normal(5.0, 1.0, 400)
    lo, hi = bootstrap_ci(v)
    se = v.std(ddof=1) / math.sqrt(v.size)  # the normal-theory interval the bootstrap should approximate
    assert abs(lo - (v.mean() - 1.96 * se)) < 0.03 and abs(hi - (v.mean() + 1.96 * se)) < 0.03
    assert math.isnan(bootstrap_ci(np.array([np.nan]))[0])
    adj = holm([0.01, 0.04, 0.03, math.nan])
    assert adj[0] == pytest.approx(0.03) and adj[2] == pytest.approx(0.06) and adj[1] == pytest.approx(0.06)
    assert math.isnan(adj[3])


def test_summary_means_ranks_and_direction():
    rows = []
    for e, vals in (
        ("a", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ("b", [2.0, 3.0, 4.0, 5.0, 6.0, 7.5]),
        ("c", [0.0, np.nan, 0.0, 0.0, 0.0, 0.0]),
    ):
        for i, v in enumerate(vals):
            for mk in ("up", "down"):
                rows.append(
                    {
                        "dataset": "d",
                        "model": "m",
                        "explainer_key": e,
                        "metric_key": mk,
                        "output": "score",
                        "image_id": i,
                        "value": v,
                    }
                )
    s = summarise(pd.DataFrame(rows), {"up": True, "down": False})
    up = s[s.metric == "up"].set_index("explainer")
    down = s[s.metric == "down"].set_index("explainer")
    assert up.loc["a", "mean"] == pytest.approx(3.5) and up.loc["b", "mean"] == pytest.approx(27.5 / 6)
    assert up.loc["c", "n_nan"] == 1 and up.loc["c", "n"] == 5
    assert list(up.sort_values("rank").index) == ["b", "a", "c"] and bool(up.loc["b", "best"])
    assert list(down.sort_values("rank").index) == ["c", "a", "b"]
    assert up.loc["a", "p_vs_best"] < 0.05  # b > a on every image


def test_report_files_and_cli(tiny_run, tmp_path):
    run, _ = tiny_run
    html = write_report(run, tmp_path).read_text()
    assert "cells · builtin:cells_vit" in html and "rollout" in html and "Not applicable: rollout" in html
    summary = pd.read_csv(tmp_path / "summary.csv")
    frame = ResultsStore(run).frame()
    sel = frame[
        (frame.model == "builtin:cells_vit")
        & (frame.explainer_key == "rollout")
        & (frame.metric_key == "pointing_game")
    ]
    row = summary[
        (summary.model == "builtin:cells_vit") & (summary.explainer == "rollout") & (summary.metric == "pointing_game")
    ].iloc[0]
    assert row["mean"] == pytest.approx(sel.value.mean())
    assert "\\begin{tabular}" in (tmp_path / "tables.tex").read_text()
    assert main(["report", str(run), "--out", str(tmp_path / "cli")]) == 0
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_unit_inputs_follow_the_model_preprocessing():
    cfg = parse_config(TINY)
    model = vitlens.load_model("builtin:cells_vit")
    batch = load_batch(cfg.datasets[0], [3], 0)
    x, masks = to_model_input(model, batch)
    pre = model.preprocessing
    pixels = torch.from_numpy(batch.images).permute(0, 3, 1, 2).float() / 255
    expected = (pixels - torch.tensor(pre.mean)[:, None, None]) / torch.tensor(pre.std)[:, None, None]
    assert torch.allclose(x, expected) and masks["evidence"].dtype == torch.bool
    assert json.loads(json.dumps(cfg.to_dict()))["datasets"][0]["n"] == 4


def test_crops_are_stored_once_per_batch_and_match_the_inputs(tiny_run):
    run, _ = tiny_run
    store = ResultsStore(run)
    done = [u for u in store.units() if u["status"] == "done"]
    ids = {u["crops"] for u in done}
    assert len(ids) == 4  # 2 models x 2 batches, shared by the explainers of a batch
    assert len(list((run / "crops").glob("*.npz"))) == 4
    vit = next(u for u in done if u["model"] == "builtin:cells_vit" and u["first_image"] == 0)
    crops = store.crops(vit["crops"])
    batch = load_batch(parse_config(TINY).datasets[0], [0, 1], 0)  # cells images are the model's input size
    np.testing.assert_array_equal(crops["display"], batch.images)
    np.testing.assert_array_equal(crops["evidence"], batch.masks["evidence"])
    assert crops["image_ids"].tolist() == [0, 1] and crops["keys"].tolist() == ["cells/test/0", "cells/test/1"]


def test_report_draws_heatmaps_without_loading_a_model(tiny_run, tmp_path, monkeypatch):
    import vitlens.models.loading as loading

    def no_models(*a, **k):
        raise AssertionError("the report loaded a model")

    monkeypatch.setattr(loading, "load_model", no_models)
    monkeypatch.setattr(vitlens.models, "load_model", no_models)
    page = write_report(tiny_run[0], tmp_path).read_text()
    assert "input, evidence outlined" in page and page.count("data:image/png") > 8


def test_writing_a_unit_leaves_no_open_file(tmp_path):
    import gc
    import warnings

    store = ResultsStore(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)  # an unclosed file warns when it is collected
        store.write_unit("u", [], np.zeros((1, 2, 2), np.float32), [0], {"dataset": "d"})
        store.write_crops("c", np.zeros((1, 2, 2, 3), np.uint8), [0], ["k"], None)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert store.status("u")["status"] == "done" and "evidence" not in store.crops("c")
    assert not list(tmp_path.rglob("*.tmp*"))


def test_the_quick_study_is_a_builtin_that_runs_without_warnings(tmp_path):
    import warnings

    cfg = load_config("builtin:quick-study")
    assert "quick-study" in __import__("vitlens.bench.config", fromlist=["x"]).builtin_configs()
    assert [d.name for d in cfg.datasets] == ["cells"] and len(cfg.explainers) == 5
    small = {**cfg.to_dict(), "datasets": [{**cfg.datasets[0].__dict__, "n": 4}]}
    small["datasets"][0] = {k: v for k, v in small["datasets"][0].items() if v is not None}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a newcomer's first study prints no warning about its own config
        res = run_study(parse_config(small), tmp_path, progress=False)
    assert res["done"] + res["skipped"] == res["units"] and res["done"] > 0


def test_ties_share_a_rank():
    rows = [
        {
            "dataset": "d",
            "model": "m",
            "explainer_key": e,
            "metric_key": "up",
            "output": "score",
            "image_id": i,
            "value": v,
        }
        for e, vals in (("a", [1.0, 1.0, 1.0]), ("b", [1.0, 1.0, 1.0]), ("c", [0.0, 0.0, 0.5]))
        for i, v in enumerate(vals)
    ]
    ranks = summarise(pd.DataFrame(rows), {"up": True}).set_index("explainer")["rank"].to_dict()
    assert ranks == {"a": 1, "b": 1, "c": 3}


def test_report_names_classes_and_gives_p_values(tiny_run, tmp_path):
    run, _ = tiny_run
    assert json.loads((run / "classes.json").read_text())["cells"] == [
        "neutrophil",
        "lymphocyte",
        "monocyte",
        "eosinophil",
    ]
    page = write_report(run, tmp_path / "rep").read_text()
    assert re.search(r"true (neutrophil|lymphocyte|monocyte|eosinophil), predicted", page)
    assert "equal means share a rank" in page


def test_report_reads_for_a_newcomer(tiny_run, tmp_path):
    run, _ = tiny_run
    page = write_report(run, tmp_path / "rep2").read_text()
    assert "How to read this" in page and "Study <b>tiny</b>" in page and "units done" in page
    assert "deletion AUC (probability)" in page  # readable column names, the stored key as tooltip
    from vitlens.report.study import metric_label

    assert metric_label("iou_top_k", "intersection") == "top-5% pixels inside the mask (pixels)"
    assert (
        metric_label("deletion(baseline=zero,steps=28)", "score")
        == "deletion AUC (probability) (baseline=zero,steps=28)"
    )
    assert metric_label("relevance_mass[marker]", "score") == "relevance mass in the mask (share) [marker]"
    assert metric_label("unknown_metric", "x") == "unknown_metric.x"


def test_mean_curve_band_by_hand():
    from vitlens.report.study import mean_curve_band

    curves = np.array([[1.0, 0.5, 0.0], [0.8, 0.3, np.nan], [0.6, 0.1, 0.2]])
    mean, lo, hi = mean_curve_band(curves)
    np.testing.assert_allclose(mean, [0.8, 0.3, 0.1])
    # step 0: s = 0.2, n = 3 -> half-width 1.96 * 0.2 / sqrt(3); step 2: two images, s = sqrt(0.02)
    np.testing.assert_allclose(
        hi - mean, [1.96 * 0.2 / np.sqrt(3), 1.96 * 0.2 / np.sqrt(3), 1.96 * np.sqrt(0.02) / np.sqrt(2)]
    )
    np.testing.assert_allclose(mean - lo, hi - mean)
    one = mean_curve_band(np.array([[0.5, 0.4]]))
    np.testing.assert_allclose(one[1], one[2])  # one image: no band
