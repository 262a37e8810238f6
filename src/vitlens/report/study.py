"""``vitlens report RUN_DIR``: tables with confidence intervals, ranks, paired tests, curves and heatmaps.

For every dataset × model × explainer × metric output: the mean over images with a 95% percentile
bootstrap confidence interval (Efron & Tibshirani 1993; 2000 resamples, seeded), the number of images
whose score is undefined (NaN, excluded), and the explainer's rank (1 = best in the metric's direction).
The best explainer is compared with each other one by a two-sided Wilcoxon signed-rank test on the
images both scored (paired by image), with Holm's correction over the comparisons of one metric.
Writes ``report.html`` (self-contained), ``summary.csv`` and ``tables.tex``.
"""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import VitlensError

N_BOOT = 2000
MAIN_OUTPUTS = ("score",)
LOWER_IS_BETTER_OUTPUTS = {"baf"}  # extra outputs whose direction is the opposite of their metric's score


def _signed(explainer_key: str) -> bool:
    """Whether the explainer of a stored unit (its key, e.g. ``rollout(head_fusion=max)``) gives signed maps."""
    from ..explainers import explainer_class

    try:
        return bool(explainer_class(explainer_key.split("(")[0]).signed)
    except VitlensError:
        return False


def bootstrap_ci(
    values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of the finite values (NaN, NaN when there are none)."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return math.nan, math.nan
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def holm(pvalues: list[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN entries stay NaN)."""
    idx = [i for i, p in enumerate(pvalues) if np.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    adjusted = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _directions(run_dir: Path) -> dict[str, bool]:
    """metric_key -> higher_is_better, from the run's configuration."""
    from ..bench.config import parse_config
    from ..metrics import get_metric

    cfg = parse_config(json.loads((run_dir / "config.json").read_text()), str(run_dir / "config.json"))
    return {m.key: bool(get_metric(m.name, **m.params).higher_is_better) for m in cfg.metrics}


def summarise(frame, directions: dict[str, bool], seed: int = 0):
    """One row per (dataset, model, explainer_key, metric_key, output) with mean, CI, n, NaNs, rank, p."""
    import pandas as pd
    from scipy.stats import wilcoxon

    rows = []
    for (ds, model, mkey, out), grp in frame.groupby(["dataset", "model", "metric_key", "output"], sort=False):
        per_expl = {e: g.set_index("image_id")["value"] for e, g in grp.groupby("explainer_key", sort=False)}
        higher = directions.get(mkey, True)
        if out in LOWER_IS_BETTER_OUTPUTS:
            higher = not higher
        stats = {}
        for e, s in per_expl.items():
            v = s.to_numpy(dtype=float)
            finite = v[np.isfinite(v)]
            lo, hi = bootstrap_ci(v, seed=seed)
            stats[e] = {
                "mean": float(finite.mean()) if finite.size else math.nan,
                "ci_low": lo,
                "ci_high": hi,
                "n": int(finite.size),
                "n_nan": int(v.size - finite.size),
            }
        ranked = sorted(
            (e for e in stats if np.isfinite(stats[e]["mean"])),
            key=lambda e: -stats[e]["mean"] if higher else stats[e]["mean"],
        )
        best = ranked[0] if ranked else None
        pvals, others = [], []
        for e in stats:
            if best is None or e == best:
                continue
            pair = pd.concat([per_expl[best], per_expl[e]], axis=1, join="inner").dropna()
            diff = pair.iloc[:, 0] - pair.iloc[:, 1]
            p = math.nan
            if len(pair) >= 5 and (diff != 0).any():
                p = float(wilcoxon(pair.iloc[:, 0], pair.iloc[:, 1]).pvalue)
            pvals.append(p)
            others.append(e)
        adj = dict(zip(others, holm(pvals), strict=True))
        raw = dict(zip(others, pvals, strict=True))
        for e, st in stats.items():
            rows.append(
                {
                    "dataset": ds,
                    "model": model,
                    "explainer": e,
                    "metric": mkey,
                    "output": out,
                    "higher_is_better": higher,
                    **st,
                    # competition ranking: ties share a rank (1, 2, 2, 4), as equal means must
                    "rank": (1 + sum(_better(stats[o]["mean"], stats[e]["mean"], higher) for o in ranked))
                    if e in ranked
                    else None,
                    "best": e == best,
                    "p_vs_best": raw.get(e, math.nan),
                    "p_vs_best_holm": adj.get(e, math.nan),
                }
            )
    return pd.DataFrame(rows)


#: readable names (with units) of metric outputs; a key not listed is shown as it is stored
METRIC_LABELS = {
    ("pointing_game", "score"): "pointing game (hit rate)",
    ("energy_pointing_game", "score"): "energy pointing game (share of energy in the mask)",
    ("iou_top_k", "score"): "IoU of the top-5% pixels with the mask",
    ("iou_top_k", "intersection"): "top-5% pixels inside the mask (pixels)",
    ("otsu_segmentation", "score"): "Otsu segmentation: pixel accuracy",
    ("mean_threshold_segmentation", "score"): "mean-threshold segmentation: pixel accuracy",
    ("faf_baf", "score"): "foreground attention fraction (FAF)",
    ("faf_baf", "baf"): "background attention fraction (BAF)",
    ("relevance_mass", "score"): "relevance mass in the mask (share)",
    ("relevance_rank", "score"): "relevance rank accuracy (share)",
    ("sparseness", "score"): "sparseness (Gini index)",
    ("deletion", "score"): "deletion AUC (probability)",
    ("insertion", "score"): "insertion AUC (probability)",
    ("perturbation", "score"): "perturbation AUC (accuracy)",
}

HOW_TO_READ = (
    " <b>How to read this.</b> Each table compares explanation methods (rows) on one model and data set by several"
    " measures (columns). ↑ means higher is better, ↓ lower. Each cell is the mean over the images with its 95%"
    " confidence interval in brackets; the best method of a column is bold and ranked #1, and a star marks a"
    " method that is significantly worse than the best (p below 0.05 after correcting for the number of"
    " comparisons). Measures often disagree — a method that localises well may not be the one the model relies"
    " on most (deletion/insertion) — so read a ranking per column, not as one verdict. The images at the end of"
    " each section show the maps themselves: red is where a method points; for signed maps blue is evidence"
    " against the class."
)


def metric_label(metric_key: str, output: str) -> str:
    """The readable name of a metric output (``[mask]`` suffixes kept), e.g. ``deletion AUC (probability)``."""
    base, _, mask = metric_key.partition("[")
    name = base.split("(")[0]
    label = METRIC_LABELS.get((name, output), metric_key if output == "score" else f"{metric_key}.{output}")
    if (name, output) in METRIC_LABELS and "(" in base:
        label += " " + base[len(name) :]  # the parameters, e.g. (steps=28)
    return label + (f" [{mask}" if mask else "")


def _metadata(run_dir: Path) -> str:
    """Study name, run directory, configuration in brief and when/how it ran (from the files of the run)."""
    cfg = json.loads((run_dir / "config.json").read_text())
    run = {}
    if (run_dir / "run.json").is_file():
        try:
            run = json.loads((run_dir / "run.json").read_text())
        except ValueError:
            run = {}
    parts = [
        f"Study <b>{html.escape(str(cfg.get('name', '?')))}</b> in {html.escape(str(run_dir))}",
        f"seed {cfg.get('seed')}, {len(cfg.get('datasets', []))} data set(s), {len(cfg.get('explainers', []))} "
        f"explainer setting(s), {len(cfg.get('metrics', []))} metric(s), precision {cfg.get('precision', 'fp32')}",
    ]
    if run:
        parts.append(
            f"last run finished {html.escape(str(run.get('finished', '?')))} by {run.get('workers', 1)} worker(s) "
            f"in {run.get('seconds', '?')} s ({run.get('done', '?')} units done, {run.get('skipped', '?')} skipped)"
        )
    return "; ".join(parts) + "."


def _better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def _fmt(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}]"


def _latex(summary) -> str:
    parts = []
    for (ds, model), grp in summary[summary.output.isin(MAIN_OUTPUTS)].groupby(["dataset", "model"], sort=False):
        metrics = list(dict.fromkeys(grp.metric))
        parts.append(f"% {ds} / {model}\n\\begin{{tabular}}{{l{'c' * len(metrics)}}}\n\\hline")
        parts.append("explainer & " + " & ".join(m.replace("_", "\\_") for m in metrics) + " \\\\ \\hline")
        for e, eg in grp.groupby("explainer", sort=False):
            cells = []
            for m in metrics:
                r = eg[eg.metric == m]
                if r.empty or not np.isfinite(r.iloc[0]["mean"]):
                    cells.append("--")
                    continue
                r = r.iloc[0]
                txt = f"{r['mean']:.3f} \\scriptsize[{r.ci_low:.3f}, {r.ci_high:.3f}]"
                cells.append(f"\\textbf{{{txt}}}" if r.best else txt)
            parts.append(e.replace("_", "\\_") + " & " + " & ".join(cells) + " \\\\")
        parts.append("\\hline\n\\end{tabular}\n")
    return "\n".join(parts)


def mean_curve_band(curves: np.ndarray, z: float = 1.96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of ``[n_images, n_steps]`` curves per step (NaN ignored) and its normal-approximation 95% confidence
    band ``mean ± z·s/√n`` (``s`` the sample standard deviation at that step; no band from fewer than 2 images)."""
    c = np.asarray(curves, dtype=float)
    n = np.isfinite(c).sum(axis=0)
    mean = np.nanmean(c, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.nanstd(c, axis=0, ddof=1) if c.shape[0] > 1 else np.full(c.shape[1], np.nan)
        half = np.where(n > 1, z * sd / np.sqrt(n), 0.0)
    return mean, mean - half, mean + half


def _curve_figure(frame, metric_name: str) -> np.ndarray | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sub = frame[(frame.metric == metric_name) & (frame.output == "score") & frame.curve.notna()]
    if sub.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    for e, g in sub.groupby("explainer_key", sort=False):
        curves = np.array([np.asarray(c, dtype=float) for c in g.curve])
        curves = curves[np.isfinite(curves).any(axis=1)]  # an all-NaN curve (constant map) has nothing to plot
        if not len(curves):
            continue
        x = np.linspace(0, 1, curves.shape[1])
        mean, lo, hi = mean_curve_band(curves)
        (line,) = ax.plot(x, mean, label=e, lw=1.2)
        # probabilities: the band is clipped to [0, 1] (the normal approximation can overshoot near the bounds)
        ax.fill_between(x, np.clip(lo, 0, 1), np.clip(hi, 0, 1), color=line.get_color(), alpha=0.15, lw=0)
    ax.set_xlabel("fraction of patches " + ("removed" if metric_name == "deletion" else "revealed"))
    ax.set_ylabel("target-class probability")
    ax.set_title(f"{metric_name} (mean, 95% CI band)", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    from PIL import Image

    return np.asarray(Image.open(buf).convert("RGB"))


def _class_names(run_dir: Path) -> dict[str, list[str]]:
    """The class names of every data set of the run (``classes.json``; runs written before it: none)."""
    path = Path(run_dir) / "classes.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _heatmap_rows(run_dir: Path, frame, ds_name: str, model: str, n_each: int = 2):
    """Overlays of a few correct and misclassified images for every explainer that ran on the model, drawn on
    the crops the run stored (no model is loaded, the data set is not read again)."""
    import torch

    from ..bench.store import ResultsStore
    from ..maps import upsample
    from ..viz import Row, outline, overlay_map

    store = ResultsStore(run_dir)
    units = [u for u in store.units() if u.get("status") == "done" and u["dataset"] == ds_name and u["model"] == model]
    names = _class_names(run_dir).get(ds_name, [])

    def name(i: int) -> str:
        return html.escape(names[i]) if 0 <= i < len(names) else str(i)

    sub = frame[(frame.dataset == ds_name) & (frame.model == model)].drop_duplicates("image_id")
    picks = [int(i) for i in list(sub[sub.correct].image_id[:n_each]) + list(sub[~sub.correct].image_id[:n_each])]
    crops: dict[int, tuple[np.ndarray, str, np.ndarray | None]] = {}  # image id -> (crop, name, evidence)
    for crops_id in dict.fromkeys(u["crops"] for u in units if u.get("crops")):
        stored = store.crops(crops_id)
        if stored is None:
            continue
        for j, image_id in enumerate(stored["image_ids"].tolist()):
            if image_id in picks and image_id not in crops:
                evidence = stored["evidence"][j] if "evidence" in stored else None
                crops[image_id] = (stored["display"][j], str(stored["keys"][j]), evidence)
    rows = []
    for image_id in picks:
        if image_id not in crops:  # a run written before crops were stored with it
            continue
        image, key, evidence = crops[image_id]
        info = sub[sub.image_id == image_id].iloc[0]
        cells = [("input, evidence outlined", outline(image, evidence)) if evidence is not None else ("input", image)]
        for u in units:
            maps, ids = store.maps(u["unit"])
            hit = np.nonzero(ids == image_id)[0]
            if hit.size:
                values = upsample(torch.from_numpy(maps[hit[0]][None]), image.shape[:2], normalize=False)[0].numpy()
                cells.append((u["explainer"], overlay_map(image, values, signed=_signed(u["explainer"]))))
        ok = bool(info.correct)
        pred = name(int(info.predicted))
        note = f"true {name(int(info['true']))}, predicted <span class='{'ok' if ok else 'bad'}'>{pred}</span>"
        rows.append(Row(title=f"{'correct' if ok else 'misclassified'} · {html.escape(key)}", note=note, cells=cells))
    return rows


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write report.html, summary.csv and tables.tex for a study run directory; returns the HTML path."""
    from ..bench.store import ResultsStore
    from ..viz import Row, Section, render_page

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise VitlensError(f"{run_dir}: not a vitlens study run (no config.json); run `vitlens bench` first")
    out = Path(out) if out else run_dir
    out.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(run_dir)
    frame = store.frame()
    if frame.empty:
        raise VitlensError(f"{run_dir}: no finished results yet")
    summary = summarise(frame, _directions(run_dir))
    summary.to_csv(out / "summary.csv", index=False)
    (out / "tables.tex").write_text(_latex(summary))

    sections = []
    skipped = [u for u in store.units() if u.get("status") == "skipped"]
    for (ds, model), grp in summary.groupby(["dataset", "model"], sort=False):
        metric_cols = list(dict.fromkeys(zip(grp.metric, grp.output, strict=True)))

        def th(m: str, o: str, grp=grp) -> str:
            key = m if o == "score" else f"{m}.{o}"
            up = grp[(grp.metric == m) & (grp.output == o)].higher_is_better.iloc[0]
            label = html.escape(metric_label(m, o))
            return f"<th title='{html.escape(key)}'>{label}<br><small>{'↑' if up else '↓'}</small></th>"

        head = "".join(th(m, o) for m, o in metric_cols)
        body = []
        for e, eg in grp.groupby("explainer", sort=False):
            tds = []
            for m, o in metric_cols:
                r = eg[(eg.metric == m) & (eg.output == o)]
                if r.empty:
                    tds.append("<td>–</td>")
                    continue
                r = r.iloc[0]
                sig = ""
                if not r.best and np.isfinite(r.p_vs_best_holm):
                    star = "*" if r.p_vs_best_holm < 0.05 else ""
                    sig = f"{star} <small>p={r.p_vs_best_holm:.2g}</small>"
                style = " style='font-weight:bold'" if r.best else ""
                rank = f" <small>#{int(r['rank'])}</small>" if r["rank"] == r["rank"] and r["rank"] else ""
                nan = f" <small>({int(r.n_nan)} NaN)</small>" if r.n_nan else ""
                tds.append(f"<td{style}>{_fmt(r['mean'], r.ci_low, r.ci_high)}{sig}{rank}{nan}</td>")
            body.append(f"<tr><td>{html.escape(e)}</td>{''.join(tds)}</tr>")
        n_img = int(frame[(frame.dataset == ds) & (frame.model == model)].image_id.nunique())
        acc = frame[(frame.dataset == ds) & (frame.model == model)].drop_duplicates("image_id").correct.mean()
        skipped_here = sorted({u["explainer"] for u in skipped if u["dataset"] == ds and u["model"] == model})
        text = (
            f"{n_img} images, model accuracy {acc:.1%}. Mean [95% bootstrap CI]; #rank; bold = best; "
            "* = differs from the best (Wilcoxon signed-rank, Holm-adjusted p &lt; 0.05; p = that Holm-adjusted "
            "p-value); equal means share a rank."
        )
        if skipped_here:
            text += " Not applicable: " + html.escape(", ".join(skipped_here)) + "."
        table = (
            f"<div style='overflow-x:auto'><table border='1' cellspacing='0' cellpadding='3' "
            f"style='font-size:12px;border-collapse:collapse'><tr><th>explainer</th>{head}</tr>"
            + "".join(body)
            + "</table></div>"
        )
        sec = Section(heading=f"{ds} · {model}", text=text + table)
        sub = frame[(frame.dataset == ds) & (frame.model == model)]
        figs = [(m, _curve_figure(sub, m)) for m in ("insertion", "deletion")]
        figs = [(m, f) for m, f in figs if f is not None]
        if figs:
            sec.rows.append(Row(title="mean curves", cells=figs, wide=True))
        sec.rows.extend(_heatmap_rows(run_dir, frame, ds, model))
        sections.append(sec)
    marker = summary[summary.metric.str.endswith("[marker]") & (summary.output == "score")]
    intro = _metadata(run_dir) + HOW_TO_READ
    if not marker.empty:
        items = "; ".join(f"{html.escape(r.explainer)} {r['mean']:.3f}" for _, r in marker.iterrows())
        intro += (
            " Shortcut benchmark — share of positive relevance on the corner marker (a model that uses "
            f"the shortcut should show it): {items}."
        )
    path = out / "report.html"
    path.write_text(render_page("vitlens study report", sections, intro=intro), encoding="utf-8")
    return path


def summary_for(run_dir: str | Path) -> Any:
    """The summary table of a run (pandas DataFrame) without writing files."""
    from ..bench.store import ResultsStore

    return summarise(ResultsStore(run_dir).frame(), _directions(Path(run_dir)))
