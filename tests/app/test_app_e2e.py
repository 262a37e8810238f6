"""The app as a person uses it: a real headless Chromium (Debian's ``chromium``) driven by Playwright.

Upload an image, pick two methods, ask for the explanation, wait for both overlays, read their pixels (non-blank,
different from each other and from the input), move the opacity slider, download the zip, see an error message
for a corrupt file. A screenshot is saved to the test's tmp dir, and to ``$VITLENS_SCREENSHOT_DIR`` when set.
It runs wherever Chromium and Playwright are present. Without them it is skipped, except when
``VITLENS_REQUIRE_BROWSER=1`` (``.ci/run`` sets it, after installing Chromium): then it FAILS, naming what is
missing, so that CI never passes without having driven the browser.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import sample_png

CHROMIUM = os.environ.get("VITLENS_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


pytestmark = pytest.mark.browser
REQUIRED = os.environ.get("VITLENS_REQUIRE_BROWSER", "") not in ("", "0")


def _need(ok: bool, why: str) -> None:
    if not ok:
        if REQUIRED:
            pytest.fail(f"{why} (VITLENS_REQUIRE_BROWSER is set: .ci/run installs Chromium and requires this test)")
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    _need(sync_playwright is not None, "playwright is not installed (pip install playwright)")
    _need(Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None, f"no Chromium at {CHROMIUM}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def shot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(np.float64)


def test_upload_two_methods_overlays_scores_download(browser, server_url, tmp_path):
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(server_url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert page.title().startswith("vitlens")

    page.select_option("#model", "builtin:cells_vit")
    page.check("input[name=source][value=upload]")
    smear = {"name": "smear.png", "mimeType": "image/png", "buffer": sample_png("cells/1")}
    page.set_input_files("#file", files=[smear])
    page.wait_for_selector("#top5 tr.first", timeout=30_000)
    assert len(page.locator("#top5 tr").all()) == 4  # the model has 4 classes
    assert page.locator("#target option").count() == 5  # predicted + 4 classes

    for box in page.locator("input.method-check").all():
        box.uncheck()
    page.check("#m-rollout")
    page.check("#m-gradcam")
    page.select_option("#p-rollout-head_fusion", "max")
    page.select_option("#target", "2")  # explain "monocyte", not the predicted class
    page.click("#run")
    page.wait_for_function(
        "() => { const h = [...document.querySelectorAll('figure[data-testid=overlay] img.heat')];"
        " return h.length === 2 && h.every((i) => i.complete && i.naturalWidth > 0); }",
        timeout=60_000,
    )
    assert not page.locator("#error").is_visible()
    assert "Explaining: monocyte" in page.locator("#summary").inner_text()
    assert "explains: monocyte" in page.locator("figure[data-method=gradcam]").inner_text()
    tiles = page.locator("figure[data-testid=overlay]")
    assert sorted(tiles.nth(i).get_attribute("data-method") for i in range(2)) == ["gradcam", "rollout_head_fusion-max"]
    for i in range(2):
        for cls in ("deletion", "insertion"):
            assert re.fullmatch(r"0\.\d{3} \([↓↑] better\)", tiles.nth(i).locator(f"dd.{cls}").inner_text())

    a, b = (shot(tiles.nth(i).locator(".stack")) for i in range(2))
    inp = shot(page.locator("figure[data-testid=input-tile] .stack"))
    assert a.shape == b.shape == inp.shape
    for over in (a, b):
        assert over.std() > 10 and len(np.unique(over.reshape(-1, 3), axis=0)) > 100  # not blank
        assert np.abs(over - inp).mean() > 5  # a heatmap is drawn over the input
    assert np.abs(a - b).mean() > 3  # the two methods' overlays differ

    page.locator("#opacity").fill("1")
    assert page.locator("#opacity-value").inner_text() == "1.00"
    full = shot(tiles.nth(0).locator(".stack"))
    assert np.abs(full - a).mean() > 3  # the slider changes the overlay
    assert page.locator("#download").get_attribute("href").endswith("?opacity=1")
    page.locator("#opacity").fill("0.5")

    page.screenshot(path=str(tmp_path / "app_e2e.png"), full_page=True)
    if os.environ.get("VITLENS_SCREENSHOT_DIR"):
        out = Path(os.environ["VITLENS_SCREENSHOT_DIR"])
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "app_e2e.png"), full_page=True)

    with page.expect_download() as dl:
        page.click("#download")
    z = zipfile.ZipFile(dl.value.path())
    assert {"settings.json", "rollout_head_fusion-max.npy", "gradcam.npy", "gradcam_overlay.png"} <= set(z.namelist())

    # a corrupt file: a clear message on the page, not a stack trace
    page.set_input_files(
        "#file", files=[{"name": "broken.png", "mimeType": "image/png", "buffer": sample_png("cells/1")[:300]}]
    )
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    msg = page.locator("#error-text").inner_text()
    assert "broken.png" in msg and "corrupt" in msg and "Traceback" not in msg
    assert page.locator("figure[data-testid=overlay]").count() == 0  # old results are not shown for the new image
    assert not [e for e in console_errors if "Content Security Policy" in e], console_errors
    page.close()


def test_the_page_works_behind_a_token(browser, service):
    """Served with --token, the page opened at the printed address (/?token=...) loads its models, explains a
    sample and links the download with the token; opened without it, it says the token is needed."""
    from vitlens.app.server import BackgroundServer

    with BackgroundServer(service, token="tok-123") as url:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(url + "?token=tok-123")
        page.wait_for_selector("body[data-ready='1']", timeout=30_000)
        page.select_option("#model", "builtin:cells_vit")
        for box in page.locator("input.method-check").all():
            box.uncheck()
        page.check("#m-rollout")
        page.click("#run")
        page.wait_for_selector("figure[data-testid=overlay] img.heat", timeout=60_000)
        assert not page.locator("#error").is_visible()
        assert page.locator("#download").get_attribute("href").endswith("&token=tok-123")
        with page.expect_download() as dl:
            page.click("#download")
        assert "settings.json" in zipfile.ZipFile(dl.value.path()).namelist()

        bare = browser.new_page()
        bare.goto(url)
        bare.wait_for_selector("#error:not([hidden])", timeout=30_000)
        assert "access token" in bare.locator("#error-text").inner_text()
