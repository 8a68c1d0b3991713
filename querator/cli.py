"""Command line: argv -> Config -> Server. `querator serve [flags]`; `python -m querator` is the same.
The admin subcommands (`querator stats|produce|lease|redrive|top`) live in `querator.admin`."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import NoReturn

from querator import __version__, admin, logs
from querator.config import LOG_LEVELS, ConfigError, Sources, read_config
from querator.errors import QueratorError
from querator.server import ListenError, Server


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (no usage block), like every start-up error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="querator", description="A durable lease-based queue server (RESP).")
    parser.add_argument("--version", action="version", version=f"querator {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--config", help="TOML config file (without it no file is read)")
    serve.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="TCP port (default 2319)")
    serve.add_argument("--data", help="data directory (default ./data)")
    serve.add_argument(
        "--backend", choices=["rocksdb", "memory", "postgres"], help="storage backend (default rocksdb)"
    )
    serve.add_argument("--postgres-dsn", help="backend postgres: the database (libpq URI or key=value)")
    serve.add_argument(
        "--postgres-notify",
        choices=["true", "false"],
        help="backend postgres: wake other nodes with LISTEN/NOTIFY (default true) or poll (false)",
    )
    serve.add_argument(
        "--durability", choices=["fsync", "flush"], help="when replies are sent (default fsync)"
    )
    serve.add_argument("--requirepass", help="password clients must AUTH with")
    serve.add_argument("--tls-port", type=int, help="also accept TLS connections on this port")
    serve.add_argument("--tls-cert-file", help="server certificate (PEM) for TLS")
    serve.add_argument("--tls-key-file", help="server private key (PEM) for TLS")
    serve.add_argument(
        "--http-port", type=int, help="HTTP port for /metrics and /health (default 2320; 0: no HTTP)"
    )
    serve.add_argument("--log-level", help=f"{', '.join(LOG_LEVELS)} (default info)")
    admin.add_commands(commands)
    return parser


# Generation-0 collections run after this many container allocations, instead of 700.
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic garbage collector run less often in the server process.

    Requests allocate many short-lived containers (tuples from `zip`, futures, lists) and few cycles.
    With the default gen-0 threshold of 700, the collector ran about 500 times in an in-process
    200,000-item lease/complete cycle, 3.7 % of its time; at 50,000 it ran 4 times (0.6 %). Everything
    alive at start-up (modules, the command table, config) is frozen first, so no collection walks it.
    """
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in admin.COMMANDS:
        return admin.run(args)
    try:
        config, sources = read_config(
            args.config,
            bind=args.bind,
            port=args.port,
            data=args.data,
            backend=args.backend,
            postgres_dsn=args.postgres_dsn,
            postgres_notify=None if args.postgres_notify is None else args.postgres_notify == "true",
            durability=args.durability,
            requirepass=args.requirepass,
            log_level=args.log_level,
            tls_port=args.tls_port,
            tls_cert_file=args.tls_cert_file,
            tls_key_file=args.tls_key_file,
            http_port=args.http_port,
        )
    except ConfigError as exc:
        return _fail(str(exc), 2)
    logs.configure(config.log_level, config.log_format)
    try:
        import uvloop

        server = Server(config)
        tune_gc()
        uvloop.run(server.serve_forever())
    except ConfigError as exc:
        return _fail(str(exc), 2)
    except (OSError, QueratorError) as exc:
        return _fail(_start_error(exc, sources), 1)
    return 0


def _fail(line: str, code: int) -> int:
    """Start-up errors are one line on stderr, never a traceback, so they read well under systemd."""
    print(f"querator: {line}", file=sys.stderr)
    return code


def _start_error(exc: OSError | QueratorError, sources: Sources) -> str:
    if isinstance(exc, ListenError):
        return (
            f"cannot listen; {exc.address}:{exc.port} ({sources.describe(exc.setting)}): {exc.reason}; "
            "choose a free port, or stop what holds it"
        )
    # Imported here: a server on the memory backend never loads rocksdict.
    from querator.store.rocksdb import StoreLockedError

    if isinstance(exc, StoreLockedError):
        return (
            f"data directory in use by another Querator; {exc.path} ({sources.describe('data')}) is locked: "
            "stop the other server or give another directory"
        )
    return f"cannot start; {exc}"
