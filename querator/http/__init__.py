"""HTTP for operators, on the RESP server's event loop: `GET /metrics` (Prometheus) and `GET /health`.

Nothing here runs on the RESP path: the listener only reads what the dispatcher and the connections
already count, and per-queue numbers are read when a request asks for them (ADR 13).
"""

from __future__ import annotations

from querator.http.server import HttpServer

__all__ = ["HttpServer"]
