"""The web app's JSON API as a client uses it (FastAPI TestClient): results equal direct library calls, limits,
error messages."""

from __future__ import annotations

import base64
import io
import json
import struct
import zipfile
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import vitlens
from vitlens.app.render import decode_map
from vitlens.app.service import DEFAULT_MODELS
from vitlens.data import load_image, prepare

from .conftest import MODELS, png_bytes, sample_png


def post(client, settings: dict, image: bytes | None = None, name: str = "image.png", path: str = "/api/explain"):
    if image is None:
        return client.post(path, json=settings)
    return client.post(
        path, files={"image": (name, image, "application/octet-stream")}, data={"settings": json.dumps(settings)}
    )


def data_url_image(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def expected_input(service, spec: str, data: bytes, tmp_path, suffix: str = ".png"):
    """What ``vitlens explain`` would feed the model for the same file: load_image + prepare."""
    path = tmp_path / f"f{suffix}"
    path.write_bytes(data)
    model = service.entries[spec].model
    return model, prepare(load_image(path), model.preprocessing)


def one_line_error(r, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"}
    msg = body["error"]
    assert "\n" not in msg and "Traceback" not in msg
    for n in needles:
        assert n in msg, msg
    return msg


# ------------------------------------------------------------------------------------------- happy path
def test_explain_upload_equals_direct_library_calls(client, service, tmp_path):
    data = sample_png("cells/1")
    steps = 7
    r = post(
        client,
        {
            "model": "builtin:cells_vit",
            "methods": [
                "rollout",
                {"name": "rollout", "params": {"head_fusion": "max", "discard_ratio": "0.9"}},
                "gradcam",
            ],
            "steps": steps,
        },
        data,
    )
    assert r.status_code == 200, r.text
    out = r.json()
    model, prep = expected_input(service, "builtin:cells_vit", data, tmp_path)
    x = prep.tensor[None]
    with torch.no_grad():
        logits = model.logits(x)
    probs = torch.softmax(logits, -1)[0]
    top = [t["index"] for t in out["top"]]
    assert top == probs.argsort(descending=True)[:4].tolist()  # 4 classes: all of them, sorted
    assert out["top"][0]["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
    assert out["target"]["index"] == int(probs.argmax()) and out["target"]["requested"] is False
    assert np.array_equal(data_url_image(out["image"]["display"]), prep.display)
    assert out["image"]["outline"] is None  # an upload has no ground truth

    labels = [m["label"] for m in out["methods"]]
    assert labels == ["rollout", "rollout_discard_ratio-0.9_head_fusion-max", "gradcam"]
    for m, (name, params) in zip(
        out["methods"],
        [("rollout", {}), ("rollout", {"head_fusion": "max", "discard_ratio": 0.9}), ("gradcam", {})],
        strict=True,
    ):
        want = vitlens.get_explainer(name, model, **params)(x)
        got = decode_map(m["map"])
        assert np.array_equal(got, want[0].numpy()), m["label"]
        for metric in ("deletion", "insertion"):
            res = vitlens.get_metric(metric, steps=steps, baseline="zero", progress=False)(model, x, want)
            assert m[metric] == pytest.approx(float(res.scores[0]), abs=1e-9), (m["label"], metric)
        assert m["pointing_game"] is None
        heat = data_url_image(m["heat"])
        assert heat.shape == (*prep.display.shape[:2], 3) and heat.std() > 1
    assert out["methods"][0]["params"] == {"head_fusion": "mean", "discard_ratio": 0.0, "alpha": 0.5}


def test_builtin_sample_pointing_game_and_outline(client, service):
    from vitlens.app.catalog import get_sample

    r = post(
        client, {"model": "builtin:cells_vit", "sample": "cells/2", "methods": ["rollout", "gradcam"], "metrics": False}
    )
    assert r.status_code == 200, r.text
    out = r.json()
    s = get_sample("cells/2")
    assert out["image"]["true_label"] == s.label_name
    other = post(client, {"model": "builtin:cells_vit", "sample": "ultrasound/1"}, path="/api/predict").json()
    assert "true_label" not in other["image"]  # not this model's classes: no right or wrong
    assert other["image"]["sample_label"] == get_sample("ultrasound/1").label_name
    shortcut = post(client, {"model": "builtin:cells_vit", "sample": "shortcut/0"}, path="/api/predict").json()
    layer = data_url_image(shortcut["image"]["outline"])
    yellow = (layer[..., 3] > 0) & (layer[..., 2] == 0)
    marker = get_sample("shortcut/0").marker
    assert shortcut["image"]["marker"] and yellow.any() and marker[yellow].all()  # the marker, outlined in yellow
    outline = data_url_image(out["image"]["outline"])
    assert outline.shape == (112, 112, 4)
    drawn = outline[..., 3] > 0
    assert drawn.any() and not (drawn & ~s.mask).any()  # the outline lies on the mask's boundary
    assert s.mask[drawn].all() and (drawn.sum() < s.mask.sum())
    yy, xx = np.nonzero(s.mask)
    for m in out["methods"]:
        assert m["deletion"] is None and m["insertion"] is None
        heat = vitlens.upsample(torch.from_numpy(decode_map(m["map"]).copy())[None], (112, 112), normalize=False)[0]
        iy, ix = divmod(int(heat.flatten().argmax()), 112)
        hit = bool((((yy - iy) ** 2 + (xx - ix) ** 2) <= 15**2).any())  # Zhang et al.: within 15 px of the mask
        assert m["pointing_game"] == ("hit" if hit else "miss"), m["label"]


def test_explicit_target_by_index_and_name(client, service):
    base = {"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["grad_rollout"], "metrics": False}
    a = post(client, {**base, "target": 3}).json()
    b = post(client, {**base, "target": "eosinophil"}).json()
    assert a["target"]["index"] == b["target"]["index"] == 3 and a["target"]["name"] == "eosinophil"
    assert a["methods"][0]["target"] == 3
    assert np.array_equal(decode_map(a["methods"][0]["map"]), decode_map(b["methods"][0]["map"]))
    other = post(client, {**base, "target": 1}).json()
    assert not np.array_equal(decode_map(a["methods"][0]["map"]), decode_map(other["methods"][0]["map"]))


@pytest.mark.parametrize("kind", ["gray8", "gray16", "jpeg", "rgba"])
def test_upload_formats_read_like_the_cli(client, service, tmp_path, kind):
    rng = np.random.default_rng(3)
    if kind == "gray8":
        data, suffix = png_bytes(rng.integers(0, 255, (90, 130), dtype=np.uint8)), ".png"
    elif kind == "gray16":
        data, suffix = png_bytes(rng.integers(0, 4000, (80, 80)).astype(np.uint16)), ".png"
    elif kind == "rgba":
        data, suffix = png_bytes(rng.integers(0, 255, (60, 70, 4), dtype=np.uint8), mode="RGBA"), ".png"
    else:
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(buf, format="JPEG")
        data, suffix = buf.getvalue(), ".jpg"
    r = post(client, {"model": "builtin:cells_cnn"}, data, name=f"scan{suffix}", path="/api/predict")
    assert r.status_code == 200, r.text
    _, prep = expected_input(service, "builtin:cells_cnn", data, tmp_path, suffix)
    assert np.array_equal(data_url_image(r.json()["image"]["display"]), prep.display)
    if kind == "gray16":
        assert r.json()["image"]["mode"].startswith("I")


def test_download_zip_has_maps_pngs_and_settings(client):
    out = post(
        client,
        {
            "model": "builtin:cells_vit",
            "sample": "cells/3",
            "target": 1,
            "steps": 4,
            "methods": ["rollout", {"name": "gradcam", "params": {"layer": -2}}],
        },
    ).json()
    r = client.get(out["download_url"], params={"opacity": 0.3})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(z.namelist())
    assert {
        "input.png",
        "mask.png",
        "settings.json",
        "rollout.npy",
        "rollout_heatmap.png",
        "rollout_overlay.png",
        "gradcam_layer--2.npy",
        "gradcam_layer--2_overlay.png",
    } <= names
    for m in out["methods"]:
        assert np.array_equal(np.load(io.BytesIO(z.read(f"{m['label']}.npy"))), decode_map(m["map"]))
    settings = json.loads(z.read("settings.json"))
    assert settings["model"] == "builtin:cells_vit" and settings["target"]["index"] == 1
    assert settings["overlay_opacity"] == 0.3 and settings["image"]["sample"] == "cells/3"
    assert settings["methods"][1]["params"] == {"layer": -2}
    assert settings["metrics"]["deletion"] == {"steps": 4, "baseline": "zero"}
    # the overlay is (1 - a) * input + a * heatmap, a = the requested opacity
    inp = np.asarray(Image.open(io.BytesIO(z.read("input.png")))).astype(float)
    heat = np.asarray(Image.open(io.BytesIO(z.read("rollout_heatmap.png")))).astype(float)
    over = np.asarray(Image.open(io.BytesIO(z.read("rollout_overlay.png")))).astype(float)
    assert np.abs(over - (0.7 * inp + 0.3 * heat)).max() <= 1.0
    one_line_error(client.get(out["download_url"], params={"opacity": 2}), 400, "opacity")
    one_line_error(client.get("/api/results/nonexistent.zip"), 404, "no longer kept")


# -------------------------------------------------------------------------------------------- listing
def test_models_list_methods_from_the_registry(client, service):
    models = client.get("/api/models").json()
    assert [m["spec"] for m in models] == MODELS
    for m in models:
        model = service.entries[m["spec"]].model
        assert [x["name"] for x in m["methods"]] == vitlens.applicable_explainers(model)
        for x in m["methods"]:
            assert [p["name"] for p in x["params"]] == vitlens.explainer_info(x["name"])["params"]
    vit, cnn = models
    rollout = next(x for x in vit["methods"] if x["name"] == "rollout")
    fields = {p["name"]: p for p in rollout["params"]}
    assert fields["head_fusion"]["choices"] == ["mean", "max", "min"] and fields["discard_ratio"]["default"] == 0.0
    gradcam_vit = next(x for x in vit["methods"] if x["name"] == "gradcam")["params"][0]
    assert gradcam_vit["choices"] == [-1, -2, -3, -4, -5, -6]  # cells_vit has 6 blocks
    assert "rollout" not in [x["name"] for x in cnn["methods"]]
    assert "layer4" in next(x for x in cnn["methods"] if x["name"] == "gradcam")["params"][0]["choices"]
    assert vit["classes"] == ["neutrophil", "lymphocyte", "monocyte", "eosinophil"] and vit["benchmark"] == "cells"
    samples = client.get("/api/samples").json()
    assert {s["benchmark"] for s in samples} == {"cells", "ultrasound", "shortcut"}
    png = client.get(samples[0]["url"])
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (112, 112)


def test_default_models_are_the_builtins():
    assert DEFAULT_MODELS == (
        "builtin:cells_vit",
        "builtin:cells_cnn",
        "builtin:ultrasound_vit",
        "builtin:ultrasound_cnn",
        "builtin:shortcut_vit",
    )
    assert {s.split(":")[1] for s in DEFAULT_MODELS} <= set(vitlens.list_builtin())


def test_page_is_self_contained(client):
    r = client.get("/")
    assert r.status_code == 200 and "<title>" in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    for path in ("/", "/app.js", "/app.css"):
        body = client.get(path).text
        assert "http://" not in body and "https://" not in body and "//cdn" not in body, path
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


# ---------------------------------------------------------------------------------------------- limits
def test_oversized_file_is_refused_with_the_limit(client):
    r = post(client, {"model": "builtin:cells_vit", "methods": ["rollout"]}, b"\x89PNG" + b"\0" * 20_000_000)
    one_line_error(r, 413, "20.0 MB", "limit")


def test_oversized_body_is_refused_before_reading(client):
    big = b"\0" * 22_000_000  # over the file limit plus the form's overhead: refused from Content-Length
    r = client.post("/api/explain", content=big, headers={"content-type": "multipart/form-data; boundary=x"})
    one_line_error(r, 413, "20.0 MB")

    def chunks():  # no Content-Length: cut off once the body passes the limit
        for _ in range(30):
            yield b"\0" * 1_000_000

    r = client.post("/api/explain", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    one_line_error(r, 413, "20.0 MB")


def png_header_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A grayscale PNG of ``width`` x ``height`` zeros; ``rows`` compresses only that many rows (a file that
    declares the size in its header but is truncated: only the header is meant to be read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height if rows is None else rows)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_from_the_header(client):
    bomb = png_header_bomb(10_000, 10_000)  # a valid PNG: 100 megapixels of zeros in ~100 kB
    assert len(bomb) < 200_000
    r = post(client, {"model": "builtin:cells_vit", "methods": ["rollout"]}, bomb, name="bomb.png")
    one_line_error(r, 413, "bomb.png", "10000x10000", "40 megapixels")
    # beyond PIL's own bomb limit too (it raises before our check can run)
    r = post(client, {"model": "builtin:cells_vit"}, png_header_bomb(30_000, 30_000, rows=10), path="/api/predict")
    one_line_error(r, 413)
    # just over the limit in one dimension pair (8000 x 5001 = 40.008 MP)
    r = post(client, {"model": "builtin:cells_vit"}, png_header_bomb(8000, 5001, rows=10), path="/api/predict")
    one_line_error(r, 413, "8000x5001")


def test_corrupt_files_give_a_message(client):
    good = sample_png("cells/0")
    settings = {"model": "builtin:cells_vit", "methods": ["rollout"]}
    one_line_error(post(client, settings, good[: len(good) // 2], name="cut.png"), 400, "cut.png", "corrupt")
    one_line_error(post(client, settings, b"GIF89a" + b"\0" * 100, name="x.gif"), 415, "not a PNG, JPEG")
    one_line_error(post(client, settings, b"%PDF-1.4 hello", name="a.pdf"), 415, "a.pdf")
    one_line_error(post(client, settings, b"", name="empty.png"), 400, "empty")


# ------------------------------------------------------------------------------------- invalid settings
@pytest.mark.parametrize(
    ("settings", "needles"),
    [
        ({"model": "timm:nope", "sample": "cells/0", "methods": ["rollout"]}, ["unknown model", "builtin:cells_vit"]),
        ({"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["nosuch"]}, ["unknown explainer 'nosuch'"]),
        ({"model": "builtin:cells_cnn", "sample": "cells/0", "methods": ["rollout"]}, ["rollout", "gradcam"]),
        (
            {"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"], "target": 4},
            ["target class 4 is out of range", "0..3"],
        ),
        ({"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"], "target": -1}, ["out of range"]),
        (
            {"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"], "target": "platelet"},
            ["platelet"],
        ),
        (
            {
                "model": "builtin:cells_vit",
                "sample": "cells/0",
                "methods": [{"name": "rollout", "params": {"discard_ratio": 1.5}}],
            },
            ["discard_ratio"],
        ),
        (
            {
                "model": "builtin:cells_vit",
                "sample": "cells/0",
                "methods": [{"name": "rollout", "params": {"bogus": 1}}],
            },
            ["no parameter bogus"],
        ),
        (
            {
                "model": "builtin:cells_vit",
                "sample": "cells/0",
                "methods": [{"name": "gradcam", "params": {"layer": 9}}],
            },
            ["layer=9"],
        ),
        ({"model": "builtin:cells_vit", "sample": "cells/99", "methods": ["rollout"]}, ["unknown sample"]),
        ({"model": "builtin:cells_vit", "methods": ["rollout"]}, ["choose an image"]),
        ({"model": "builtin:cells_vit", "sample": "cells/0", "methods": []}, ["at least one"]),
        ({"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"], "steps": 0}, ["steps"]),
        (
            {"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"], "colour": "red"},
            ["unknown settings"],
        ),
    ],
)
def test_bad_settings_are_400_with_a_message(client, settings, needles):
    one_line_error(post(client, settings), 400, *needles)


def test_malformed_requests(client):
    one_line_error(client.post("/api/explain", data={"settings": "{not json"}), 400, "not valid JSON")
    one_line_error(client.post("/api/explain", data={"other": "1"}), 400, "settings")
    one_line_error(
        client.post("/api/explain", content=b"x", headers={"content-type": "text/plain"}), 400, "multipart/form-data"
    )
    r = post(client, {"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"]}, sample_png())
    one_line_error(r, 400, "either")


@pytest.mark.parametrize(
    "method,params,needle",
    [
        ("rise", {"n_masks": 10**9}, "rise n_masks=1000000000 is more than the web app allows (8000)"),
        ("smoothgrad", {"n_samples": 10**6}, "smoothgrad n_samples=1000000 is more than the web app allows (200)"),
        ("integrated_gradients", {"n_steps": 10**6}, "n_steps=1000000 is more than the web app allows (200)"),
    ],
)
def test_cost_parameters_are_bounded_before_any_work(client, method, params, needle):
    settings = {"model": "builtin:cells_vit", "sample": "cells/0", "methods": [{"name": method, "params": params}]}
    one_line_error(post(client, settings), 400, needle)
    fields = {m["name"]: m["params"] for m in client.get("/api/models").json()[0]["methods"]}
    (field,) = [f for f in fields[method] if f["name"] == next(iter(params))]
    assert field["max"] == int(needle.split("(")[-1].rstrip(")"))  # the form offers no more than the server takes


def test_an_out_of_range_target_number_is_a_400(client):
    settings = {"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"]}
    one_line_error(post(client, {**settings, "target": 10**20}), 400, "out of range")
    one_line_error(post(client, {**settings, "target": "100000000000000000000"}), 400, "out of range")


def test_the_pixel_limit_is_the_servers_setting(service):
    from fastapi.testclient import TestClient

    from vitlens.app import create_app
    from vitlens.app.service import Service

    png = sample_png("cells/1")
    w, h = Image.open(io.BytesIO(png)).size
    strict = Service(dict((s, e.model) for s, e in service.entries.items()), max_pixels=w * h - 1)
    with TestClient(create_app(strict), raise_server_exceptions=False) as c:
        r = post(c, {"model": "builtin:cells_vit"}, png, path="/api/predict")
        one_line_error(r, 413, f"{w}x{h}", f"the limit is {(w * h - 1) / 1e6:g} megapixels", "--max-pixels")
    roomy = Service(dict((s, e.model) for s, e in service.entries.items()), max_pixels=w * h)
    with TestClient(create_app(roomy), raise_server_exceptions=False) as c:
        assert post(c, {"model": "builtin:cells_vit"}, png, path="/api/predict").status_code == 200
