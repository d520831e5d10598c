"""The dashboard's web server: Starlette on uvicorn (the ``[dashboard]`` extra).

Routes: ``/`` (the page), ``/static/*`` (its script, styles and the vendored
uPlot), ``/api/state`` (polled every second), ``/api/history`` (the charts,
every two seconds), and, only with ``--allow-actions``, ``POST
/api/dead-letters/<queue>/retry|purge`` with the token in ``X-Orch-Token``
(a header, not a cookie: another site cannot make a browser send it).

It binds to loopback unless told otherwise, and then also refuses requests
whose ``Host`` is not a loopback name (a DNS-rebinding page cannot read it).
Every answer forbids framing and caching; the page's policy allows scripts
from the dashboard only.
"""

from __future__ import annotations

import hmac
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.dashboard.board import Board

STATIC = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(board: Board, token: str | None, loopback_only: bool) -> Starlette:
    """The dashboard as an ASGI app; actions need ``board.actions`` and ``token``."""

    async def page(_: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=HEADERS)

    async def state(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(board.state), headers=HEADERS)

    async def charts(_: Request) -> Response:
        return JSONResponse(await run_in_threadpool(board.charts), headers=HEADERS)

    async def act(request: Request) -> Response:
        refusal = _refusal(board, token, request)
        if refusal is not None:
            return refusal
        queue, action = request.path_params["queue"], request.path_params["action"]
        body = await request.json() if await request.body() else {}
        ids = [str(i) for i in body.get("ids", [])] if isinstance(body, dict) else []
        do: Callable[..., int] = board.retry if action == "retry" else board.purge
        try:
            count = await run_in_threadpool(do, queue, ids)
        except (LookupError, ValueError) as exc:  # an unknown queue or dead letter
            return _error(400, str(exc.args[0]))
        return JSONResponse({"action": action, "queue": queue, "count": count}, headers=HEADERS)

    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK))]
    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/state", state),
            Route("/api/history", charts),
            Route("/api/dead-letters/{queue}/{action:str}", act, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC)),
        ],
        middleware=middleware if loopback_only else [],
    )


def _refusal(board: Board, token: str | None, request: Request) -> Response | None:
    if not board.actions or token is None:
        return _error(403, "read-only dashboard: start it with --allow-actions")
    if request.path_params["action"] not in ("retry", "purge"):
        return _error(404, "unknown action")
    given = request.headers.get("x-orch-token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        return _error(401, "wrong or missing token (X-Orch-Token)")
    return None


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=HEADERS)


def serve(board: Board, host: str, port: int, token: str | None, ready: Callable[[], Any]) -> None:
    """Serve until SIGINT/SIGTERM; ``ready()`` once listening."""
    app = create_app(board, token, loopback_only=host in LOOPBACK)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = _Server(config, ready)
    stop = threading.Event()
    watcher = threading.Thread(target=board.keep_watching, args=(stop,), daemon=True)
    watcher.start()
    for signum in (signal.SIGTERM, signal.SIGINT):  # uvicorn raises them again once stopped
        signal.signal(signum, _stopped)
    try:
        server.run()
    finally:
        stop.set()
    if not server.started:
        raise OSError(f"cannot listen on {host}:{port}")


def _stopped(signum: int, _: object) -> None:
    """A SIGTERM or SIGINT after uvicorn's graceful stop: a clean exit, 0."""
    raise SystemExit(0)


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it listens."""

    def __init__(self, config: uvicorn.Config, ready: Callable[[], Any]) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.ready()
