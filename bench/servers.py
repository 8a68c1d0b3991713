"""Start and stop the servers under test: Querator and redis-server, each on a free 127.0.0.1 port with
its data in a fresh temporary directory that is removed when the server stops.

Durability is matched like for like (see bench/README.md):

    Querator --durability fsync  <->  redis appendonly yes, appendfsync always
    Querator --durability flush  <->  redis appendonly yes, appendfsync everysec
    Querator --backend memory    <->  redis appendonly no, save ''

Use the servers as context managers (or call `stop()` in a `finally`)::

    with QueratorServer(backend="rocksdb", durability="fsync") as q:
        call(q.port, "QCREATE", "q")
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import hiredis

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
_READY = re.compile(rb"ready to accept connections on [^ ]+:(\d+)")
# Querator logs `time=... level=warning logger=... msg=...`; anything at warning or above is worth a look.
_QUERATOR_PROBLEM = re.compile(r" level=(warning|error|critical) |Traceback")


class ServerError(RuntimeError):
    """A server did not start, or answered a setup command with an error."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def call(port: int, *args: Any, timeout: float = 10.0, raise_errors: bool = True) -> Any:
    """Send one command on a fresh connection and return its reply (RESP2, decoded by hiredis).

    An error reply raises `ServerError` unless `raise_errors` is false, then it is returned as a
    `hiredis.ReplyError`.
    """
    reader = hiredis.Reader()
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(hiredis.pack_command(tuple(args)))
        while True:
            reply = reader.gets()
            if reply is not False:
                break
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"connection to port {port} closed before the reply")
            reader.feed(data)
    if raise_errors and isinstance(reply, hiredis.ReplyError):
        raise ServerError(f"{' '.join(map(str, args))[:80]}: {reply}")
    return reply


def ping(port: int, timeout: float = 1.0) -> bool:
    try:
        return bool(call(port, "PING", timeout=timeout) in (b"PONG", "PONG"))
    except (OSError, ServerError):
        return False


class Server:
    """A server child process with its own temporary directory and a log file inside it."""

    kind = "server"

    def __init__(self, keep_data: bool = False) -> None:
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmpdir: Path | None = None
        self.keep_data = keep_data
        self.exit_code: int | None = None
        self.log_text = ""
        self.problems: list[str] = []

    # Subclasses fill these in.
    def describe(self) -> str:
        raise NotImplementedError

    def command(self, port: int, tmpdir: Path) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        """The process says it is listening (checked before PING)."""
        return True

    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "server.log"

    def start(self, timeout: float = 30.0) -> Server:
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.kind}-"))
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        assert self.tmpdir is not None
        last_error = ""
        for _attempt in range(3):  # a free port can be taken between free_port() and bind()
            self.port = free_port()
            log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
            try:
                self.proc = subprocess.Popen(
                    self.command(self.port, self.tmpdir),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.tmpdir,
                    start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it
                )
            finally:
                log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    last_error = f"exited with {self.proc.returncode}: {self.read_log()[-2000:]}"
                    break
                if self._ready() and ping(self.port):
                    return
                time.sleep(0.05)
            else:
                raise ServerError(
                    f"{self.describe()} did not answer PING in {timeout}s: {self.read_log()[-2000:]}"
                )
            self.proc = None
        raise ServerError(f"{self.describe()} did not start: {last_error}")

    def read_log(self) -> str:
        if self.tmpdir is None:
            return self.log_text
        with contextlib.suppress(OSError):
            self.log_text = self.log_path.read_text(errors="replace")
        return self.log_text

    def scan_problems(self) -> list[str]:
        return []

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, SIGKILL if it does not go; collect the log; remove the data directory."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.problems.append(
                        f"{self.describe()}: did not stop within {timeout}s of SIGTERM; killed"
                    )
                    proc.kill()
                    proc.wait(10)
            self.exit_code = proc.returncode
            if self.exit_code not in (0, -signal.SIGTERM):
                self.problems.append(f"{self.describe()}: exit code {self.exit_code}")
        if self.tmpdir is not None:
            self.read_log()
            self.problems.extend(self.scan_problems())
            if not self.keep_data:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def restart(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> dict[str, Any]:
        """Stop the process with `sig`, keep its data and launch it again on the same port, without waiting.

        Returns `t0` (time.perf_counter() just before the new process was launched; the caller polls for
        readiness from there), `stop_s` (signal to exit) and `exit_code` of the old process.
        """
        assert self.tmpdir is not None and self.proc is not None
        proc = self.proc
        t_stop = time.perf_counter()
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.problems.append(
                    f"{self.describe()}: did not exit within {timeout}s of signal {sig}; killed"
                )
                proc.kill()
                proc.wait(10)
        stop_s = time.perf_counter() - t_stop
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        try:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                self.command(self.port, self.tmpdir),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                start_new_session=True,
            )
        finally:
            log.close()
        return {"t0": t0, "stop_s": round(stop_s, 3), "exit_code": proc.returncode}

    def cpu_sources(self) -> dict[str, Callable[[], float]]:
        """name -> function returning that process group's CPU seconds so far: here, the server process
        (all its threads)."""
        assert self.proc is not None
        return {"server": partial(process_cpu, self.proc.pid)}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class QueratorServer(Server):
    """`querator serve --port P --data TMP --backend B --durability D` from the project's virtualenv.

    `backend="postgres"` takes `postgres_dsn` instead (and `postgres_notify`): `durability` does not apply
    there (SPEC 9), and several of these on one DSN are the nodes of one Querator."""

    kind = "querator"

    def __init__(
        self,
        backend: str = "rocksdb",
        durability: str = "fsync",
        keep_data: bool = False,
        http_port: int = 0,
        postgres_dsn: str = "",
        postgres_notify: bool = True,
        prefix: tuple[str, ...] = (),
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__(keep_data)
        # A command the server runs under, e.g. `faketime` to give one node a wrong clock.
        self.prefix = prefix
        self.http_port = http_port
        if backend not in ("rocksdb", "memory", "postgres"):
            raise ValueError(f"backend must be rocksdb, memory or postgres, not {backend!r}")
        if durability not in ("fsync", "flush"):
            raise ValueError(f"durability must be fsync or flush, not {durability!r}")
        if (backend == "postgres") != bool(postgres_dsn):
            raise ValueError("postgres_dsn is needed with backend postgres, and only there")
        self.backend = backend
        self.durability = durability
        self.postgres_dsn = postgres_dsn
        self.postgres_notify = postgres_notify
        self.extra_args = extra_args

    def describe(self) -> str:
        if self.backend == "memory":
            return "querator memory"
        if self.backend == "postgres":
            return f"querator postgres:{self.port}" + ("" if self.postgres_notify else " polling")
        return f"querator {self.backend}/{self.durability}"

    def command(self, port: int, tmpdir: Path) -> list[str]:
        script = ROOT / ".venv" / "bin" / "querator"
        program = [str(script)] if script.exists() else [sys.executable, "-m", "querator"]
        if self.backend == "postgres":
            # SPEC 9: durability does not apply, PostgreSQL's synchronous_commit decides.
            storage = ["--postgres-dsn", self.postgres_dsn]
            storage += ["--postgres-notify", "true" if self.postgres_notify else "false"]
        else:
            storage = ["--data", str(tmpdir / "data"), "--durability", self.durability]
        return [
            *self.prefix,
            *program,
            "serve",
            "--port",
            str(port),
            "--backend",
            self.backend,
            *storage,
            # HTTP off unless asked for: benchmarks start servers side by side, and the default HTTP port
            # is one port.
            "--http-port",
            str(self.http_port),
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        match = _READY.search(self.read_log().encode())
        return bool(match and int(match.group(1)) == self.port)

    def scan_problems(self) -> list[str]:
        lines = [line for line in self.log_text.splitlines() if _QUERATOR_PROBLEM.search(line)]
        if len(lines) > 20:
            lines = [*lines[:20], f"... and {len(lines) - 20} more"]
        return [f"{self.describe()} log: {line}" for line in lines]


class RedisServer(Server):
    """redis-server with an AOF fsynced `always` or `everysec`, or with no persistence (`none`)."""

    kind = "redis"

    def __init__(self, persistence: str = "always", keep_data: bool = False) -> None:
        super().__init__(keep_data)
        if persistence not in ("always", "everysec", "none"):
            raise ValueError(f"persistence must be always, everysec or none, not {persistence!r}")
        self.persistence = persistence

    def describe(self) -> str:
        if self.persistence == "none":
            return "redis no persistence"
        return f"redis aof {self.persistence}"

    def command(self, port: int, tmpdir: Path) -> list[str]:
        binary = shutil.which("redis-server") or "redis-server"
        cmd = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--dir", str(tmpdir)]
        cmd += ["--daemonize", "no", "--logfile", ""]  # log to stdout, which goes to server.log
        if self.persistence == "none":
            cmd += ["--appendonly", "no"]
        else:
            cmd += ["--appendonly", "yes", "--appendfsync", self.persistence]
        return cmd

    def scan_problems(self) -> list[str]:
        # Redis logs its ordinary start and stop notices at '#' too, so look for real trouble only; the
        # environment warnings (overcommit, THP, somaxconn) are not the server's doing.
        trouble = re.compile(r"WARNING|[Ee]rror|MISCONF|too long|[Ff]ailed")
        # The last one: the restart workload SIGKILLs redis-server, and an AOF-rewrite child it had forked
        # then loses its parent.
        noise = (
            "overcommit_memory",
            "Transparent Huge Pages",
            "somaxconn",
            "no config file",
            "Child failed reporting info to parent",
        )
        lines = [
            line
            for line in self.log_text.splitlines()
            if trouble.search(line) and not any(n in line for n in noise)
        ]
        return [f"{self.describe()} log: {line}" for line in lines[:10]]


def querator_version() -> str:
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import querator; print(getattr(querator, '__version__', '?'))"],
            capture_output=True,
            text=True,
            timeout=20,
            cwd=ROOT,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10)
        match = re.search(r"v=(\S+)", out.stdout)
        return match.group(1) if match else out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# --- PostgreSQL: Querator nodes on one database, and the plain SQL queue (bench/pgqueue.py) -------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may hold spaces): field 3 (state) comes first."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of a process, all its threads; with `children`, plus what its children
    that already exited and were waited for used (cutime + cstime)."""
    try:
        f = _stat_fields(pid)
    except (OSError, ValueError):
        return 0.0
    ticks = int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15)
    if children:
        ticks += int(f[13]) + int(f[14])  # cutime, cstime
    return ticks / _CLK_TCK


def postgres_cpu(postmaster_pid: int) -> float:
    """CPU seconds of a PostgreSQL server: the postmaster, every live child (backends, walwriter,
    checkpointer, autovacuum...) and, through the postmaster's cutime, every child that already exited.
    A backend that ends between two readings moves from the second term to the first, so a difference
    of two readings counts it once."""
    total = process_cpu(postmaster_pid, children=True)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            f = _stat_fields(int(entry.name))
            if int(f[1]) == postmaster_pid:  # field 4: ppid
                total += process_cpu(int(entry.name), children=True)
    return total


class PgBackedServer(Server):
    """A throwaway PgCluster (bench/pgcluster.py: fsync and synchronous_commit on) with one fresh database.
    Subclasses add what runs against it; `stop()` closes the cluster and collects its log's errors."""

    kind = "pg"

    def __init__(self) -> None:
        super().__init__(keep_data=False)
        self.cluster: Any = None
        self.dsn = ""

    def _start_cluster(self) -> None:
        from bench.pgcluster import PgCluster  # needs only the PostgreSQL binaries, checked when started

        self.cluster = PgCluster().start()
        self.dsn = self.cluster.create_database("bench")

    def postmaster_pid(self) -> int:
        return int((self.cluster.datadir / "postmaster.pid").read_text().split()[0])

    def cpu_sources(self) -> dict[str, Callable[[], float]]:
        """The PostgreSQL server, all its processes (a subclass adds the processes that use it)."""
        pid = self.postmaster_pid()
        return {"postgres": lambda: postgres_cpu(pid)}

    def _stop_cluster(self) -> None:
        cluster, self.cluster = self.cluster, None
        if cluster is None:
            return
        log = cluster.read_log()
        try:
            cluster.close()
        except RuntimeError as exc:
            self.problems.append(f"{self.describe()}: {exc}")
        lines = [ln for ln in log.splitlines() if re.search(r"\b(ERROR|FATAL|PANIC):", ln)]
        self.problems += [f"{self.describe()} postgres log: {ln}" for ln in lines[:10]]


class PgQueueServer(PgBackedServer):
    """The plain SKIP LOCKED queue of bench/pgqueue.py: just the database; the queue is SQL run by the load
    generator's process (so its client CPU is the queue's client CPU too)."""

    kind = "pgqueue"

    def describe(self) -> str:
        return "pgqueue (plain SQL queue)"

    def start(self, timeout: float = 30.0) -> Server:
        try:
            self._start_cluster()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 20.0) -> None:
        self._stop_cluster()

    def alive(self) -> bool:
        return self.cluster is not None


class QueratorPgNodes(PgBackedServer):
    """`nodes` Querator processes (`--backend postgres`) pointed at one fresh database: one Querator
    (SPEC 9). `port` is the first node's, `ports` all of them; clients may use any."""

    kind = "querator-pg"

    def __init__(self, nodes: int = 1, extra_args: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.node_count = nodes
        self.extra_args = extra_args
        self.nodes: list[QueratorServer] = []
        self.ports: list[int] = []

    def describe(self) -> str:
        return f"querator postgres x{self.node_count}"

    def start(self, timeout: float = 30.0) -> Server:
        try:
            self._start_cluster()
            for _ in range(self.node_count):
                node = QueratorServer("postgres", postgres_dsn=self.dsn, extra_args=self.extra_args)
                self.nodes.append(node)
                node.start(timeout)
            self.ports = [n.port for n in self.nodes]
            self.port = self.ports[0]
            self._check_connected()
        except BaseException:
            self.stop()
            raise
        return self

    def _check_connected(self, timeout: float = 10.0) -> None:
        """Every node holds connections to the database: a build that accepted `--backend postgres` but
        served from somewhere else would otherwise be measured as if it were the postgres backend."""
        sql = "SELECT count(DISTINCT client_port) FROM pg_stat_activity WHERE datname = 'bench'"
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            seen = int(self.cluster.psql(sql))
            if seen >= self.node_count:
                return
            time.sleep(0.1)
        raise ServerError(
            f"{self.describe()}: {seen} connection(s) to the database after {timeout}s; "
            "is the postgres backend in this build?"
        )

    def stop(self, timeout: float = 20.0) -> None:
        # Nodes first: a node whose database went away first would log connection errors.
        for node in self.nodes:
            node.stop(timeout)
            self.problems += node.problems
        self.nodes = []
        self._stop_cluster()

    def alive(self) -> bool:
        return bool(self.nodes) and all(n.alive() for n in self.nodes)

    def cpu_sources(self) -> dict[str, Callable[[], float]]:
        out = super().cpu_sources()
        for i, node in enumerate(self.nodes, 1):
            assert node.proc is not None
            pid = node.proc.pid
            out[f"node {i}"] = partial(process_cpu, pid)
        return out
