"""Builds the configured backend."""

from __future__ import annotations

from typing import Any

from querator.config import Config


def open_store(config: Config) -> Any:
    if config.backend == "memory":
        from querator.store.memory import MemoryStore

        return MemoryStore()
    from querator.store.rocksdb import RocksStore

    return RocksStore(
        config.data,
        write_buffer_bytes=config.rocksdb_write_buffer_bytes,
        block_cache_bytes=config.rocksdb_block_cache_bytes,
    )
