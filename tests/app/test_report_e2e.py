"""The study report as a reader sees it: a real headless Chromium opens report.html (a file, no server) and
checks that the key elements render — the how-to-read text, the ranked tables with CIs, the curve figures
and the heatmap grids as decoded images — and saves a screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitlens.bench.config import parse_config
from vitlens.bench.runner import run_study
from vitlens.report.study import write_report

from .test_app_e2e import browser  # noqa: F401  (the Chromium fixture, required in CI)

pytestmark = pytest.mark.browser

STUDY = {
    "name": "report-e2e",
    "batch_size": 4,
    "datasets": [{"name": "cells", "builtin": "cells", "n": 8, "models": ["builtin:cells_vit"]}],
    "explainers": ["rollout", "gradcam", "input_x_gradient"],
    "metrics": [
        "pointing_game",
        {"name": "deletion", "params": {"steps": 7}},
        {"name": "insertion", "params": {"steps": 7}},
    ],
}


def test_the_report_renders_in_a_browser(browser, tmp_path):  # noqa: F811
    run_study(parse_config(STUDY), tmp_path / "run", progress=False)
    path = write_report(tmp_path / "run")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(Path(path).resolve().as_uri())
    assert page.title() == "vitlens study report"
    assert page.get_by_text("How to read this").is_visible()
    rows = page.locator("table tr")
    assert rows.count() >= 1 + 3  # a header and one row per explainer
    header = page.locator("table tr").first.inner_text()
    assert "pointing game (hit rate)" in header and "deletion AUC (probability)" in header
    first_cell = page.locator("table tr").nth(1).locator("td").nth(1).inner_text()
    assert "[" in first_cell and "#" in first_cell  # mean [CI] #rank
    images = page.locator("img")
    assert images.count() >= 2 + 2 * 4  # two curve figures and heatmap rows
    sizes = page.evaluate("() => [...document.images].map((i) => [i.complete, i.naturalWidth])")
    assert all(done and width > 0 for done, width in sizes)  # every image decodes
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    arr = np.asarray(Image.open(shot).convert("RGB"))
    assert arr.shape[0] > 800 and arr.std() > 20  # a page with content, not a blank
    if os.environ.get("VITLENS_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["VITLENS_SCREENSHOT_DIR"]) / "report.png"), full_page=True)
