"""The rules a request's arguments must follow (SPEC sections 3 and 7), checked before any work is handed
to a partition, so a refused call has changed nothing. Each error names the argument and its limit; the
queue's own options are `catalog.py`'s to check."""

from __future__ import annotations

from collections.abc import Sequence

from querator.catalog import check_range
from querator.config import Config
from querator.errors import CommandError
from querator.model import (
    AT_SECONDS_RANGE,
    MAX_AT_MS,
    MAX_DEDUP_KEY_BYTES,
    MAX_LABEL_BYTES,
    MAX_LEASE_COUNT,
    MAX_REASON_BYTES,
    MAX_WAIT_MS,
)


def due_at(now: int, delay_ms: int | None, at_ms: int | None) -> int:
    """When a produced or retried item becomes ready: 0 (now), now + DELAY, or AT."""
    if delay_ms is not None and at_ms is not None:
        raise CommandError("DELAY and AT are mutually exclusive")
    if delay_ms is not None:
        if delay_ms < 0:
            raise CommandError("DELAY must be at least 0")
        if delay_ms > MAX_WAIT_MS:
            raise CommandError(f"DELAY must be at most {MAX_WAIT_MS}")
        return now + delay_ms if delay_ms else 0
    if at_ms is not None:
        if at_ms < 0:
            raise CommandError("AT must be at least 0")
        if at_ms > MAX_AT_MS:
            raise CommandError(f"AT must be at most {MAX_AT_MS}")
        if at_ms in AT_SECONDS_RANGE:
            raise CommandError(
                f"AT must be a Unix time in milliseconds; {at_ms} looks like seconds "
                f"(did you mean {at_ms * 1000}?)"
            )
        return at_ms
    return 0


def check_produce(
    config: Config, payloads: Sequence[bytes], labels: tuple[bytes, bytes, bytes], dedup: bytes | None
) -> None:
    """Payload count and sizes, KIND / REFERENCE / ENCODING sizes, and the DEDUP key's length (checked
    whatever the window, so a key that fails with deduplication on also fails with it off)."""
    if not payloads:
        raise CommandError("ITEMS needs at least one payload")
    if len(payloads) > config.max_batch:
        raise CommandError(f"too many items; at most {config.max_batch} per QPRODUCE")
    limit = config.max_item_bytes
    if max(map(len, payloads)) > limit:
        raise CommandError(f"item payload too large; max-item-bytes is {limit}")
    if any(labels):
        for option, label in zip(("KIND", "REFERENCE", "ENCODING"), labels, strict=True):
            if len(label) > MAX_LABEL_BYTES:
                raise CommandError(f"{option} must be at most {MAX_LABEL_BYTES} bytes")
    if dedup is not None and not 1 <= len(dedup) <= MAX_DEDUP_KEY_BYTES:
        raise CommandError(f"DEDUP key must be 1-{MAX_DEDUP_KEY_BYTES} bytes")


def check_lease(count: int, block_ms: int | None) -> None:
    check_range("COUNT", count, 1, MAX_LEASE_COUNT)
    if block_ms is not None and block_ms < 0:
        raise CommandError("BLOCK must be at least 0")
    if block_ms is not None and block_ms > MAX_WAIT_MS:
        raise CommandError(f"BLOCK must be at most {MAX_WAIT_MS}")


def check_retry(dead: bool, delay_ms: int | None, at_ms: int | None, reason: bytes | None) -> None:
    if dead and (delay_ms is not None or at_ms is not None):
        raise CommandError("DEAD, DELAY and AT are mutually exclusive")
    if reason is not None and len(reason) > MAX_REASON_BYTES:
        raise CommandError(f"REASON must be at most {MAX_REASON_BYTES} bytes")


def check_ids(config: Config, ids: Sequence[str | bytes]) -> None:
    if len(ids) > config.max_batch:
        raise CommandError(f"too many ids; at most {config.max_batch} per call")
