"""The HTTP listener: aiohttp's low-level server (one handler, no application framework) on the loop
that runs RESP, so it needs no thread and reads the server's counters without locks (ADR 13).

Routes: `GET /metrics`, `GET /health`; anything else is 404, another method 405. A port that is taken
fails the start with one line, like the RESP port. When the RESP side needs a password so does /metrics
(HTTP Basic, the same users), unless `http-metrics-public`; /health never does.
"""

from __future__ import annotations

import asyncio
import json
import logging

from aiohttp import web

from querator import snapshot
from querator.auth import User
from querator.clients import ServerState
from querator.http.auth import CHALLENGE, basic_user
from querator.http.metrics import Metrics

log = logging.getLogger("querator.http")

# /health's storage probe: a read through every partition must answer within this time.
HEALTH_TIMEOUT_S = 2.0
_SHUTDOWN_TIMEOUT_S = 1.0


class HttpServer:
    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.metrics = Metrics(state)
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
        route = {"/metrics": self._metrics, "/health": self._health}.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found\n")
        if request.method not in ("GET", "HEAD"):
            return web.Response(status=405, text="method not allowed\n", headers={"Allow": "GET, HEAD"})
        return await route(request)

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        user: User | None = None
        users = self.state.users
        if users.default_needs_password() and not self.state.config.http_metrics_public:
            user = basic_user(users, request.headers.get("Authorization", ""), request.remote or "")
            if user is None:
                return web.Response(
                    status=401, text="authentication required\n", headers={"WWW-Authenticate": CHALLENGE}
                )
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


def _json(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, text=json.dumps(body) + "\n", content_type="application/json")
