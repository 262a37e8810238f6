"""Running the app with uvicorn: bind exactly the given host, then serve.

The listening socket is created here (:func:`bind`) and handed to uvicorn, so the app listens on that one
address and nothing else (default ``127.0.0.1``: only this machine), port 0 picks a free port, and the
address printed is the real one. A host that is not a loopback address gets a warning: the app has no
authentication. :class:`BackgroundServer` runs the same server in a thread (tests, benchmarks).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import quote

import uvicorn

from ..data.images import MAX_PIXELS
from ..errors import InputError
from .api import create_app
from .service import TIME_BUDGET_S, Service

LIMIT_CONCURRENCY = 64  # connections served at once; more get 503 instead of piling up
GRACEFUL_SHUTDOWN_S = 5
KEEP_ALIVE_S = 5


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on exactly ``host:port`` (``InputError`` naming the address if that fails)."""
    if not 0 <= int(port) <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def make_server(
    service: Service, sock: socket.socket, log_level: str = "warning", token: str | None = None
) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(service, token=token),
        log_level=log_level,
        access_log=False,
        limit_concurrency=LIMIT_CONCURRENCY,
        timeout_keep_alive=KEEP_ALIVE_S,
        # on SIGTERM / Ctrl-C, running requests get this long; then they are cancelled, which stops their work
        # at its next forward (vitlens.app.api: the cancel event)
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        ws="none",
        lifespan="off",
    )
    return uvicorn.Server(config)


def serve(
    models: list[str] | None,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    seed: int = 0,
    log_level: str = "warning",
    device: str = "auto",
    token: str | None = None,
    time_budget_s: float = TIME_BUDGET_S,
    max_pixels: int = MAX_PIXELS,
) -> int:
    """Load the models onto ``device`` (errors before anything listens), bind, print the address, serve until
    Ctrl-C. ``token`` (or the ``VITLENS_TOKEN`` environment variable): every API call must present it; the
    printed address carries it."""
    token = token or os.environ.get("VITLENS_TOKEN") or None
    if not time_budget_s > 0:
        raise InputError(f"--time-budget must be a positive number of seconds, got {time_budget_s}")
    service = Service.from_specs(models, seed=seed, device=device, time_budget_s=time_budget_s, max_pixels=max_pixels)
    sock = bind(host, port)
    if not is_loopback(host) and not token:
        print(
            f"vitlens: warning: listening on {host} without a token: anyone who can reach this address can use "
            "the app; pass --token (or set VITLENS_TOKEN)",
            file=sys.stderr,
        )
    url = url_of(sock) + (f"?token={quote(token)}" if token else "")
    print(f"vitlens: serving {', '.join(service.entries)} at {url} (Ctrl-C to stop)", flush=True)
    make_server(service, sock, log_level, token=token).run(sockets=[sock])
    return 0


class BackgroundServer:
    """``with BackgroundServer(service) as url:`` the real uvicorn server on 127.0.0.1, a free port, in a thread."""

    def __init__(self, service: Service, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> None:
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = make_server(service, self.sock, **kwargs)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the app server did not start")
            time.sleep(0.02)
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
