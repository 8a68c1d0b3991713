"""The HTTP listener: aiohttp's low-level server (one handler, no application framework) on the loop
that runs RESP, so it needs no thread and reads the server's counters without locks (ADR 13).

Routes: `GET /metrics`, `GET /health`, the dashboard (`GET /`, `GET /static/...`) and its API (`/api/...`,
ADR 16); anything else is 404, another method 405. A port that is taken fails the start with one line,
like the RESP port. When the RESP side needs a password so does every route but /health (HTTP Basic, the
same users); `http-metrics-public` opens /metrics alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import unquote

from aiohttp import web

from querator import snapshot
from querator.auth import User
from querator.clients import ServerState
from querator.http.api import Api
from querator.http.auth import CHALLENGE, basic_user
from querator.http.csrf import Csrf
from querator.http.dashboard import static_response
from querator.http.metrics import Metrics

log = logging.getLogger("querator.http")

# /health's storage probe: a read through every partition must answer within this time.
HEALTH_TIMEOUT_S = 2.0
_SHUTDOWN_TIMEOUT_S = 1.0


class HttpServer:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.metrics = Metrics(state)
        self.api = Api(state, Csrf())
        self._handler: web.Server | None = None
        self._listener: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        # Made here: aiohttp's server binds to the running loop.
        self._handler = web.Server(self._handle, access_log=None)
        # A taken port raises OSError; the server turns it into its one-line start-up error.
        self._listener = await loop.create_server(self._handler, host, port, reuse_address=True)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._listener is None or self._handler is None:
            return
        self._listener.close()
        await self._handler.shutdown(_SHUTDOWN_TIMEOUT_S)
        self._listener = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path == "/health":
            return _get_only(request) or await self._health(request)
        if path == "/metrics" and self.state.config.http_metrics_public:
            return _get_only(request) or await self._metrics(request, None)
        user = self._user(request)
        if user is None:
            return web.Response(
                status=401, text="authentication required\n", headers={"WWW-Authenticate": CHALLENGE}
            )
        if path == "/metrics":
            return _get_only(request) or await self._metrics(request, user)
        raw = request.rel_url.raw_path
        if raw.startswith("/api/"):
            # Split before decoding: a queue name may hold "/", which the page sends as %2F.
            return await self.api.handle(request, user, [unquote(s) for s in raw[5:].split("/")])
        if path == "/" or path.startswith("/static/"):
            return _get_only(request) or static_response(path[8:] if path != "/" else "index.html")
        return web.Response(status=404, text="not found\n")

    def _user(self, request: web.BaseRequest) -> User | None:
        """Who asks: the Basic user when the RESP side needs a password (None if not proven), otherwise
        `default`, who may do everything, as on RESP."""
        users = self.state.users
        if not users.default_needs_password():
            return users.default
        return basic_user(users, request.headers.get("Authorization", ""), request.remote or "")

    async def _metrics(self, request: web.BaseRequest, user: User | None) -> web.StreamResponse:
        body, content_type = await self.metrics.render(request.headers.get("Accept", ""), user)
        response = web.Response(body=body)
        # prometheus_client's content types carry parameters, which `content_type=` would refuse.
        response.headers["Content-Type"] = content_type
        return response

    async def _health(self, request: web.BaseRequest) -> web.StreamResponse:
        reason = await self._unhealthy()
        if reason:
            return _json(503, {"status": "unavailable", "reason": reason})
        return _json(200, {"status": "ok", "queues": self.state.service.summary()["queues"]})

    async def _unhealthy(self) -> str:
        """Why the server cannot serve now, or "" when it can."""
        phase = self.state.phase
        if phase != "serving":
            return "shutting down" if phase == "stopping" else phase
        try:
            # Every partition answers a read in its turn: their actors, and so their commits, are running.
            await asyncio.wait_for(snapshot.queue_stats(self.state.service), HEALTH_TIMEOUT_S)
        except TimeoutError:
            return "storage not answering"
        return ""


def _get_only(request: web.BaseRequest) -> web.Response | None:
    if request.method in ("GET", "HEAD"):
        return None
    return web.Response(status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"})


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body) + "\n", content_type="application/json")
