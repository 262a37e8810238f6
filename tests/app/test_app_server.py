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


def _slow(spec):
    return {"model": spec, "sample": "cells/0", "methods": [{"name": "rise", "params": {"n_masks": 8000}}]}


def test_an_explanation_over_the_time_budget_stops_with_a_message():
    import time

    from vitlens.app.server import BackgroundServer
    from vitlens.app.service import Service

    svc = Service.from_specs(["builtin:cells_vit"], time_budget_s=0.5)
    with BackgroundServer(svc) as url:
        t0 = time.monotonic()
        r = httpx.post(url + "api/explain", json=_slow("builtin:cells_vit"), timeout=120)
        took = time.monotonic() - t0
    assert r.status_code == 503 and "time budget of 0.5 s" in r.json()["error"]
    assert took < 10, took  # stopped within a forward or two of the budget, not after 8000 masks


@pytest.mark.slow
def test_a_client_that_goes_away_frees_the_model_for_the_next_request():
    """A RISE request whose client disconnects after 1 s stops at its next forward: the next request for the
    same model gets the lock at once instead of after the 8000 masks."""
    import time

    from vitlens.app.server import BackgroundServer
    from vitlens.app.service import Service, parse_settings

    svc = Service.from_specs(["builtin:cells_vit"], time_budget_s=600)
    with BackgroundServer(svc) as url:
        t0 = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url + "api/explain", json=_slow("builtin:cells_vit"), timeout=1.0)
        fast = {"model": "builtin:cells_vit", "sample": "cells/0", "methods": ["rollout"], "metrics": False}
        r = httpx.post(url + "api/explain", json=fast, timeout=120)
        took = time.monotonic() - t0
    assert r.status_code == 200, r.text
    # the reference: a twentieth of the abandoned work (400 of its 8000 masks), timed on its own
    ref = Service.from_specs(["builtin:cells_vit"], time_budget_s=600)
    small = {**_slow("builtin:cells_vit"), "methods": [{"name": "rise", "params": {"n_masks": 400}}], "metrics": False}
    t1 = time.monotonic()
    ref.explain(parse_settings(small, need_methods=True))
    twentieth = time.monotonic() - t1
    assert took < 1.0 + twentieth, (took, twentieth)  # the 8000 masks were not computed


@pytest.mark.slow
def test_sigterm_stops_the_server_during_a_long_request():
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "vitlens", "serve", "--model", "builtin:cells_vit", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = re.search(r"(http://\S+/)", proc.stdout.readline()).group(1)
        answers = []

        def slow():
            try:
                answers.append(httpx.post(url + "api/explain", json=_slow("builtin:cells_vit"), timeout=300))
            except httpx.HTTPError as e:
                answers.append(e)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(2)  # RISE with 8000 masks is under way (about 90 s on 2 cores)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert time.monotonic() - t0 < 15  # the graceful-shutdown grace (5 s), then the work is cancelled
        t.join(timeout=30)
        assert answers and not isinstance(answers[0], httpx.Response)  # the connection closed, no result
    finally:
        if proc.poll() is None:
            proc.kill()
