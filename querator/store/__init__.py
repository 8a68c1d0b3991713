"""Storage backends behind one small interface (`Store`, `KeySpace`, `WriteSet`).

A backend is an ordered key-value store with named key spaces (in RocksDB, each a prefixed key range of
one column family, ADR 7: one per partition, one for a queue's deduplication keys, one for queue
metadata) and atomic multi-key-space batches. Nothing here knows about leases or items; partitions build
their batches and decide when to wait for durability. `tests/store/test_contract.py` is what every
backend must pass.
"""

from querator.store.base import KeySpace, Store, WriteSet
from querator.store.factory import open_store

__all__ = ["KeySpace", "Store", "WriteSet", "open_store"]
