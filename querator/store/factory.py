"""Builds the configured backend; the return type is where mypy proves each backend is a `Store`."""

from __future__ import annotations

from querator.config import Config
from querator.store.base import Store


def open_store(config: Config) -> Store:
    if config.backend == "memory":
        from querator.store.memory import MemoryStore

        return MemoryStore()
    from querator.store.rocksdb import RocksStore

    return RocksStore(
        config.data,
        write_buffer_bytes=config.rocksdb_write_buffer_bytes,
        block_cache_bytes=config.rocksdb_block_cache_bytes,
    )
