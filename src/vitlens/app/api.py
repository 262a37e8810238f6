"""The HTTP API (FastAPI) over :class:`~vitlens.app.service.Service`, and the page.

=====================================  ===========================================================
``GET /``                              the page (``/app.js``, ``/app.css``: its script and style)
``GET /api/models``                    served models: classes, note, applicable methods and their parameters
``GET /api/samples``                   builtin test images with ground-truth masks; ``/api/samples/B/I.png``
``POST /api/predict``                  top-5 classes of an image
``POST /api/explain``                  maps, overlays, deletion/insertion AUC, pointing game
``GET /api/results/ID.zip?opacity=A``  the maps (.npy, PNG) and ``settings.json`` of a recent explanation
=====================================  ===========================================================

``predict`` and ``explain`` take ``multipart/form-data`` with a ``settings`` field (JSON, see
:func:`~vitlens.app.service.parse_settings`) and an optional ``image`` file, or a JSON body of the settings
alone (builtin samples). Every error is ``{"error": "<one line>"}`` with status 400 (bad input), 404
(unknown result), 413 (too large), 415 (not an image) or 500 (a bug: the traceback goes to the server log,
never to the client). Bodies larger than the upload limit are refused from ``Content-Length`` before they
are read, and bodies without one are cut off once they pass it (:class:`BodyLimit`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import Cancelled, InputError, VitlensError
from . import page, render
from .catalog import get_sample, sample_list
from .service import Service, parse_settings
from .uploads import MAX_UPLOAD_BYTES, DecodedImage, UploadError, check_size, decode_image, mb

log = logging.getLogger("vitlens.app")

FORM_OVERHEAD = 1_000_000  # multipart boundaries, headers and the settings field
MAX_SETTINGS_BYTES = 64_000
DISCONNECT_POLL_S = 0.25  # how often a running explanation checks that its client is still there

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


class _TooLarge(Exception):
    pass


class TokenGate:
    """ASGI middleware: with a token set, every ``/api/`` request must present it, in an ``X-Vitlens-Token``
    header (the page's requests) or a ``token`` query parameter (links, e.g. the download); else 401. The page
    itself (``/``, its script and style) holds no data and is served to anyone; it reads the token from its
    own address (``/?token=...``, the address ``vitlens serve`` prints)."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.token = token.encode()

    def _presented(self, scope) -> bytes:
        for key, value in scope.get("headers", []):
            if key == b"x-vitlens-token":
                return value
        for part in scope.get("query_string", b"").split(b"&"):
            name, _, value = part.partition(b"=")
            if name == b"token":
                from urllib.parse import unquote_to_bytes

                return unquote_to_bytes(value)
        return b""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            if not hmac.compare_digest(self._presented(scope), self.token):
                await error(401, "this server requires its access token: open the address `vitlens serve` printed")(
                    scope, receive, send
                )
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (413) without reading them."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = (
            f"the upload is larger than {mb(MAX_UPLOAD_BYTES)}, the limit; choose a smaller image or "
            "save it as a compressed PNG or JPEG"
        )
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await error(400, "invalid Content-Length header")(scope, receive, send)
                    return
                if declared > self.max_bytes:
                    await error(413, message)(scope, receive, send)
                    return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return msg

        async def tracking_send(msg):
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await error(413, message)(scope, receive, send)


async def read_request(request: Request, *, need_methods: bool):
    """(settings, decoded upload or None) of a predict/explain request."""
    ctype = request.headers.get("content-type", "")
    upload: DecodedImage | None = None
    if ctype.startswith("application/json"):
        body = await request.body()
        if len(body) > MAX_SETTINGS_BYTES:
            raise InputError(f"settings are larger than {MAX_SETTINGS_BYTES} bytes")
        raw_settings: Any = body.decode("utf-8", "replace")
    elif ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form(max_files=1, max_fields=2, max_part_size=MAX_SETTINGS_BYTES)
        raw_settings = form.get("settings")
        if raw_settings is None:
            raise InputError("the form has no 'settings' field (JSON)")
        if not isinstance(raw_settings, str):
            raise InputError("'settings' must be a text field holding JSON, not a file")
        file = form.get("image")
        if file is not None and not isinstance(file, UploadFile):
            raise InputError("'image' must be a file upload")
        if file is not None:
            name = file.filename or "the upload"
            data = await file.read(MAX_UPLOAD_BYTES + 1)
            await file.close()
            check_size(len(data), name)
            upload = await run_in_threadpool(decode_image, data, name, request.app.state.service.max_pixels)
    else:
        raise InputError("send multipart/form-data (settings + image) or application/json (settings)")
    try:
        parsed = json.loads(raw_settings)
    except json.JSONDecodeError as e:
        raise InputError(f"settings are not valid JSON ({e.msg} at position {e.pos})") from None
    return parse_settings(parsed, need_methods=need_methods), upload


def create_app(service: Service, token: str | None = None) -> FastAPI:
    """The FastAPI application serving ``service`` (no docs UI: it would load scripts from a CDN); with a
    ``token``, every API call must present it (:class:`TokenGate`)."""
    app = FastAPI(title="vitlens", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=MAX_UPLOAD_BYTES + FORM_OVERHEAD)
    if token:
        app.add_middleware(TokenGate, token=token)  # added last: runs first

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, e: UploadError):
        return error(e.status, str(e))

    @app.exception_handler(Cancelled)
    async def _cancelled(_request: Request, e: Cancelled):
        return error(503, str(e))

    @app.exception_handler(VitlensError)
    async def _vitlens_error(_request: Request, e: VitlensError):
        return error(400, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, e: StarletteHTTPException):
        return error(e.status_code, str(e.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(422, f"invalid request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def _internal_error(_request: Request, e: Exception):
        log.exception("internal error")
        return error(500, f"internal error ({type(e).__name__}); see the server log")

    def asset(body: str, media_type: str) -> Response:
        return Response(body, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/", response_class=HTMLResponse)
    async def index() -> Response:
        return asset(page.HTML, "text/html; charset=utf-8")

    @app.get("/app.js")
    async def script() -> Response:
        return asset(page.JS, "text/javascript; charset=utf-8")

    @app.get("/app.css")
    async def style() -> Response:
        return asset(page.CSS, "text/css; charset=utf-8")

    @app.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"ok": True, "models": list(service.entries)}

    @app.get("/api/models")
    async def models() -> list[dict[str, Any]]:
        return await run_in_threadpool(service.models_info)

    @app.get("/api/samples")
    async def samples() -> list[dict[str, Any]]:
        return await run_in_threadpool(sample_list)

    @app.get("/api/samples/{benchmark}/{index}.png")
    async def sample_png(benchmark: str, index: str) -> Response:
        s = await run_in_threadpool(get_sample, f"{benchmark}/{index}")
        return Response(render.png_bytes(s.image), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/predict")
    async def predict(request: Request) -> dict[str, Any]:
        settings, upload = await read_request(request, need_methods=False)
        return await run_in_threadpool(service.predict, settings, upload)

    @app.post("/api/explain")
    async def explain(request: Request) -> dict[str, Any]:
        settings, upload = await read_request(request, need_methods=True)
        cancel = threading.Event()  # set when the client goes away: the work stops at its next forward
        work = asyncio.ensure_future(run_in_threadpool(service.explain, settings, upload, cancel))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
                if not work.done() and await request.is_disconnected():
                    cancel.set()
            return work.result()
        finally:
            cancel.set()  # also when this handler is cancelled itself (server shutdown)

    @app.get("/api/results/{result_id}.zip")
    async def download(result_id: str, opacity: float = 0.5) -> Response:
        if not 0.0 <= opacity <= 1.0:
            return error(400, f"opacity must be in [0, 1], got {opacity}")
        try:
            data = await run_in_threadpool(service.download, result_id, opacity)
        except KeyError:
            return error(
                404,
                "this result is no longer kept on the server (only the most recent ones are); "
                "run the explanation again",
            )
        return Response(
            data,
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="vitlens-{result_id[:8]}.zip"'},
        )

    return app
