"""The dashboard's JSON API under `/api/`: thin adapters over `Service`, as the RESP commands are.

A request arrives here authenticated (the server's job); this module keeps the rest of SPEC 8's promise:
a user sees and touches only the queues its patterns allow (any other is answered as missing), reads need
any group, and a POST acts only with the `admin` group and a valid CSRF token from a same-origin page,
and otherwise changes nothing (ADR 16).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from querator import snapshot
from querator.auth import READ, User
from querator.clients import ServerState
from querator.errors import CommandError, NoQueueError, QueratorError
from querator.http.csrf import TOKEN_HEADER, Csrf
from querator.model import DEFAULT_REDRIVE_LIMIT, QueueInfo, QueueStats, StoredItem

# A page of items shows at most this much of each payload: a page of 1000 items of 1 MiB must not be a GB.
PAYLOAD_PREVIEW_BYTES = 4096
DEFAULT_PAGE = 50
_MAX_BODY_BYTES = 64 * 1024
_STATUS = {"NOQUEUE": 404, "TRYAGAIN": 503, "SHUTDOWN": 503}

Json = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Api:
    def __init__(self, state: ServerState, csrf: Csrf) -> None:
        self.state = state
        self.csrf = csrf
        self._actions: dict[str, Callable[[str, Json, User], Awaitable[Json]]] = {
            "pause": self._pause,
            "resume": self._resume,
            "redrive": self._redrive,
            "remove": self._remove,
            "clear": self._clear,
        }

    async def handle(self, request: web.BaseRequest, user: User, segments: list[str]) -> web.Response:
        """`segments`: the decoded path after `/api/` (a queue name may hold `/`, sent as `%2F`)."""
        try:
            if not user.may_use(READ):
                raise ApiError(403, "NOPERM", "this user has no command group")
            return _json(200, await self._route(request, user, segments))
        except ApiError as exc:
            return _json(exc.status, {"error": exc.code, "message": exc.message})
        except QueratorError as exc:
            return _json(_STATUS.get(exc.code, 400), {"error": exc.code, "message": exc.message})

    async def _route(self, request: web.BaseRequest, user: User, segments: list[str]) -> Json:
        method = request.method
        match segments:
            case ["session"] if method == "GET":
                return {"user": user.name, "admin": _admin(user), "token": self.csrf.token(user.name)}
            case ["queues"] if method == "GET":
                return await self._queues(user)
            case ["queues", name] if method == "GET":
                return await self._queue(self._visible(user, name))
            case ["queues", name, "items"] if method == "GET":
                return await self._items(self._visible(user, name), request.query)
            case ["queues", name, action] if method == "POST" and action in self._actions:
                body = await self._checked_post(request, user)
                return await self._actions[action](self._visible(user, name), body, user)
        if segments[:1] in (["session"], ["queues"]):
            raise ApiError(405, "ERR", "method not allowed")
        raise ApiError(404, "ERR", "no such API path")

    def _visible(self, user: User, name: str) -> str:
        # A queue the user may not see is answered as missing, so its existence does not leak.
        if not user.may_access(name) or name not in self.state.service.queues:
            raise NoQueueError(name)
        return name

    async def _checked_post(self, request: web.BaseRequest, user: User) -> Json:
        """Refuse before acting: a foreign page, a missing token, a user without `admin`, a bad body."""
        why = self.csrf.refusal(
            user.name, request.headers.get(TOKEN_HEADER, ""), request.headers.get("Origin"), request.host
        )
        if why:
            raise ApiError(403, "CSRF", why)
        if not _admin(user):
            raise ApiError(403, "NOPERM", "actions need the admin group")
        if request.content_type != "application/json":
            raise ApiError(415, "ERR", "the body must be application/json")
        raw = await request.content.read(_MAX_BODY_BYTES + 1)
        if len(raw) > _MAX_BODY_BYTES:
            raise ApiError(413, "ERR", "body too large")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, "ERR", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "ERR", "the body must be a JSON object")
        return body

    # -- reads -------------------------------------------------------------------------------------------

    async def _queues(self, user: User) -> Json:
        service = self.state.service
        stats = await snapshot.queue_stats(service)
        rows = []
        for name, numbers in stats.items():
            if not user.may_access(name) or name not in service.queues:
                continue
            info = await service.queue_info(name)
            rows.append({**_info(info), **_stats(numbers, partitions=False)})
        return {"time": service.clock.now_ms(), "queues": rows}

    async def _queue(self, name: str) -> Json:
        service = self.state.service
        info, stats = await asyncio.gather(service.queue_info(name), service.queue_stats(name))
        dead_of = sorted(q.name for q in service.queues.values() if q.options.dead_queue == name)
        return {
            "time": service.clock.now_ms(),
            "info": _info(info),
            "stats": _stats(stats, partitions=True),
            "dead_queue_of": dead_of,
        }

    async def _items(self, name: str, query: Any) -> Json:
        limit = _int(query.get("limit"), "limit", DEFAULT_PAGE)
        partition = _int(query.get("partition"), "partition", None)
        after = query.get("after") or None
        items = await self.state.service.items(name, partition=partition, after=after, limit=limit)
        # A full page may have more behind it; the page asks again AFTER its last id (as QITEMS).
        return {
            "items": [_item(item) for item in items],
            "next": items[-1].id if len(items) == limit else None,
        }

    # -- actions (admin, CSRF-checked) ---------------------------------------------------------------------

    async def _pause(self, name: str, body: Json, user: User) -> Json:
        await self.state.service.pause(name)
        return {"ok": True}

    async def _resume(self, name: str, body: Json, user: User) -> Json:
        await self.state.service.resume(name)
        return {"ok": True}

    async def _redrive(self, name: str, body: Json, user: User) -> Json:
        to = body.get("to") or None
        if to is not None:
            if not isinstance(to, str):
                raise CommandError("TO must be a queue name")
            to = self._visible(user, to)
        limit = _int(body.get("limit"), "limit", DEFAULT_REDRIVE_LIMIT)
        return {"moved": await self.state.service.redrive(name, to=to, limit=limit)}

    async def _remove(self, name: str, body: Json, user: User) -> Json:
        ids = body.get("ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise CommandError("ids must be a non-empty list of item ids")
        return {"removed": await self.state.service.remove(name, ids)}

    async def _clear(self, name: str, body: Json, user: User) -> Json:
        return {"removed": await self.state.service.clear(name, include_leased=body.get("all") is True)}


def _admin(user: User) -> bool:
    return "admin" in user.groups


def _int(value: object, name: str, default: int | None) -> Any:
    if value is None or value == "":
        return default
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise CommandError(f"{name} must be an integer")
    try:
        return int(value)
    except ValueError:
        raise CommandError(f"{name} must be an integer") from None


def _info(info: QueueInfo) -> Json:
    return asdict(info)


def _stats(stats: QueueStats, *, partitions: bool) -> Json:
    found = asdict(stats)
    found["total"] = stats.total
    if partitions:
        found["partitions"] = [{**asdict(p), "total": p.total} for p in stats.partitions]
    else:
        found.pop("partitions")
    return found


def _item(item: StoredItem) -> Json:
    found = asdict(item)
    payload = item.payload
    found["payload"] = payload[:PAYLOAD_PREVIEW_BYTES].decode("utf-8", "replace")
    found["payload_bytes"] = len(payload)
    for field in ("kind", "reference", "encoding", "reason"):
        found[field] = found[field].decode("utf-8", "replace")
    return found


def _json(status: int, body: Json) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
