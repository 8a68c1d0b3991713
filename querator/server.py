"""The RESP server: listening sockets, the connection limit, signals and graceful shutdown, and the HTTP
listener for operators (/metrics, /health) on the same loop.

Shutdown order (as uvicorn does it): stop accepting; stop reading, but let every connection run and answer
the commands it already received, within `shutdown-grace-ms`; then close the service (blocked consumers
are answered, partitions finish their last batch, storage closes); last, flush and close the connections.
HTTP listens first and stops last, so /health can say "starting" and "shutting down".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable
from typing import TypeVar

from querator.auth import Users
from querator.clients import ServerState
from querator.commands import Dispatcher, build_table
from querator.config import Config
from querator.connection import Connection
from querator.http import HttpServer
from querator.service import Service

log = logging.getLogger("querator")
_DRAIN_POLL_S = 0.005
T = TypeVar("T")
# How often the command count is sampled for `instantaneous_ops_per_sec` (as Redis: every 100 ms).
_OPS_SAMPLE_S = 0.1


def tls_context(config: Config) -> ssl.SSLContext:
    """Server-side TLS: the certificate and key, and client certificates as `tls-auth-clients` says."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    if config.tls_ca_cert_file:
        context.load_verify_locations(config.tls_ca_cert_file)
    context.verify_mode = {
        "no": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "yes": ssl.CERT_REQUIRED,
    }[config.tls_auth_clients]
    return context


class ListenError(OSError):
    """A listening socket could not be opened; `setting` is the config field of its port."""

    def __init__(self, setting: str, address: str, port: int, reason: OSError) -> None:
        # asyncio's text repeats the address; the errno's own words are the part worth a line.
        why = os.strerror(reason.errno).lower() if reason.errno else str(reason)
        super().__init__(f"cannot listen; {address}:{port}: {why}")
        self.setting = setting
        self.address = address
        self.port = port
        self.reason = why


async def _listen(setting: str, address: str, port: int, opening: Awaitable[T]) -> T:
    try:
        return await opening
    except OSError as exc:
        raise ListenError(setting, address, port, exc) from exc


class Server:
    def __init__(self, config: Config, service: Service | None = None) -> None:
        self.config = config
        self.dispatch = Dispatcher(build_table())
        self.service = service or Service(config)
        self.state = ServerState(config=config, service=self.service, users=Users.from_config(config))
        self.service.on_commit = self.state.statistics.commits.observe
        self.state.phase = "starting"
        self.http = HttpServer(self.state) if config.http_port else None
        self._sampler: asyncio.Task[None] | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tls_server: asyncio.base_events.Server | None = None
        self._stopped = asyncio.Event()
        self._connections: set[Connection] = set()

    @property
    def port(self) -> int:
        return self.state.tcp_port

    async def start(self) -> None:
        try:
            if self.http is not None:
                host = self.config.http_bind or self.config.bind
                port = self.config.http_port
                await _listen("http_port", host, port, self.http.start(host, port))
            await self.service.start()
            await self._listen()
        except BaseException:
            # Nothing was served: close storage now, so its lock and files are released before exiting.
            for listener in (self._server, self._tls_server):
                if listener is not None:
                    listener.close()
            if self.http is not None:
                await self.http.close()
            await self.service.close()
            raise
        for name in self.state.users.nopass_names():
            log.warning("user '%s' has nopass = true: any password logs in as this user", name)
        self.state.phase = "serving"
        self._sampler = asyncio.get_running_loop().create_task(self._sample_ops())
        log.info(
            "Querator ready to accept connections on %s:%d (%s%s)",
            self.config.bind,
            self.state.tcp_port,
            self._storage_note(),
            self._listeners_note(),
        )

    def _storage_note(self) -> str:
        """What the storage promises: durability means nothing to the memory backend, and on postgres the
        database's synchronous_commit decides it (SPEC 9)."""
        if self.config.backend == "postgres":
            return "backend postgres, every reply after its commit"
        if self.service.store is not None and not self.service.store.durable:
            return f"backend {self.config.backend}, nothing survives a restart"
        return f"backend {self.config.backend}, durability {self.config.durability}"

    def _listeners_note(self) -> str:
        note = f", TLS on port {self.state.tls_port}" if self._tls_server is not None else ""
        if self.http is not None:
            note += f", HTTP on port {self.http.port}"
        return note

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await _listen(
            "port",
            self.config.bind,
            self.config.port,
            loop.create_server(
                self._new_connection, self.config.bind, self.config.port, reuse_address=True, backlog=1024
            ),
        )
        sockets = self._server.sockets
        self.state.tcp_port = sockets[0].getsockname()[1] if sockets else self.config.port
        if self.config.tls_port:
            self._tls_server = await _listen(
                "tls_port",
                self.config.bind,
                self.config.tls_port,
                loop.create_server(
                    self._new_connection,
                    self.config.bind,
                    self.config.tls_port,
                    reuse_address=True,
                    backlog=1024,
                    ssl=tls_context(self.config),
                ),
            )
            self.state.tls_port = self._tls_server.sockets[0].getsockname()[1]

    async def _sample_ops(self) -> None:
        state = self.state
        while True:
            state.ops.sample(time.monotonic(), state.stats.commands_processed)
            await asyncio.sleep(_OPS_SAMPLE_S)

    def _new_connection(self) -> Connection:
        connection = Connection(self.state, self.dispatch)
        self._connections.add(connection)
        connection.on_lost = self._connections.discard
        return connection

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stopped.wait()
        await self.stop()

    def request_stop(self) -> None:
        log.info("shutting down")
        self._stopped.set()

    async def stop(self) -> None:
        self.state.phase = "stopping"
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_grace_ms / 1000
        for listener in (self._server, self._tls_server):
            if listener is not None:
                listener.close()
        for connection in list(self._connections):
            connection.drain()
        # Replies arrive from partition commits, which signal no one in particular: a short poll is the
        # simplest way to wait for all of them, and it runs only during shutdown.
        while not all(c.idle() for c in self._connections) and loop.time() < deadline:
            await asyncio.sleep(_DRAIN_POLL_S)
        busy = sum(not c.idle() for c in self._connections)
        if busy:
            log.warning("%d connections still had commands running after the grace period", busy)
        await self.service.close()
        await asyncio.sleep(0)  # let the replies that closing produced (blocked consumers) be written
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), max(deadline - loop.time(), 0.1))
            except TimeoutError:
                log.warning("connections still open after the grace period")
        if self.http is not None:
            await self.http.close()
        log.info("stopped")
