"""The vitlens web app (``vitlens serve``): explain an image in the browser, compare methods side by side,
with faithfulness and localisation scores.

Why FastAPI + uvicorn and one small page, not Gradio (the usual choice for ML demos):

* offline and private by construction: Gradio's front end loads fonts and assets from CDNs and its
  launcher sends usage analytics unless told not to; this machine (and a hospital network) has no
  internet, and patient images must not leave it. The page here is one HTML document with its own
  script and stylesheet (system fonts, no framework, no CDN), served with a Content-Security-Policy that
  forbids every other origin;
* the limits are ours and testable: upload size, pixel count (decompression bombs), corrupt files and
  concurrency are enforced and tested at the HTTP API level (:mod:`~vitlens.app.uploads`,
  :class:`~vitlens.app.api.BodyLimit`), not hidden behind a framework's queue;
* request isolation is explicit: the model adapter records attention through hooks on the shared
  module, so requests for one model are serialised with a lock (:mod:`~vitlens.app.service`); Gradio's
  queue would hide that, and its concurrency settings apply per event, not per model;
* a JSON API is useful on its own (scripts, other front ends) and the browser test drives the same API.

Layout: :mod:`.uploads` (limits, decoding), :mod:`.catalog` (methods and their parameter fields from the
explainer registry, builtin samples), :mod:`.render` (PNG, overlays, the download zip), :mod:`.service`
(models, locks, predict, explain, scores), :mod:`.api` (FastAPI routes, errors), :mod:`.page` (HTML, CSS,
JS), :mod:`.server` (binding and running uvicorn). Needs ``pip install 'vitlens[app]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import VitlensError

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from .service import Service

__all__ = ["create_app", "serve"]


def _need_app_deps() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (python-multipart >= 0.0.13, for uploads)
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise VitlensError(
            f"the web app needs FastAPI, uvicorn and python-multipart ({e.name} is missing): pip install 'vitlens[app]'"
        ) from None


def create_app(service: Service) -> FastAPI:
    """The FastAPI app serving ``service`` (see :mod:`vitlens.app.api`)."""
    _need_app_deps()
    from .api import create_app as _create

    return _create(service)


def serve(models: list[str] | None = None, host: str = "127.0.0.1", port: int = 7860, **kwargs: Any) -> int:
    """Load ``models`` (default: the builtin models) and serve the app on ``host:port`` until interrupted."""
    _need_app_deps()
    from .server import serve as _serve

    return _serve(models, host, port, **kwargs)
