"""Typed configuration: the only home of Querator's defaults.

Precedence is defaults < config file (TOML, `tomllib`) < command-line flags. Keys in the file are
kebab-case (`max-clients`); `[[queue]]` tables declare queues (see `querator.declared`), `[[user]]` tables
add users. Every problem is one `ConfigError` whose text is a single line naming where the value came
from (the file and key, or the flag), what is wrong and what is allowed (ADR 0011).
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from querator.model import QueueOptions

Backend = Literal["rocksdb", "memory", "postgres"]
Durability = Literal["fsync", "flush"]
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")
# The command groups a `[[user]]` may be given (querator.auth says what each allows).
COMMAND_GROUPS: Final = frozenset({"produce", "consume", "admin"})


class ConfigError(ValueError):
    """The configuration file or a flag holds a value Querator cannot use; the text is one line."""


@dataclass(slots=True)
class QueueDeclaration(QueueOptions):
    """A `[[queue]]` table: a name and the same options (and defaults) as QCREATE.

    `named` holds the options the table gave (snake_case): only those are kept in step with the file on an
    existing queue. `source` is the file it came from, for error messages.
    """

    name: str = ""
    named: frozenset[str] = frozenset()
    source: str = ""

    def options(self) -> QueueOptions:
        return QueueOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(QueueOptions)})


@dataclass(slots=True)
class UserDeclaration:
    """A `[[user]]` table: who may run which command groups on which queues.

    Exactly one of `password`, `password_sha256` or `nopass = true` (any password logs in, as Redis's
    `nopass`) must be given, so an empty password never lets anyone in by accident.
    """

    name: str
    password: str = ""
    password_sha256: str = ""
    nopass: bool = False
    queues: list[str] = field(default_factory=lambda: ["*"])
    commands: list[str] = field(default_factory=lambda: ["produce", "consume", "admin"])


@dataclass(slots=True)
class Config:
    # Network
    bind: str = "127.0.0.1"
    port: int = 2319
    max_clients: int = 10_000
    requirepass: str = ""
    # TLS listener (0: off). Client certificates: "no", "optional" or "yes" (required), checked against
    # tls-ca-cert-file.
    tls_port: int = 0
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_cert_file: str = ""
    tls_auth_clients: str = "no"
    # HTTP (/metrics, /health) on the same event loop; 0: off. http-bind "": the same address as bind.
    http_port: int = 2320
    http_bind: str = ""
    # /metrics without a password even when requirepass / users need one.
    http_metrics_public: bool = False
    # Storage
    backend: Backend = "rocksdb"
    data: str = "./data"
    durability: Durability = "fsync"
    # With durability "flush": sync in the background at least this often, so a power cut loses at most
    # about this much acknowledged work (Redis's `everysec`); 0: never (only admin changes are synced).
    flush_sync_ms: int = 1_000
    # Memtable budget shared by every partition: all live in one column family (ADR 7).
    rocksdb_write_buffer_bytes: int = 64 * 1024 * 1024
    rocksdb_block_cache_bytes: int = 32 * 1024 * 1024
    # backend "postgres" (SPEC 9): a libpq URI or keyword/value string; several hosts with
    # target_session_attrs=read-write follow a failover.
    postgres_dsn: str = ""
    # Connections each node keeps to the database (one more is held for LISTEN).
    postgres_pool_size: int = 8
    # LISTEN/NOTIFY wakes consumers blocked on other nodes; false: poll every postgres-poll-ms instead
    # (for poolers in transaction mode and engines without NOTIFY).
    postgres_notify: bool = True
    postgres_poll_ms: int = 100
    # Limits
    max_item_bytes: int = 1024 * 1024
    max_batch: int = 1000
    max_bulk_bytes: int = 16 * 1024 * 1024
    max_query_buffer_bytes: int = 64 * 1024 * 1024
    max_output_buffer_bytes: int = 64 * 1024 * 1024
    # A command must arrive completely within this time once its first byte came (0: no limit).
    read_timeout_ms: int = 30_000
    partition_inbox: int = 10_000
    # Operations
    shutdown_grace_ms: int = 5_000
    log_level: str = "info"
    # "text" (key=value) or "json" (one object a line).
    log_format: str = "text"
    # Commands whose handler takes at least this many microseconds go to SLOWLOG (negative: none).
    slowlog_log_slower_than: int = 10_000
    slowlog_max_len: int = 128
    queues: list[QueueDeclaration] = field(default_factory=list)
    users: list[UserDeclaration] = field(default_factory=list)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _key(name: str) -> str:
    return name.replace("_", "-")


def _snake(key: str) -> str:
    return key.replace("-", "_")


# The declared type of every key a file may hold, per table; `named` and `source` are not keys.
_TYPES: Final = {
    name: hint for name, hint in typing.get_type_hints(Config).items() if name not in ("queues", "users")
}
_QUEUE_TYPES: Final = {
    name: hint
    for name, hint in typing.get_type_hints(QueueDeclaration).items()
    if name not in ("named", "source")
}
_USER_TYPES: Final = typing.get_type_hints(UserDeclaration)


class Sources:
    """Where each setting came from, so an error names the flag or the file and key to change."""

    def __init__(self, path: str | Path | None, file_keys: set[str], flags: set[str]) -> None:
        self.path = None if path is None else str(path)
        self.file_keys = file_keys
        self.flags = flags

    def describe(self, name: str) -> str:
        """`--port`, `conf.toml: port` or `port (default)` for the snake_case setting `name`."""
        if name in self.flags:
            return f"--{_key(name)}"
        if self.path is not None and name in self.file_keys:
            return f"{self.path}: {_key(name)}"
        return f"{_key(name)} (default)"


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read `path` (if given) over the defaults, then apply non-None `overrides` (flags)."""
    return read_config(path, **overrides)[0]


def read_config(path: str | Path | None = None, **overrides: Any) -> tuple[Config, Sources]:
    """`load_config`, also saying where each setting came from (for start-up errors after loading)."""
    values: dict[str, Any] = {}
    queues: list[QueueDeclaration] = []
    users: list[UserDeclaration] = []
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the config file; {path}: {exc}") from exc
        for key, value in raw.items():
            if key == "queue":
                queues = [_queue_declaration(path, table) for table in _tables(path, key, value)]
            elif key == "user":
                users = [_user_declaration(path, table) for table in _tables(path, key, value)]
            else:
                name = _snake(key)
                if name not in _TYPES:
                    raise ConfigError(f"unknown config key; {path}: {_unknown(key, _TYPES, 'a setting')}")
                _check_type(f"{path}: {key}", value, _TYPES[name])
                values[name] = value
    flags = {k: v for k, v in overrides.items() if v is not None}
    for name, value in flags.items():
        if name not in _TYPES:
            raise ConfigError(f"unknown config key; '{_key(name)}' is not a setting")
        _check_type(f"--{_key(name)}", value, _TYPES[name])
    sources = Sources(path, set(values), set(flags))
    values.update(flags)
    config = Config(**values, queues=queues, users=users)
    validate(config, sources.describe)
    for user in users:
        check_user(user, f"{path}: [[user]] '{user.name}'")
    return config, sources


def _tables(path: str | Path, key: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"wrong type in config; {path}: {key} must be written as [[{key}]] tables")
    return value


def _unknown(key: str, known: dict[str, Any], what: str) -> str:
    """`'prot' is not a setting (did you mean 'port'?)`: the closest known key, when one is close."""
    close = difflib.get_close_matches(key, [_key(name) for name in known], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else "; conf/querator.toml lists every key"
    return f"'{key}' is not {what}{hint}"


def _describe_value(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _check_type(where: str, value: Any, hint: Any) -> None:
    """The file's value must have the field's type; TOML `true` is not an integer, `"1"` not a number."""
    origin = typing.get_origin(hint)
    if hint is int:
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif hint is bool:
        ok, wanted = isinstance(value, bool), "true or false"
    elif hint is str or origin is Literal:
        ok, wanted = isinstance(value, str), "a string"
    elif origin is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        wanted = "a list of strings"
    else:  # pragma: no cover - every field's type is one of the above
        raise TypeError(f"no type check for {hint!r}")
    if not ok:
        shown = value if isinstance(value, int | str) else _describe_value(value)
        raise ConfigError(
            f"wrong type in config; {where} is {_describe_value(value)} ({shown!r}) but must be {wanted}"
        )


def _table_fields(
    path: str | Path, table: dict[str, Any], types: dict[str, Any], what: str
) -> dict[str, Any]:
    fields = {}
    for key, value in table.items():
        name = _snake(key)
        if name not in types:
            raise ConfigError(f"unknown config key; {path}: {_unknown(key, types, f'a key of {what}')}")
        _check_type(f"{path}: {key} in {what}", value, types[name])
        fields[name] = value
    if not fields.get("name"):
        raise ConfigError(f"missing config key; {path}: every {what} needs a name")
    return fields


def _queue_declaration(path: str | Path, table: dict[str, Any]) -> QueueDeclaration:
    fields = _table_fields(path, table, _QUEUE_TYPES, "[[queue]]")
    named = frozenset(fields) - {"name"}
    return QueueDeclaration(**fields, named=named, source=str(path))


def _user_declaration(path: str | Path, table: dict[str, Any]) -> UserDeclaration:
    return UserDeclaration(**_table_fields(path, table, _USER_TYPES, "[[user]]"))


def check_user(user: UserDeclaration, where: str) -> None:
    """Refuse a user Querator must not run with (ADR 0011); `where` names it in the message."""
    if user.password and user.password_sha256:
        raise ConfigError(f"user has two passwords; {where} gives password and password-sha256: keep one")
    if user.nopass and (user.password or user.password_sha256):
        raise ConfigError(
            f"user has nopass and a password; {where}: remove nopass = true, or the password to let anyone in"
        )
    if not (user.password or user.password_sha256 or user.nopass):
        raise ConfigError(
            f"user without a password; {where} has none: set password, password-sha256 "
            '("<64 hex digits>") or nopass = true (any password logs in)'
        )
    if user.password_sha256:
        try:
            digest = bytes.fromhex(user.password_sha256)
        except ValueError:
            digest = b""
        if len(digest) != 32:
            raise ConfigError(f"invalid password-sha256; {where}: it must be 64 hex digits")
    unknown = set(user.commands) - COMMAND_GROUPS
    if unknown:
        raise ConfigError(
            f"unknown command group; {where}: commands has {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(COMMAND_GROUPS))}"
        )


def _invalid(where: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid setting; {where} {problem}")


def validate(config: Config, where: Callable[[str], str] = _key) -> None:
    """Check every value's range; `where(name)` says where the setting came from (a flag, a file key)."""
    if config.backend not in ("rocksdb", "memory", "postgres"):
        raise _invalid(where("backend"), f"is '{config.backend}'; allowed: rocksdb, memory, postgres")
    if config.backend == "postgres" and not config.postgres_dsn:
        raise _invalid(where("postgres_dsn"), "is empty; backend postgres needs the database's DSN")
    if config.durability not in ("fsync", "flush"):
        raise _invalid(where("durability"), f"is '{config.durability}'; allowed: fsync, flush")
    if config.log_level not in LOG_LEVELS:
        raise _invalid(where("log_level"), f"is '{config.log_level}'; allowed: {', '.join(LOG_LEVELS)}")
    for name in ("port", "tls_port", "http_port"):
        if not 0 <= getattr(config, name) <= 65535:
            raise _invalid(where(name), f"is {getattr(config, name)}; allowed: 0 to 65535")
    if config.tls_port:
        if not config.tls_cert_file or not config.tls_key_file:
            raise _invalid(where("tls_port"), "needs tls-cert-file and tls-key-file")
        if config.tls_auth_clients not in ("no", "optional", "yes"):
            raise _invalid(
                where("tls_auth_clients"), f"is '{config.tls_auth_clients}'; allowed: no, optional, yes"
            )
        if config.tls_auth_clients != "no" and not config.tls_ca_cert_file:
            raise _invalid(where("tls_auth_clients"), "needs tls-ca-cert-file to check client certificates")
    if config.log_format not in LOG_FORMATS:
        raise _invalid(where("log_format"), f"is '{config.log_format}'; allowed: {', '.join(LOG_FORMATS)}")
    for name in ("read_timeout_ms", "shutdown_grace_ms", "flush_sync_ms", "slowlog_max_len"):
        if getattr(config, name) < 0:
            raise _invalid(where(name), f"is {getattr(config, name)}; allowed: 0 or more")
    for name in (
        "max_clients",
        "max_item_bytes",
        "max_batch",
        "max_bulk_bytes",
        "partition_inbox",
        "max_query_buffer_bytes",
        "max_output_buffer_bytes",
        "rocksdb_write_buffer_bytes",
        "rocksdb_block_cache_bytes",
        "postgres_pool_size",
        "postgres_poll_ms",
    ):
        if getattr(config, name) < 1:
            raise _invalid(where(name), f"is {getattr(config, name)}; allowed: 1 or more")
    if config.max_bulk_bytes < config.max_item_bytes:
        raise _invalid(where("max_bulk_bytes"), "must be at least max-item-bytes")
