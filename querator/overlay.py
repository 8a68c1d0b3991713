"""The writes of one partition step: one write set, and an overlay of the keys it wrote so the step's
later requests read them back (a produce then a lease in one step behaves as if each ran alone, ADR 3).
Within a step a written key is read from the overlay (`get`), and scans of storage skip the overlay's
keys, so nothing the step wrote is ever read stale."""

from __future__ import annotations

import logging

from querator.records import META_KEY, READY
from querator.speed import first_byte_is
from querator.store.base import KeySpace, Store, WriteSet

log = logging.getLogger("querator.partition")

_READY_BYTE = READY[0]


class StepWrites:
    """`ready_keys` lists the ready keys put in this step in seq order (`ready_pos` is how far leases have
    taken them, `ready_live` how many are still there), so a lease takes the step's own new items after
    storage's without scanning the overlay."""

    __slots__ = (
        "failed",
        "overlay",
        "ready_keys",
        "ready_live",
        "ready_pos",
        "space",
        "store",
        "wrote",
        "ws",
    )

    def __init__(self, store: Store, space: KeySpace) -> None:
        self.store = store
        self.space = space
        self.ws: WriteSet = store.new_write_set()
        self.overlay: dict[bytes, bytes | None] = {}  # None: deleted in this step
        self.ready_keys: list[bytes] = []
        self.ready_pos = 0
        self.ready_live = 0
        self.wrote = False  # something was written since the step began: its replies wait for a sync
        self.failed: BaseException | None = None

    def begin(self) -> None:
        self.ws = self.store.new_write_set()

    def put(self, key: bytes, value: bytes) -> None:
        self.ws.put(self.space, key, value)
        self.overlay[key] = value

    def delete(self, key: bytes) -> None:
        self.ws.delete(self.space, key)
        # A ready item put earlier in this step and now removed no longer counts as ready in the overlay.
        if first_byte_is(key, _READY_BYTE) and self.overlay.get(key) is not None:
            self.ready_live -= 1
        self.overlay[key] = None

    def get(self, key: bytes) -> bytes | None:
        overlay = self.overlay
        if key in overlay:
            return overlay[key]
        return self.space.get(key)

    def put_ready(self, key: bytes, value: bytes) -> None:
        self.ws.put(self.space, key, value)
        self.overlay[key] = value
        self.ready_keys.append(key)
        self.ready_live += 1

    def put_ready_many(self, keys: list[bytes], values: list[bytes]) -> None:
        self.ws.put_many(self.space, keys, values)
        self.overlay.update(zip(keys, values, strict=True))
        self.ready_keys.extend(keys)
        self.ready_live += len(keys)

    def put_many(self, keys: list[bytes], values: list[bytes]) -> None:
        self.ws.put_many(self.space, keys, values)
        self.overlay.update(zip(keys, values, strict=True))

    def delete_many(self, keys: list[bytes]) -> None:
        """Delete keys none of which is a ready key put in this step."""
        self.ws.delete_many(self.space, keys)
        self.overlay.update(dict.fromkeys(keys))  # None: removed

    def flush(self, meta: bytes) -> bool:
        """Write what the step wrote so far, with the partition's counters, and start a fresh write set.
        False if the write failed: then `failed` is set and the partition must refuse further work."""
        ws = self.ws
        self.overlay.clear()
        self.ready_keys.clear()
        self.ready_pos = 0
        self.ready_live = 0
        if not len(ws):
            return True
        self.ws = self.store.new_write_set()
        self.wrote = True
        ws.put(self.space, META_KEY, meta)
        try:
            self.store.write(ws)
        except Exception as exc:
            # The in-memory state now runs ahead of storage: refuse further work until a restart
            # reloads the partition from what storage really holds.
            log.exception("write failed on key space %s", self.space.name)
            self.failed = exc
            return False
        return True

    def end(self) -> bool:
        """After the step's last flush: whether anything was written in the step."""
        wrote = self.wrote
        self.wrote = False
        return wrote
