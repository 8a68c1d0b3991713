"""A throwaway PostgreSQL for tests and benchmarks: `initdb` + `pg_ctl` in a temporary directory, listening
on a free 127.0.0.1 port only (its unix socket inside that directory), stopped and removed at exit.

Durability is what the postgres backend will be measured on, so `fsync` and `synchronous_commit` stay on
unless asked otherwise. A primary can get a synchronous streaming standby (pg_basebackup,
`primary_conninfo`, `synchronous_standby_names`) that can be promoted, for failover tests::

    with PgCluster() as pg:
        dsn = pg.create_database("items")
        standby = pg.start_standby()       # every commit on pg now waits for standby's flush
        pg.crash()                         # SIGKILL-like: pg_ctl stop -m immediate
        standby.promote()                  # standby.dsn("items") now takes writes

Every instance is registered for an atexit stop, so an interrupted test or benchmark leaves no server
behind; and a process killed outright (SIGKILL) leaves one only until the next cluster is made, which
stops and removes the clusters of dead owners first. The module needs only the PostgreSQL server
binaries (Debian: `postgresql`), no Python driver.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; when we are root the servers run as this system user instead.
OS_USER_WHEN_ROOT = "postgres"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
ROOT_PREFIX = "querator-pg-"
# The pid of the process that made a cluster, so a later one can tell that it died without closing it.
OWNER_FILE = "owner.pid"


class PgError(RuntimeError):
    """A PostgreSQL binary failed or a server did not come up; the message carries its output."""


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: `$QUERATOR_PG_BIN`, else the PATH, else the newest
    Debian `/usr/lib/postgresql/N/bin` (Debian keeps the server binaries off the PATH)."""
    env = os.environ.get("QUERATOR_PG_BIN")
    candidates = [Path(env)] if env else []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(p) for p in versions), key=lambda p: _version_key(p.parent.name), reverse=True)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres", "pg_basebackup")):
            return directory
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres user (initdb and postgres refuse to run as root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(OS_USER_WHEN_ROOT)
    except KeyError as exc:
        raise PgError(f"running as root needs a {OS_USER_WHEN_ROOT!r} system user to run PostgreSQL") from exc
    return {"user": OS_USER_WHEN_ROOT, "group": OS_USER_WHEN_ROOT}


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(OS_USER_WHEN_ROOT)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def settings_text(settings: dict[str, str | int | bool]) -> str:
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            text = "on" if value else "off"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = "'" + value.replace("'", "''") + "'"
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"


# Fit for tests on a small shared machine, durable by default. Small shared_buffers: many engineers share
# the memory; the tests hold little data. Logs go to the server's log file, inside its directory.
BASE_SETTINGS: dict[str, str | int | bool] = {
    "listen_addresses": HOST,
    "max_connections": 200,
    "shared_buffers": "64MB",
    "wal_level": "replica",
    "max_wal_senders": 4,
    "max_replication_slots": 4,
    "hot_standby": True,
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
    "timezone": "UTC",
}


class PgServer:
    """One postmaster: a data directory, a port and a unix socket directory; started and stopped by pg_ctl."""

    def __init__(self, bindir: Path, root: Path, name: str) -> None:
        self.bindir = bindir
        self.root = root  # owned by us; holds the data directory, the socket and the log
        self.name = name
        self.datadir = root / name
        self.socket_dir = root / f"{name}-socket"
        self.log_path = root / f"{name}.log"
        self.port = 0
        self.running = False

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI over TCP (what asyncpg, psycopg and the future `postgres-dsn` all take)."""
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"

    def conninfo(self, dbname: str = "postgres", **extra: str) -> str:
        """The keyword/value form, used for `primary_conninfo`."""
        parts = {"host": HOST, "port": str(self.port), "user": SUPERUSER, "dbname": dbname, **extra}
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def binary(self, name: str) -> str:
        return str(self.bindir / name)

    def run(self, *argv: str, timeout: float = 60.0) -> str:
        """Run a PostgreSQL binary as the server user; its stdout, or PgError with its output."""
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            **_run_as(),
        )
        if proc.returncode != 0:
            raise PgError(
                f"{Path(argv[0]).name} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}"
            )
        return str(proc.stdout)  # text=True, but the **kwargs make mypy see Any

    def _prepare_socket_dir(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        _give_to_server_user(self.socket_dir)

    def launch(self, timeout: float = 60.0, *, same_port: bool = False) -> None:
        """pg_ctl start on a free port; retried when another process took the port in between. With
        `same_port`, on the port it had before (no retry): a server started again after `stop()` or a
        crash keeps the address its clients' DSNs name, as a restarted production server would."""
        self._prepare_socket_dir()
        last = ""
        for _attempt in range(1 if same_port else 3):
            if not same_port:
                self.port = free_port()
            # Port and socket on the command line, so a standby's copied postgresql.conf cannot clash.
            options = f"-c port={self.port} -c unix_socket_directories={self.socket_dir}"
            try:
                self.run(
                    self.binary("pg_ctl"),
                    "start",
                    "-D",
                    str(self.datadir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(timeout)),
                    timeout=timeout + 10,
                )
            except PgError as exc:
                last = f"{exc}\n{self.read_log()[-2000:]}"
                if "could not bind" in last or "Address already in use" in last:
                    continue
                raise PgError(f"{self.name} did not start: {last}") from exc
            self.running = True
            return
        raise PgError(f"{self.name} did not start: {last}")

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` (clean) or `-m immediate` (a crash: no checkpoint, WAL replay on start)."""
        if not self.running:
            return
        if not self.datadir.exists():  # removed with its server by reap_orphans()
            self.running = False
            return
        try:
            self.run(self.binary("pg_ctl"), "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", "30")
        except (PgError, subprocess.TimeoutExpired):
            if mode == "immediate":
                raise
            self.run(self.binary("pg_ctl"), "stop", "-D", str(self.datadir), "-m", "immediate", "-w")
        self.running = False

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL through psql on the unix socket; unaligned tuples-only output, one row per line."""
        return self.run(
            self.binary("psql"),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-d",
            dbname,
            "-c",
            sql,
        ).strip()

    def read_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")
        return ""

    def is_in_recovery(self) -> bool:
        return self.psql("SELECT pg_is_in_recovery()") == "t"


class PgStandby(PgServer):
    """A streaming standby of a PgCluster's primary, made by pg_basebackup."""

    def promote(self, timeout: float = 60.0) -> None:
        """End recovery: from now on this server takes writes (the failover step)."""
        self.run(self.binary("pg_ctl"), "promote", "-D", str(self.datadir), "-w", "-t", str(int(timeout)))


class PgCluster(PgServer):
    """The primary, plus the standbys made from it; owns the temporary directory of them all."""

    def __init__(
        self,
        *,
        fsync: bool = True,
        synchronous_commit: str = "on",
        settings: dict[str, str | int | bool] | None = None,
        bindir: Path | None = None,
    ) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PgError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
        reap_orphans(found)
        root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        (root / OWNER_FILE).write_text(str(os.getpid()))
        super().__init__(found, root, "primary")
        self.settings: dict[str, str | int | bool] = {
            **BASE_SETTINGS,
            "fsync": fsync,
            "synchronous_commit": synchronous_commit,
            **(settings or {}),
        }
        self.standbys: list[PgStandby] = []
        self._databases = 0
        _live.add(self)

    def start(self, timeout: float = 60.0) -> PgCluster:
        """initdb (first time only), then start the primary."""
        try:
            if not self.datadir.exists():
                self._initdb()
            self.launch(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _initdb(self) -> None:
        _give_to_server_user(self.root)
        # --no-sync: syncing the freshly made template files proves nothing; fsync stays on for the server.
        self.run(
            self.binary("initdb"),
            "-D",
            str(self.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# querator test cluster (bench/pgcluster.py)\n" + settings_text(self.settings))

    def create_database(self, name: str | None = None, *, prefix: str = "db") -> str:
        """CREATE DATABASE `name`, or `prefix` plus a number not used yet in this cluster; its DSN."""
        if name is None:
            self._databases += 1
            name = f"{prefix}_{self._databases}"
        if not _NAME.match(name):
            raise ValueError(f"database name must match {_NAME.pattern}, not {name!r}")
        self.psql(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def start_standby(self, name: str | None = None, *, synchronous: bool = True) -> PgStandby:
        """pg_basebackup a standby, start it streaming from the primary and, when `synchronous`, make every
        commit on the primary wait until this standby has flushed it (`synchronous_standby_names`)."""
        name = name or f"standby{len(self.standbys) + 1}"
        if not _NAME.match(name):
            raise ValueError(f"standby name must match {_NAME.pattern}, not {name!r}")
        standby = PgStandby(self.bindir, self.root, name)
        self.standbys.append(standby)
        self.run(
            self.binary("pg_basebackup"),
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-D",
            str(standby.datadir),
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
            timeout=120,
        )
        (standby.datadir / "standby.signal").touch()
        _give_to_server_user(standby.datadir / "standby.signal")
        # application_name is what synchronous_standby_names matches against.
        conninfo = self.conninfo(application_name=name)
        with open(standby.datadir / "postgresql.auto.conf", "a") as conf:
            conf.write(settings_text({"primary_conninfo": conninfo}))
        standby.launch()
        if synchronous:
            self.psql(f"ALTER SYSTEM SET synchronous_standby_names = '{name}'")
            self.psql("SELECT pg_reload_conf()")
            self._wait_for(
                f"SELECT sync_state FROM pg_stat_replication WHERE application_name = '{name}'", "sync"
            )
        else:
            self._wait_for(
                f"SELECT state FROM pg_stat_replication WHERE application_name = '{name}'", "streaming"
            )
        return standby

    def _wait_for(self, sql: str, expected: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self.psql(sql)
            if seen == expected:
                return
            time.sleep(0.05)
        raise PgError(f"waited {timeout}s for {sql!r} to give {expected!r}; last saw {seen!r}")

    def crash(self) -> None:
        """Stop the primary as a crash would: no shutdown checkpoint, nothing flushed that was not already."""
        self.stop("immediate")

    def close(self) -> None:
        """Stop every server (standbys first, the primary need not wait on them) and remove the directory."""
        _live.discard(self)
        problems = []
        for server in [*self.standbys, self]:
            try:
                server.stop("fast")
            except (PgError, subprocess.TimeoutExpired, OSError) as exc:
                problems.append(f"{server.name}: {exc}")
        shutil.rmtree(self.root, ignore_errors=True)
        if problems:
            raise PgError("; ".join(problems))

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# Clusters not yet closed, stopped at interpreter exit: a postmaster started by pg_ctl is detached from us and
# would otherwise outlive an interrupted run.
_live: set[PgCluster] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(bindir: Path | None = None) -> list[Path]:
    """Stop and remove the clusters whose owner died without closing them (SIGKILL, a killed CI job): pg_ctl
    detaches the postmaster, so nothing else would ever stop it. Run before every new cluster."""
    bindir = bindir or find_bindir()
    reaped = []
    for root in Path(tempfile.gettempdir()).glob(ROOT_PREFIX + "*"):
        try:
            owner = int((root / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # being made right now, or not ours
        if _alive(owner):
            continue
        for pidfile in root.glob("*/postmaster.pid"):
            if bindir is not None:
                with contextlib.suppress(PgError, subprocess.TimeoutExpired, OSError):
                    server = PgServer(bindir, root, pidfile.parent.name)
                    server.running = True
                    server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
        reaped.append(root)
    return reaped


@atexit.register
def _stop_all() -> None:
    for cluster in list(_live):
        with contextlib.suppress(Exception):
            cluster.close()
