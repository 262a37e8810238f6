"""The real server (uvicorn on loopback): concurrent requests are isolated, it binds only the given host, and
`vitlens serve` fails cleanly before listening."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from vitlens.cli import main

from .conftest import sample_png

# 8 different requests over both models: attention recorded on the same ViT by different methods and
# targets, Grad-CAM features on the CNN, uploads and samples, with the deletion/insertion forwards.
REQUESTS = [
    ({"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout", "grad_rollout"], "steps": 3}, None),
    (
        {
            "model": "builtin:cells_vit",
            "sample": "cells/1",
            "methods": ["generic_attention"],
            "target": 2,
            "metrics": False,
        },
        None,
    ),
    (
        {
            "model": "builtin:cells_vit",
            "methods": [{"name": "rollout", "params": {"head_fusion": "max"}}],
            "metrics": False,
        },
        "cells/2",
    ),
    ({"model": "builtin:cells_cnn", "sample": "cells/3", "methods": ["gradcam"], "steps": 3}, None),
    (
        {
            "model": "builtin:cells_vit",
            "sample": "ultrasound/1",
            "methods": ["grad_rollout", "attention_gradcam"],
            "target": 0,
            "metrics": False,
        },
        None,
    ),
    ({"model": "builtin:cells_cnn", "methods": ["gradcam"], "target": 1, "metrics": False}, "cells/4"),
    ({"model": "builtin:cells_vit", "sample": "cells/5", "methods": ["raw_attention", "gradcam"], "steps": 3}, None),
    (
        {"model": "builtin:cells_vit", "sample": "shortcut/0", "methods": ["rollout"], "target": 3, "metrics": False},
        None,
    ),
]


def call(url: str, settings: dict, upload: str | None) -> dict:
    with httpx.Client(base_url=url, timeout=120) as c:
        if upload is None:
            r = c.post("/api/explain", json=settings)
        else:
            r = c.post(
                "/api/explain",
                files={"image": ("u.png", sample_png(upload), "image/png")},
                data={"settings": json.dumps(settings)},
            )
    assert r.status_code == 200, r.text
    out = r.json()
    return {
        m["label"]: (m["map"]["b64"], m["target"], m["deletion"], m["insertion"], m["pointing_game"])
        for m in out["methods"]
    } | {"top": out["top"]}


def test_parallel_requests_give_exactly_the_sequential_maps(server_url):
    sequential = [call(server_url, s, u) for s, u in REQUESTS]
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        parallel = list(pool.map(lambda r: call(server_url, *r), REQUESTS))
    assert parallel == sequential  # bit-equal maps (base64 of the float32 bytes), targets, scores
    assert len({json.dumps(r, sort_keys=True) for r in sequential}) == len(REQUESTS)  # all different


def test_listens_only_on_the_given_host(server_url, service):
    from vitlens.app.server import BackgroundServer, bind

    port = int(server_url.rstrip("/").rsplit(":", 1)[1])
    assert server_url.startswith("http://127.0.0.1:")
    assert httpx.get(server_url + "api/health").json()["ok"] is True
    # 127.0.0.2 is this machine too (the whole 127/8 is loopback), but not the bound address
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.2", port)) != 0
    sock = bind("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    with BackgroundServer(service) as url2:
        assert url2 != server_url and httpx.get(url2 + "api/health").status_code == 200


def test_serve_reports_bad_models_and_ports_in_one_line(capsys):
    assert main(["serve", "--model", "timm:not_a_model_xyz", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vitlens: error:") and "not_a_model_xyz" in err and "\n" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["serve", "--model", "builtin:cells_cnn", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err


def test_serve_help_lists_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for opt in ("--model", "--host", "--port", "127.0.0.1"):
        assert opt in out


def test_a_token_guards_every_api_call(service):
    """With --token, the API answers 401 without it and works with it (header or query); the page loads."""
    import httpx

    from vitlens.app.server import BackgroundServer

    with BackgroundServer(service, token="s3cret") as url:
        assert httpx.get(url).status_code == 200  # the page itself holds no data
        for path in ("api/health", "api/models", "api/results/x.zip"):
            r = httpx.get(url + path)
            assert r.status_code == 401 and "access token" in r.json()["error"]
            assert httpx.get(url + path, headers={"X-Vitlens-Token": "wrong"}).status_code == 401
        assert httpx.get(url + "api/health", headers={"X-Vitlens-Token": "s3cret"}).json()["ok"] is True
        assert httpx.get(url + "api/models?token=s3cret").status_code == 200
        settings = {"model": next(iter(service.entries)), "sample": "cells/0", "methods": ["rollout"]}
        r = httpx.post(url + "api/explain", json=settings, headers={"X-Vitlens-Token": "s3cret"}, timeout=60)
        assert r.status_code == 200 and r.json()["methods"]


def test_serving_beyond_loopback_without_a_token_warns(monkeypatch, capsys):
    import vitlens.app.server as server

    class Stop(Exception):
        pass

    def no_run(*a, **k):
        raise Stop

    monkeypatch.setattr(server, "make_server", no_run)
    monkeypatch.delenv("VITLENS_TOKEN", raising=False)
    with pytest.raises(Stop):
        server.serve(["builtin:cells_vit"], host="0.0.0.0", port=0)
    assert "without a token" in capsys.readouterr().err
    monkeypatch.setenv("VITLENS_TOKEN", "abc")
    with pytest.raises(Stop):
        server.serve(["builtin:cells_vit"], host="0.0.0.0", port=0)
    captured = capsys.readouterr()
    assert "without a token" not in captured.err and "?token=abc" in captured.out
