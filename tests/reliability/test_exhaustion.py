"""Resource exhaustion over real sockets: many idle connections, the client limit, a producer that never reads
its replies, huge announced bulks, the query buffer limit, and slow (slowloris) clients.

Figures the tests measure are printed (shown even without `-s`) so they can be quoted. `QUERATOR_SLOW=1`
also runs the 10,000-idle-connection variant.
"""

from __future__ import annotations

import contextlib
import re
import resource
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from querator.config import ConfigError, load_config
from tests.support import (
    HOST,
    INVALID_BULK,
    PONG,
    SLOW,
    ServerProcess,
    alive,
    closed_by_server,
    connect,
    ping_ok,
    recv_exact,
    recv_line,
    resp,
)

MAX_CLIENTS_REPLY = b"-ERR max number of clients reached\r\n"
MiB = 1024 * 1024


# -- helpers -------------------------------------------------------------------------------------------------


def ping(sock: socket.socket) -> None:
    sock.sendall(b"PING\r\n")
    assert recv_exact(sock, len(PONG)) == PONG


def rss_bytes(server: ServerProcess) -> int:
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def info(sock: socket.socket, section: str) -> dict[str, str]:
    sock.sendall(b"INFO " + section.encode() + b"\r\n")
    header = recv_line(sock)
    assert header.startswith(b"$"), header
    body = recv_exact(sock, int(header[1:]) + 2).decode()
    return dict(line.split(":", 1) for line in body.splitlines() if ":" in line)


def no_traceback(server: ServerProcess) -> None:
    log = server.read_log()
    assert "Traceback" not in log, log[log.index("Traceback") :][:3000]


def start_with_config(tmp_path: Path, config: str, backend: str = "memory", **kwargs: Any) -> ServerProcess:
    path = tmp_path / "querator.toml"
    path.write_text(config)
    return ServerProcess(tmp_path / "data", "--config", str(path), backend=backend, **kwargs).start()


def raise_nofile(needed: int) -> None:
    """Raise this process's soft RLIMIT_NOFILE (the server, started afterwards, inherits it); skip the test
    when the hard limit does not allow `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed} descriptors needed")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    except (ValueError, OSError) as exc:
        pytest.skip(f"cannot raise RLIMIT_NOFILE to {needed}: {exc}")


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print("\n" + text)


# -- (a) many idle connections -------------------------------------------------------------------------------


def open_idle(port: int, count: int) -> list[socket.socket]:
    """`count` connections, each admitted (it answered one PING) and then left idle."""
    socks: list[socket.socket] = []
    started = time.monotonic()
    try:
        for start in range(0, count, 250):
            group = []
            for _ in range(min(250, count - start)):
                sock = connect(port, timeout=10.0)
                sock.sendall(b"PING\r\n")
                group.append(sock)
                socks.append(sock)
            for sock in group:
                assert recv_exact(sock, len(PONG)) == PONG
            assert time.monotonic() - started < 120, "opening the idle connections took too long"
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def ping_p99(sock: socket.socket, count: int = 500, warmup: int = 50) -> float:
    for _ in range(warmup):
        ping(sock)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        ping(sock)
        samples.append(time.perf_counter() - started)
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


def _idle_connections_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str], idle: int) -> None:
    raise_nofile(idle + 512)
    server = start_with_config(tmp_path, f"max-clients = {idle + 100}\n")
    rounds: list[tuple[float, float]] = []
    try:
        probe = connect(server.port)
        # The shared 2-core machine is noisy. A round measures the probe's p99 without idle connections,
        # with them, and without them again (the baseline is the better of the two, so a burst of noise
        # cannot inflate the bound); up to five rounds, and the test passes when one round is in bounds.
        # (Measured under a load average of 6 on 2 cores: 1-4 ms scheduling spikes hit ~1% of pings with
        # and without idle connections alike, so a single round's p99 is a coin toss; a real per-connection
        # cost shows in every round.)
        for _ in range(5):
            before = ping_p99(probe)
            socks = open_idle(server.port, idle)
            try:
                clients = int(info(probe, "clients")["connected_clients"])
                assert clients >= idle + 1, f"only {clients} connected clients"
                with_idle = ping_p99(probe)
                assert alive(server)
            finally:
                for sock in socks:
                    sock.close()
            deadline = time.monotonic() + 10
            while int(info(probe, "clients")["connected_clients"]) > 1:
                assert time.monotonic() < deadline, "closed connections still counted after 10 s"
                time.sleep(0.05)
            after = ping_p99(probe)
            without = min(before, after)
            rounds.append((without, with_idle))
            if with_idle <= 2 * without + 0.001:
                break
        shown = "; ".join(f"without {w * 1e3:.3f} ms, with {x * 1e3:.3f} ms" for w, x in rounds)
        report(capsys, f"PING p99 over 500 pings, {idle} idle connections held: {shown}")
        without, with_idle = rounds[-1]
        assert with_idle <= 2 * without + 0.001, f"p99 {with_idle * 1e3:.3f} ms vs {without * 1e3:.3f} ms"
        probe.close()
        no_traceback(server)
    finally:
        server.kill()


def test_2000_idle_connections_do_not_slow_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _idle_connections_scenario(tmp_path, capsys, 2000)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="10,000 connections: set QUERATOR_SLOW=1")
def test_10000_idle_connections_do_not_slow_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _idle_connections_scenario(tmp_path, capsys, 10_000)


# -- (b) max-clients -----------------------------------------------------------------------------------------


def test_max_clients_exact_reply_under_a_burst(tmp_path: Path) -> None:
    """With max-clients = 8, a burst of 20 more connections: each gets exactly Redis's reply and is closed;
    the 8 admitted clients are unaffected; slots freed by leaving clients are reused; no slot leaks."""
    server = start_with_config(tmp_path, "max-clients = 8\n")
    admitted: list[socket.socket] = []
    try:
        for _ in range(8):
            sock = connect(server.port)
            ping(sock)
            admitted.append(sock)
        burst = [connect(server.port) for _ in range(20)]
        for sock in burst:
            assert recv_exact(sock, len(MAX_CLIENTS_REPLY)) == MAX_CLIENTS_REPLY
            assert closed_by_server(sock), "a rejected connection was left open"
            sock.close()
        for sock in admitted:
            ping(sock)
        stats = info(admitted[0], "stats")
        assert int(stats["rejected_connections"]) == 20, stats
        # A rejected client sending a command gets nothing run: the reply is the limit error only.
        with connect(server.port) as sock:
            sock.sendall(b"QCREATE should_not_exist\r\n")
            assert recv_exact(sock, len(MAX_CLIENTS_REPLY)) == MAX_CLIENTS_REPLY
            assert closed_by_server(sock)
        # Three clients leave; exactly three newcomers get in (the server notices the closes asynchronously).
        for sock in admitted[:3]:
            sock.close()
        del admitted[:3]
        deadline = time.monotonic() + 5
        while int(info(admitted[0], "clients")["connected_clients"]) > 5:
            assert time.monotonic() < deadline, "slots not freed after clients left"
            time.sleep(0.02)
        for _ in range(3):
            sock = connect(server.port)
            ping(sock)
            admitted.append(sock)
        with connect(server.port) as ninth:
            assert recv_exact(ninth, len(MAX_CLIENTS_REPLY)) == MAX_CLIENTS_REPLY
        admitted[0].sendall(resp(b"QINFO", b"should_not_exist"))
        assert recv_line(admitted[0]).startswith(b"-NOQUEUE"), "a rejected client's command ran"
        no_traceback(server)
    finally:
        for sock in admitted:
            sock.close()
        server.kill()


# -- (c) a producer that never reads its replies -------------------------------------------------------------


def _non_reading_producer(
    tmp_path: Path, items_per_command: int, seconds: float, ping_timeout: float, recover_timeout: float
) -> dict[str, Any]:
    """A hog pipelines `QPRODUCE hog ITEMS x...` (items_per_command each) for up to `seconds` and never
    reads, its receive buffer shrunk to 4 KiB. Meanwhile a second client PINGs every 20 ms (giving up after
    `ping_timeout` without a reply) and the server's RSS is sampled every 100 ms."""
    server = ServerProcess(tmp_path / "data").start()  # the RocksDB default, fsync
    result: dict[str, Any] = {"pings": [], "rss": [], "sent": [], "ping_failed": None}
    stop = threading.Event()
    try:
        with connect(server.port) as admin:
            admin.sendall(resp(b"QCREATE", b"hog"))
            assert recv_line(admin) == b"+OK\r\n"
        rss_before = rss_bytes(server)
        command = resp(b"QPRODUCE", b"hog", b"ITEMS", *[b"x" * 8] * items_per_command)
        blob = command * max(1, (256 * 1024) // len(command))
        hog = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.connect((HOST, server.port))
        hog.settimeout(0.1)
        sent = 0

        def pinger() -> None:
            try:
                with connect(server.port, timeout=ping_timeout) as sock:
                    while not stop.is_set():
                        started = time.monotonic()
                        ping(sock)
                        result["pings"].append(time.monotonic() - started)
                        stop.wait(0.02)
            except (OSError, AssertionError) as exc:
                result["ping_failed"] = f"{exc!r} after {time.monotonic() - started:.1f} s"

        thread = threading.Thread(target=pinger, daemon=True)
        thread.start()
        started = last_sample = time.monotonic()
        while time.monotonic() - started < seconds and result["ping_failed"] is None:
            try:
                sent += hog.send(blob)
            except TimeoutError:
                pass
            except OSError as exc:
                result["hog_error"] = repr(exc)
                break
            now = time.monotonic()
            if now - last_sample >= 0.1:
                last_sample = now
                result["rss"].append((now - started, rss_bytes(server)))
                result["sent"].append((now - started, sent))
        stop.set()
        thread.join(ping_timeout + 1)
        result["rss_before"] = rss_before
        result["sent_total"] = sent
        result["commands_sent"] = sent // len(command)
        result["alive"] = alive(server)
        hog.close()
        result["pong_after"] = ping_ok(server.port, timeout=recover_timeout)
        log = server.read_log()
        result["traceback"] = log[log.index("Traceback") :][:3000] if "Traceback" in log else None
    finally:
        stop.set()
        server.kill()
    return result


def _stalled_since(samples: list[tuple[float, int]]) -> float | None:
    """When the hog's sent-byte count last changed, if it then stayed unchanged for at least a second."""
    if not samples:
        return None
    last_t, last_v = samples[-1]
    since = last_t
    for t, v in reversed(samples):
        if v != last_v:
            break
        since = t
    return since if last_t - since >= 1.0 else None


def test_non_reading_producer_is_throttled_with_bounded_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """QPRODUCE of 30 items a command, pipelined without reading: the server stops reading the hog once its
    replies back up (after ~26,000 commands, ~4 s), its RSS stops growing then, and the other client is
    served throughout."""
    r = _non_reading_producer(
        tmp_path, items_per_command=30, seconds=7.0, ping_timeout=5.0, recover_timeout=10.0
    )
    worst = max(r["pings"], default=float("inf"))
    peak = max((v for _, v in r["rss"]), default=r["rss_before"])
    stalled = _stalled_since(r["sent"])
    after_stall = [v for t, v in r["rss"] if stalled is not None and t >= stalled]
    report(
        capsys,
        f"non-reading producer (30 items/command): {r['commands_sent']} commands "
        f"({r['sent_total'] / MiB:.1f} MiB) accepted before the server stopped reading it "
        f"(at {stalled if stalled is None else round(stalled, 1)} s); RSS "
        f"{r['rss_before'] / MiB:.0f} -> peak {peak / MiB:.0f} MiB; other client's PING: {len(r['pings'])} "
        f"answered, worst {worst * 1e3:.0f} ms",
    )
    assert r["ping_failed"] is None, r["ping_failed"]
    assert r["alive"] and r["pong_after"]
    assert r["traceback"] is None, r["traceback"]
    assert worst < 2.0, f"the other client waited {worst:.2f} s for PONG"
    # Throttled: the hog's bytes stopped being read for the last second or more of the run.
    assert stalled is not None, "the server kept reading a client that never reads its replies"
    # Bounded: what grows is the ~800,000 small items the hog got stored before its replies backed up
    # (measured: ~40 MiB in all) within RocksDB's 64 MiB memtable budget plus the partitions' in-memory
    # state; 128 MiB is three times the measured growth. Nothing may keep growing once the hog is no longer
    # read.
    assert peak - r["rss_before"] < 128 * MiB, f"RSS grew by {(peak - r['rss_before']) / MiB:.0f} MiB"
    if len(after_stall) >= 2:
        assert after_stall[-1] - after_stall[0] < 16 * MiB, "RSS kept growing after the hog was throttled"


def test_non_reading_max_batch_producer_does_not_stall_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same hog with the heaviest legal command (max-batch = 1000 items per QPRODUCE)."""
    r = _non_reading_producer(
        tmp_path, items_per_command=1000, seconds=4.0, ping_timeout=3.0, recover_timeout=2.0
    )
    worst = max(r["pings"], default=float("inf"))
    peak = max((v for _, v in r["rss"]), default=r["rss_before"])
    report(
        capsys,
        f"non-reading producer (1000 items/command): {r['commands_sent']} commands "
        f"({r['sent_total'] / MiB:.1f} MiB) accepted; RSS {r['rss_before'] / MiB:.0f} -> peak "
        f"{peak / MiB:.0f} MiB; other client's PING: {len(r['pings'])} answered, worst "
        f"{worst * 1e3:.0f} ms, failure: {r['ping_failed']}",
    )
    assert r["ping_failed"] is None, f"the other client got no PONG: {r['ping_failed']}"
    assert worst < 2.0, f"the other client waited {worst:.2f} s for PONG"
    assert r["alive"] and r["pong_after"]
    assert r["traceback"] is None, r["traceback"]
    assert peak - r["rss_before"] < 128 * MiB, f"RSS grew by {(peak - r['rss_before']) / MiB:.0f} MiB"


# -- (d) huge announced bulks and the configured limits ------------------------------------------------------


def test_huge_bulk_headers_are_not_allocated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`$2147483648` is refused at once; headers the server accepts (`$16777216`, the default max, and
    `*2147483647`) are waited on without allocating what they announce: 20 of each held open at once would
    cost 320 MiB if the bulks were preallocated."""
    server = ServerProcess(tmp_path / "data", backend="memory").start()
    held: list[socket.socket] = []
    try:
        assert ping_ok(server.port)
        before = rss_bytes(server)
        for _ in range(20):
            with connect(server.port, timeout=2.0) as sock:
                started = time.monotonic()
                sock.sendall(b"*1\r\n$2147483648\r\n")
                assert recv_exact(sock, len(INVALID_BULK)) == INVALID_BULK
                assert closed_by_server(sock)
                assert time.monotonic() - started < 2.0
        after_refused = rss_bytes(server)
        for _ in range(20):
            for header in (
                b"*1\r\n$16777216\r\n",
                b"*2147483647\r\n",
                b"*2\r\n$4\r\nECHO\r\n$16777216\r\nxyz",
            ):
                sock = connect(server.port)
                sock.sendall(header)
                held.append(sock)
        assert ping_ok(server.port)  # the server has read them all by the time it answers a later client
        time.sleep(0.2)
        while_held = rss_bytes(server)
        report(
            capsys,
            f"huge headers: RSS {before / MiB:.1f} MiB, after 20 x $2147483648 "
            f"{after_refused / MiB:.1f} MiB, with 60 huge-but-legal headers held {while_held / MiB:.1f} MiB",
        )
        assert after_refused - before < 16 * MiB
        assert while_held - before < 16 * MiB
        no_traceback(server)
    finally:
        for sock in held:
            sock.close()
        server.kill()


def test_lowered_max_bulk_bytes(tmp_path: Path) -> None:
    """max-bulk-bytes = 1000: a 1000-byte bulk is served, 1001 (fast-path sized) and 5000 (slow-path sized)
    are `invalid bulk length` and the connection is closed."""
    server = start_with_config(tmp_path, "max-item-bytes = 1000\nmax-bulk-bytes = 1000\n")
    try:
        payload = b"b" * 1000
        with connect(server.port) as sock:
            sock.sendall(resp(b"ECHO", payload))
            assert recv_exact(sock, 1000 + 9) == b"$1000\r\n" + payload + b"\r\n"
        for size in (1001, 4096, 5000, 2147483648):
            with connect(server.port) as sock:
                sock.sendall(b"*2\r\n$4\r\nECHO\r\n$%d\r\n" % size)
                assert recv_exact(sock, len(INVALID_BULK)) == INVALID_BULK, size
                assert closed_by_server(sock), size
        # In one piece too (the parser's fast path sees the whole command at once).
        with connect(server.port) as sock:
            sock.sendall(resp(b"ECHO", b"b" * 1001))
            assert recv_exact(sock, len(INVALID_BULK)) == INVALID_BULK
            assert closed_by_server(sock)
        assert ping_ok(server.port)
        no_traceback(server)
    finally:
        server.kill()


def test_query_buffer_limit_closes_without_growing(tmp_path: Path) -> None:
    """max-query-buffer-bytes = 1 MiB with max-bulk-bytes = 8 MiB: a 6 MiB bulk is more than the server will
    buffer for one client; it closes the connection (Redis closes such a client without a reply; an -ERR
    line first is tolerated) and its RSS does not take the 6 MiB per client."""
    server = start_with_config(
        tmp_path, "max-item-bytes = 1048576\nmax-bulk-bytes = 8388608\nmax-query-buffer-bytes = 1048576\n"
    )
    try:
        before = rss_bytes(server)
        body = b"q" * (6 * MiB)
        for _ in range(5):
            with connect(server.port, timeout=5.0) as sock:
                sock.sendall(b"*2\r\n$4\r\nECHO\r\n$%d\r\n" % len(body))
                received = b""
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(body)
                try:
                    sock.settimeout(3.0)
                    while chunk := sock.recv(65536):
                        received += chunk
                except ConnectionResetError:
                    pass
                except TimeoutError:
                    raise AssertionError("the server kept a client over its query buffer limit") from None
                assert not received or re.fullmatch(rb"-[^\r\n]*\r\n", received), received[:200]
        assert rss_bytes(server) - before < 16 * MiB
        assert ping_ok(server.port)
        no_traceback(server)
    finally:
        server.kill()


# -- (e) slowloris: the per-command read deadline ------------------------------------------------------------


def _read_deadline_supported() -> bool:
    try:
        return load_config(None, read_timeout_ms=1000).read_timeout_ms == 1000  # type: ignore[call-arg]
    except (TypeError, ConfigError):
        return False


_NO_READ_DEADLINE = pytest.mark.xfail(
    not _read_deadline_supported(), strict=True, reason="BUG: read deadline not implemented yet"
)
READ_DEADLINE_CONFIG = "read-timeout-ms = 1000\n"


@pytest.fixture
def deadline_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_with_config(tmp_path, READ_DEADLINE_CONFIG)
    yield server
    server.kill()


def _trickle(
    sock: socket.socket, pieces: list[bytes], gap: float, limit: float
) -> tuple[float | None, bytes]:
    """Send piece k at `k * gap` seconds (an absolute schedule, so a loaded machine does not stretch it),
    watching for the server's close in between; returns (seconds from the first piece until the server
    closed, or None if it did not within `limit`) and whatever the server sent."""
    started = time.monotonic()
    received = b""
    for k, piece in enumerate(pieces):
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - started, received
        next_at = started + (k + 1) * gap
        while (left := next_at - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return time.monotonic() - started, received
            except TimeoutError:
                break
            if not chunk:
                return time.monotonic() - started, received
            received += chunk
        if time.monotonic() - started > limit:
            break
    return None, received


# read-timeout-ms = 1000 from the command's first byte, plus a second for scheduling on a loaded machine.
CLOSE_WITHIN = 2.0


@_NO_READ_DEADLINE
@pytest.mark.parametrize(
    "command",
    [
        pytest.param(b"ECHO slowloris\r\n", id="inline"),
        pytest.param(resp(b"ECHO", b"slowloris"), id="multibulk"),
    ],
)
def test_slowloris_one_byte_per_200ms_is_disconnected(deadline_server: ServerProcess, command: bytes) -> None:
    """One byte of a valid command every 0.2 s (the whole command would take 3-6 s): with
    read-timeout-ms = 1000 ("a command must arrive completely within this time once its first byte came")
    the server closes the connection within CLOSE_WITHIN (2 s) of the first byte and never runs it."""
    with connect(deadline_server.port) as sock:
        closed_after, received = _trickle(sock, [bytes([b]) for b in command], 0.2, 5.0)
    assert closed_after is not None, "a slowloris client was still connected after 5 s"
    assert closed_after <= CLOSE_WITHIN, f"closed only after {closed_after:.1f} s"
    assert b"slowloris" not in received
    assert ping_ok(deadline_server.port)
    no_traceback(deadline_server)


@_NO_READ_DEADLINE
def test_slowloris_one_argument_at_a_time_is_disconnected(deadline_server: ServerProcess) -> None:
    """A multibulk command announced as 50 arguments, one complete argument every 0.5 s: the command is still
    incomplete long after read-timeout-ms = 1000 from its first byte, so the connection must be closed."""
    pieces = [b"*50\r\n$4\r\nECHO\r\n"] + [b"$1\r\nx\r\n"] * 49
    with connect(deadline_server.port) as sock:
        closed_after, _ = _trickle(sock, pieces, 0.5, 4.0)
    assert closed_after is not None, "a client trickling one argument per 0.5 s was still connected after 4 s"
    assert closed_after <= CLOSE_WITHIN, f"closed only after {closed_after:.1f} s"


@_NO_READ_DEADLINE
def test_idle_between_commands_is_not_disconnected(deadline_server: ServerProcess) -> None:
    """read-timeout-ms limits how long one command takes to arrive, not idle time: a client idle for 3 s
    after a complete command, one idle since it connected, and one blocked for 2.5 s in QLEASE BLOCK are
    all still served."""
    port = deadline_server.port
    after_command = connect(port)
    ping(after_command)
    never_spoke = connect(port)
    blocked = connect(port)
    blocked.sendall(resp(b"QCREATE", b"deadline_q"))
    assert recv_line(blocked) == b"+OK\r\n"
    blocked.sendall(resp(b"QLEASE", b"deadline_q", b"BLOCK", b"2500"))
    started = time.monotonic()
    try:
        time.sleep(3.0)
        ping(after_command)
        ping(never_spoke)
        blocked.settimeout(2.0)
        assert recv_exact(blocked, 4) == b"*0\r\n", "the blocked QLEASE did not time out normally"
        assert time.monotonic() - started >= 2.4
        ping(blocked)
        no_traceback(deadline_server)
    finally:
        for sock in (after_command, never_spoke, blocked):
            sock.close()
