"""Storage backends behind one small interface (`Store`, `KeySpace`, `WriteSet`).

A backend is an ordered key-value store with named key spaces (a prefixed key range per partition,
plus one for queue metadata, ADR 7) and atomic multi-key-space batches. Nothing here knows about
leases or items; partitions build their batches and decide when to wait for durability.
`tests/store/test_contract.py` is what every backend must pass.
"""

from querator.store.base import KeySpace, Store, WriteSet
from querator.store.factory import open_store

__all__ = ["KeySpace", "Store", "WriteSet", "open_store"]
