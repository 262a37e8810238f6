"""Fixtures of the web-app tests: one service with two small builtin models (a ViT and a CNN), shared."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the web app needs: pip install 'vitlens[app]'")
pytest.importorskip("python_multipart", reason="the web app needs python-multipart")

MODELS = ["builtin:cells_vit", "builtin:cells_cnn"]


@pytest.fixture(scope="session")
def service():
    from vitlens.app.service import Service

    return Service.from_specs(MODELS)


@pytest.fixture(scope="session")
def client(service):
    from fastapi.testclient import TestClient

    from vitlens.app import create_app

    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def server_url(service):
    """The real uvicorn server on 127.0.0.1, a free port, in a thread."""
    from vitlens.app.server import BackgroundServer

    with BackgroundServer(service) as url:
        yield url


def png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, format="PNG")
    return buf.getvalue()


def sample_png(sample_id: str = "cells/1") -> bytes:
    """A builtin test image saved as a PNG file, as a user would upload it."""
    from vitlens.app.catalog import get_sample

    return png_bytes(np.ascontiguousarray(get_sample(sample_id).image))
