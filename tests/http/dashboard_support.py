"""Plain-HTTP helpers for the dashboard tests: one request with chosen headers, its status and JSON."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support import ServerProcess, free_port


def server_with_users(tmp_path: Path, config_text: str) -> ServerProcess:
    """A started memory-backend server with HTTP on a free port, configured by `config_text` (users);
    its RESP side takes `admin-pass` for `default`, the tests' convention."""
    config = tmp_path / "querator.toml"
    config.write_text('requirepass = "admin-pass"\n' + config_text)
    return ServerProcess(
        tmp_path / "data", "--config", str(config), backend="memory", http_port=free_port()
    ).start()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def call(
    server: ServerProcess,
    path: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body or text) of one request; no redirect or retry in between."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, raw, kind = response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        status, raw, kind = exc.code, exc.read(), exc.headers["Content-Type"] or ""
    return status, json.loads(raw) if kind.startswith("application/json") else raw.decode()


def action(
    server: ServerProcess,
    queue: str,
    name: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None,
    origin: str | None = "same",
    authorization: str = "",
) -> tuple[int, Any]:
    """A dashboard POST as the page sends it; `origin="same"` is the server's own, None sends none."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Querator-Token"] = token
    if origin == "same":
        headers["Origin"] = f"http://127.0.0.1:{server.http_port}"
    elif origin is not None:
        headers["Origin"] = origin
    if authorization:
        headers["Authorization"] = authorization
    encoded = urllib.request.quote(queue, safe="")
    return call(
        server,
        f"/api/queues/{encoded}/{name}",
        method="POST",
        body=json.dumps(body or {}).encode(),
        headers=headers,
    )


def token(server: ServerProcess, authorization: str = "") -> str:
    status, session = call(
        server, "/api/session", headers={"Authorization": authorization} if authorization else {}
    )
    assert status == 200, session
    return str(session["token"])
