"""Typed configuration: the only home of Querator's defaults.

Precedence is defaults < config file (TOML, `tomllib`) < command-line flags. Keys in the file are
kebab-case (`max-clients`); `[[queue]]` tables declare queues created at start when missing.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from querator.model import QueueOptions

Backend = Literal["rocksdb", "memory"]
Durability = Literal["fsync", "flush"]


class ConfigError(ValueError):
    """The configuration file or a flag holds a value Querator cannot use."""


@dataclass(slots=True)
class QueueDeclaration(QueueOptions):
    """A `[[queue]]` table: a name and the same options (and defaults) as QCREATE."""

    name: str = ""

    def options(self) -> QueueOptions:
        return QueueOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(QueueOptions)})


@dataclass(slots=True)
class UserDeclaration:
    """A `[[user]]` table: who may run which command groups on which queues."""

    name: str
    password: str = ""
    password_sha256: str = ""
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
    # Shared memtable budget for all column families, so many queues do not each get their own buffers.
    rocksdb_write_buffer_bytes: int = 64 * 1024 * 1024
    rocksdb_block_cache_bytes: int = 32 * 1024 * 1024
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


_FIELDS = {f.name for f in dataclasses.fields(Config)} - {"queues", "users"}
_QUEUE_FIELDS = {f.name for f in dataclasses.fields(QueueDeclaration)}
_USER_FIELDS = {f.name for f in dataclasses.fields(UserDeclaration)}


def _snake(key: str) -> str:
    return key.replace("-", "_")


def load_config(path: str | Path | None = None, **overrides: Any) -> Config:
    """Read `path` (if given) over the defaults, then apply non-None `overrides` (flags)."""
    values: dict[str, Any] = {}
    queues: list[QueueDeclaration] = []
    users: list[UserDeclaration] = []
    if path is not None:
        try:
            with open(path, "rb") as fh:
                raw = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        for key, value in raw.items():
            if key == "queue":
                queues = [_queue_declaration(table) for table in value]
                continue
            if key == "user":
                users = [_user_declaration(table) for table in value]
                continue
            name = _snake(key)
            if name not in _FIELDS:
                raise ConfigError(f"unknown config key '{key}'")
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    config = Config(**values, queues=queues, users=users)
    validate(config)
    return config


def _queue_declaration(table: dict[str, Any]) -> QueueDeclaration:
    fields = {}
    for key, value in table.items():
        name = _snake(key)
        if name not in _QUEUE_FIELDS:
            raise ConfigError(f"unknown key '{key}' in [[queue]]")
        fields[name] = value
    if "name" not in fields:
        raise ConfigError("[[queue]] needs a name")
    return QueueDeclaration(**fields)


def _user_declaration(table: dict[str, Any]) -> UserDeclaration:
    fields = {}
    for key, value in table.items():
        name = _snake(key)
        if name not in _USER_FIELDS:
            raise ConfigError(f"unknown key '{key}' in [[user]]")
        fields[name] = value
    if not fields.get("name"):
        raise ConfigError("[[user]] needs a name")
    return UserDeclaration(**fields)


def validate(config: Config) -> None:
    if config.backend not in ("rocksdb", "memory"):
        raise ConfigError(f"backend must be rocksdb or memory, not '{config.backend}'")
    if config.durability not in ("fsync", "flush"):
        raise ConfigError(f"durability must be fsync or flush, not '{config.durability}'")
    if not 0 <= config.port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, not {config.port}")
    if config.tls_port:
        if not config.tls_cert_file or not config.tls_key_file:
            raise ConfigError("tls-port needs tls-cert-file and tls-key-file")
        if config.tls_auth_clients not in ("no", "optional", "yes"):
            raise ConfigError(
                f"tls-auth-clients must be no, optional or yes, not '{config.tls_auth_clients}'"
            )
        if config.tls_auth_clients != "no" and not config.tls_ca_cert_file:
            raise ConfigError("tls-auth-clients needs tls-ca-cert-file to check client certificates")
    if not 0 <= config.http_port <= 65535:
        raise ConfigError(f"http-port must be between 0 and 65535, not {config.http_port}")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"log-format must be text or json, not '{config.log_format}'")
    if config.slowlog_max_len < 0:
        raise ConfigError("slowlog-max-len must be at least 0")
    if config.read_timeout_ms < 0:
        raise ConfigError("read-timeout-ms must be at least 0")
    for name in ("max_clients", "max_item_bytes", "max_batch", "max_bulk_bytes", "partition_inbox"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.replace('_', '-')} must be at least 1")
    if config.max_bulk_bytes < config.max_item_bytes:
        raise ConfigError("max-bulk-bytes must be at least max-item-bytes")
