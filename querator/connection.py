"""One client connection: read -> parse -> dispatch in order -> one write per batch of replies.

Invariants: replies leave in the order commands arrived, even when some wait for a group commit; a
client that does not read its replies stops being read (bounded output), and one that breaks the protocol
gets Redis's error text and is closed after the replies already due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, cast

from querator.clients import ClientState, ServerState
from querator.commands.reply import Deferred
from querator.errors import OutcomeUnknownError, QueratorError
from querator.resp import NEED_DATA, ParserLimits, ProtocolError, RequestParser, encode, encode_error

log = logging.getLogger("querator.connection")

_MAX_CLIENTS_REPLY = b"-ERR max number of clients reached\r\n"
# How many replies a client may have outstanding before we stop reading its requests.
_MAX_PENDING_REPLIES = 4096
_WRITE_HIGH_WATER = 1024 * 1024
# Bytes of unanswered requests one connection may have in flight before its later commands wait.
_MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024
# Commands one connection runs before letting other connections have the event loop.
_COMMANDS_PER_TURN = 256


Dispatch = Callable[[ClientState, list[bytes]], object]


class Connection(asyncio.Protocol):
    def __init__(self, server: ServerState, dispatch: Dispatch) -> None:
        self._server = server
        # The command dispatcher (querator.commands): every check and the handler, from the table.
        self._dispatch = dispatch
        config = server.config
        self._limits = ParserLimits(
            max_bulk_bytes=config.max_bulk_bytes,
            max_query_buffer_bytes=config.max_query_buffer_bytes,
        )
        authenticated = not server.users.default_needs_password()
        self._parser = RequestParser(self._limits, authenticated=authenticated)
        self._transport: asyncio.Transport | None = None
        self.client = ClientState(
            server=server, id=server.next_client_id(), authenticated=authenticated, acl=server.users.default
        )
        self.client.on_auth_change = self._set_parser_auth
        self._out: list[bytes] = []
        # Replies waiting behind an unfinished Deferred: bytes (ready) or Deferred (maybe not).
        self._pending: deque[bytes | Deferred] = deque()
        self._blocker: asyncio.Future[Any] | None = None
        self._closing = False
        self._abandoned = False  # a reply could not be told truthfully: the connection is hung up
        # Server shutdown: read nothing more, but run and answer what was already received.
        self._draining = False
        self._reading_paused = False
        self._write_paused = False
        # Complete commands left in the parser when a turn ended early (see `_process`).
        self._backlog = False
        self._in_flight = 0  # bytes of the requests whose replies are pending
        # Armed while a command is only partly received; fires after `read-timeout-ms` (slowloris defence).
        self._read_timer: asyncio.TimerHandle | None = None
        self._continue_scheduled = False
        self._loop: asyncio.AbstractEventLoop
        self.on_lost: Callable[[Connection], None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        # Kept: each asyncio.get_running_loop() call is a getpid() system call.
        self._loop = asyncio.get_running_loop()
        transport = self._transport
        server = self._server
        server.stats.connections_received += 1
        addr = _format_addr(transport.get_extra_info("peername"))
        if len(server.clients) >= server.config.max_clients:
            _log_rejection(server, addr)
            self._closing = True
            transport.write(_MAX_CLIENTS_REPLY)
            transport.close()
            return
        transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)
        self.client.addr = addr
        self.client.laddr = _format_addr(transport.get_extra_info("sockname"))
        self.client.link = self
        server.clients[self.client.id] = self.client
        if log.isEnabledFor(logging.DEBUG):
            log.debug("client connected", extra={"fields": {"id": self.client.id, "addr": addr}})

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        if self._server.clients.pop(self.client.id, None) is not None and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "client disconnected",
                extra={"fields": {"id": self.client.id, "addr": self.client.addr, "error": exc or ""}},
            )
        # Nobody will read these replies; a blocked QLEASE must not be handed items.
        for entry in self._pending:
            if type(entry) is Deferred and not entry.future.done():
                entry.future.cancel()
        self._pending.clear()
        self._transport = None
        if self.on_lost is not None:
            self.on_lost(self)

    def drain(self) -> None:
        """Shutdown's first step: take no more requests from the socket, but run the commands already
        received and send their replies (see `idle`)."""
        self._draining = True
        self._update_reading()

    def idle(self) -> bool:
        """Nothing received is left to run or answer. A blocked lease does not count: the service answers
        it when it closes, and the commands behind it then get its SHUTDOWN error."""
        if self._blocker is not None:
            return True
        return not self._backlog and all(
            type(entry) is bytes or entry.future.done()  # type: ignore[union-attr]
            for entry in self._pending
        )

    def close(self) -> None:
        """Flush what is due and close (server shutdown)."""
        self._closing = True
        if self._transport is not None:
            self._flush()
            self._transport.close()

    # -- querator.clients.ClientLink (CLIENT LIST, CLIENT KILL) ------------------------------------------

    def fd(self) -> int:
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        return sock.fileno() if sock is not None else -1

    def memory(self) -> tuple[int, int]:
        transport = self._transport
        written = transport.get_write_buffer_size() if transport is not None else 0
        return self._parser.buffered_bytes(), written + sum(map(len, self._out))

    def blocked(self) -> bool:
        return self._blocker is not None

    def kill(self) -> None:
        """CLIENT KILL of another client: close now; replies still waiting are dropped, as in Redis."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed(data)
        except ProtocolError as exc:
            self._protocol_error(exc)
            self._flush()
            return
        self._process()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._backlog:
            self._process()
        else:
            self._update_reading()

    # -- dispatch --------------------------------------------------------------------------------------

    def _process(self) -> None:
        """Run the commands buffered so far, at most a turn's worth, then write their replies at once.

        A connection stops between commands while its replies are not being read (so its output stays
        bounded) and after `_COMMANDS_PER_TURN` commands (so one deep pipeline cannot stall other clients);
        the rest stays in the parser and reading pauses until it has been run.
        """
        next_command = self._parser.next_command
        execute = self._execute
        client = self.client
        budget = _COMMANDS_PER_TURN
        self._backlog = False
        waiting_for_more = False
        while self._blocker is None and not self._closing:
            if not budget or self._write_paused or self._too_much_in_flight():
                self._backlog = self._parser.buffered_bytes() > 0
                break
            try:
                command = next_command()
            except ProtocolError as exc:
                self._protocol_error(exc)
                break
            if command is NEED_DATA:
                waiting_for_more = True
                break
            budget -= 1
            execute(command)  # type: ignore[arg-type]
            if client.close_after_reply:
                self._closing = True
        ran = _COMMANDS_PER_TURN - budget
        if ran:
            client.last_command_at = time.monotonic()
            self._server.stats.commands_processed += ran
        # Progress (or nothing half-received): the deadline restarts with the next partial command.
        if self._read_timer is not None and (
            ran or not waiting_for_more or not self._parser.command_in_progress()
        ):
            self._read_timer.cancel()
            self._read_timer = None
        if waiting_for_more and self._read_timer is None and self._parser.command_in_progress():
            timeout = self._server.config.read_timeout_ms
            if timeout:
                self._read_timer = self._loop.call_later(timeout / 1000, self._read_timed_out)
        self._flush()
        if self._backlog and not budget and not self._continue_scheduled:
            self._continue_scheduled = True
            self._loop.call_soon(self._continue)
        if self._write_paused or self._backlog or self._reading_paused:
            self._update_reading()

    def _too_much_in_flight(self) -> bool:
        """Stop taking commands while this many replies, or requests this large, are still unanswered:
        one client's pipeline must not fill the partitions' inboxes or the server's memory."""
        return len(self._pending) >= _MAX_PENDING_REPLIES or self._in_flight >= _MAX_IN_FLIGHT_BYTES

    def _read_timed_out(self) -> None:
        """A command has been arriving for longer than `read-timeout-ms`: a slowloris, or a dead peer.

        Redis has no such deadline; we close the connection so a trickle of bytes cannot hold a client
        slot and its buffer forever. Idle time *between* commands is never limited.
        """
        self._read_timer = None
        transport = self._transport
        if transport is None:
            return
        log.info(
            "closing client %s: command not complete after %d ms",
            self.client.addr,
            self._server.config.read_timeout_ms,
        )
        self._closing = True
        transport.abort()

    def _continue(self) -> None:
        self._continue_scheduled = False
        if self._transport is not None and self._backlog:
            self._process()

    def _execute(self, args: list[bytes]) -> None:
        client = self.client
        try:
            result = self._dispatch(client, args)
        except QueratorError as exc:
            self._server.statistics.error(exc.code)
            self._push(encode_error(exc.code, exc.message))
            return
        except Exception:
            log.exception("command %s failed", client.last_command)
            self._server.statistics.error("ERR")
            self._push(b"-ERR internal error\r\n")
            return
        if type(result) is Deferred:
            if not result.future.done():
                result.weight = sum(map(len, args))
                self._in_flight += result.weight
            self._push_deferred(result)
        else:
            self._push(encode(result, client.proto))

    def _push(self, reply: bytes) -> None:
        if self._pending:
            self._pending.append(reply)
        else:
            self._out.append(reply)

    def _push_deferred(self, deferred: Deferred) -> None:
        deferred.proto = self.client.proto
        future = deferred.future
        if future.done() and not self._pending:
            self._out.append(self._encode_deferred(deferred))
            if self._abandoned:
                self._hang_up()
            return
        self._pending.append(deferred)
        if not future.done():
            future.add_done_callback(self._on_reply_ready)
            if deferred.blocking:
                self._blocker = future

    def _on_reply_ready(self, _future: asyncio.Future[Any]) -> None:
        if self._transport is None:
            return
        pending = self._pending
        out = self._out
        while pending:
            head = pending[0]
            if type(head) is bytes:
                out.append(head)
            elif head.future.done():  # type: ignore[union-attr]
                out.append(self._encode_deferred(head))  # type: ignore[arg-type]
                self._in_flight -= head.weight  # type: ignore[union-attr]
                if self._abandoned:
                    self._hang_up()
                    return
            else:
                break
            pending.popleft()
        if self._blocker is not None and self._blocker.done():
            self._blocker = None
            self._process()
        elif self._backlog and not self._write_paused and not self._too_much_in_flight():
            self._process()
        else:
            self._flush()
            self._update_reading()

    def _encode_deferred(self, deferred: Deferred) -> bytes:
        """The reply, and the command's statistics: its whole duration, and whether it failed."""
        future = deferred.future
        if not future.cancelled() and isinstance(future.exception(), OutcomeUnknownError):
            # Neither a success nor an error can be told truthfully: hang up, as a crashed server would,
            # after the replies before this one (SPEC 9; ADR 19).
            log.warning("closing client %s: %s", self.client.addr, future.exception())
            self._abandoned = True
            return b""
        reply = _encode_deferred(deferred)
        stats = deferred.stats
        if stats is not None:
            stats.reply_ready(deferred.started_ns, deferred.ran_ns, perf_counter_ns())
        if reply[:1] == b"-":
            self._server.statistics.error(reply[1 : reply.find(b" ")].decode())
            if stats is not None:
                stats.failed += 1
        return reply

    def _hang_up(self) -> None:
        """Send the replies before the abandoned one, then close: no later reply is sent."""
        self._pending.clear()
        self._backlog = False
        self._closing = True
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _protocol_error(self, exc: ProtocolError) -> None:
        self._server.stats.protocol_errors += 1
        self._server.statistics.error("ERR")
        self._push(encode_error("ERR", str(exc)))
        self._closing = True
        self.client.close_after_reply = True

    def _flush(self) -> None:
        transport = self._transport
        if transport is None:
            return
        out = self._out
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            # Below the high-water mark (not paused) the buffer is far under the limit: skip the check.
            if (
                self._write_paused
                and transport.get_write_buffer_size() > self._server.config.max_output_buffer_bytes
            ):
                log.warning("closing client %s: output buffer limit reached", self.client.addr)
                transport.abort()
                return
        if self.client.close_after_reply and not self._pending:
            transport.close()

    def _update_reading(self) -> None:
        should_pause = self._write_paused or self._backlog or self._draining or self._too_much_in_flight()
        if should_pause == self._reading_paused:
            return  # the usual case, after every reply: nothing to change
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if should_pause and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not should_pause and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _set_parser_auth(self, authenticated: bool) -> None:
        self._parser.authenticated = authenticated


def _log_rejection(server: ServerState, addr: str) -> None:
    """Count a client refused at max-clients; log it, with those not logged since, at most once a second."""
    stats = server.stats
    stats.rejected_connections += 1
    stats.rejections_unlogged += 1
    now = time.monotonic()
    if now - stats.rejections_logged_at < 1.0 and stats.rejections_logged_at >= 0:
        return
    fields = {"addr": addr, "max_clients": server.config.max_clients, "rejected": stats.rejections_unlogged}
    log.warning("client rejected: max number of clients reached", extra={"fields": fields})
    stats.rejections_logged_at = now
    stats.rejections_unlogged = 0


def _encode_deferred(deferred: Deferred) -> bytes:
    future = deferred.future
    if future.cancelled():
        return b"-ERR request cancelled\r\n"
    exc = future.exception()
    if exc is not None:
        if isinstance(exc, QueratorError):
            return encode_error(exc.code, exc.message)
        log.error("command failed", exc_info=exc)
        return b"-ERR internal error\r\n"
    result = future.result()
    if deferred.convert is not None:
        result = deferred.convert(result)
    return encode(result, deferred.proto)


def _format_addr(addr: Any) -> str:
    if isinstance(addr, tuple) and len(addr) >= 2:
        host = addr[0]
        return f"[{host}]:{addr[1]}" if ":" in str(host) else f"{host}:{addr[1]}"
    return str(addr or "")
