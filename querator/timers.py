"""What a partition keeps in memory to know when its next timer is due: every lease's deadline (a dict
and a heap ordered by deadline) and the heads of its due-time and expiry indexes (ADR 3). Nothing here
touches storage; the state machine moves the items when a timer is due."""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from itertools import repeat

from querator.speed import consume


class LeaseTable:
    """seq -> lease deadline of every leased item. The heap may hold stale entries (left by completes
    and extensions); they are skipped when they come up, which keeps ending a lease O(1)."""

    __slots__ = ("deadlines", "heap")

    def __init__(self) -> None:
        self.deadlines: dict[int, int] = {}
        self.heap: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.deadlines)

    def __contains__(self, seq: int) -> bool:
        return seq in self.deadlines

    def load(self, pairs: Iterable[tuple[int, int]]) -> None:
        """(seq, deadline) of the leases found in storage at start."""
        for seq, deadline in pairs:
            self.deadlines[seq] = deadline
            self.heap.append((deadline, seq))
        heapq.heapify(self.heap)

    def add(self, seq: int, deadline: int) -> None:
        self.deadlines[seq] = deadline
        heapq.heappush(self.heap, (deadline, seq))

    def add_many(self, seqs: list[int], deadline: int) -> None:
        """One lease's worth of items sharing a deadline, pushed without Python code per item."""
        self.deadlines.update(dict.fromkeys(seqs, deadline))
        # timeit here (100 seqs onto a 1,000-entry heap): 12.4 µs, the same as a loop; kept for the
        # lease pass of commit 731bffc, which builds everything else of a lease in C too.
        consume(map(heapq.heappush, repeat(self.heap), zip(repeat(deadline), seqs)))

    def end(self, seq: int) -> bool:
        """Forget a lease; False if `seq` was not leased."""
        return self.deadlines.pop(seq, None) is not None

    def end_many(self, seqs: Iterable[int]) -> list[int]:
        """Forget the leases of `seqs`; the seqs that were leased, in order."""
        pop = self.deadlines.pop
        return [seq for seq in seqs if pop(seq, None) is not None]

    def pop_expired(self, now: int) -> int | None:
        """The seq of a current lease whose deadline has passed (its heap entry is dropped), or None."""
        heap = self.heap
        deadlines = self.deadlines
        while heap and heap[0][0] <= now:
            deadline, seq = heapq.heappop(heap)
            if deadlines.get(seq) == deadline:
                return seq
            # completed, retried or extended since: a stale entry
        return None


class Timers:
    """The next moment anything of a partition is due: a lease deadline, a scheduled item's due time, or
    the creation time of the oldest item that can expire (the queue's expire timeout is added when read,
    because QUPDATE may change it)."""

    __slots__ = ("leases", "next_due", "next_expiry_created")

    def __init__(self) -> None:
        self.leases = LeaseTable()
        self.next_due: int | None = None
        self.next_expiry_created: int | None = None

    def note_due(self, due: int) -> None:
        if self.next_due is None or due < self.next_due:
            self.next_due = due

    def note_expiry(self, created_at: int) -> None:
        if self.next_expiry_created is None or created_at < self.next_expiry_created:
            self.next_expiry_created = created_at

    def any_due(self, now: int, expire_timeout: int) -> bool:
        """Is a lease deadline, a schedule or an expiry due? Checked inline, without a call per kind: the
        actor asks twice per step, and such calls showed in a profile of one-item rounds."""
        heap = self.leases.heap
        if heap and heap[0][0] <= now:
            return True
        if self.next_due is not None and self.next_due <= now:
            return True
        created = self.next_expiry_created
        return bool(expire_timeout) and created is not None and created + expire_timeout <= now

    def next_at(self, expire_timeout: int) -> int | None:
        """When the earliest timer is due, or None if nothing is timed."""
        heap = self.leases.heap
        candidates = [heap[0][0]] if heap else []
        if self.next_due is not None:
            candidates.append(self.next_due)
        if expire_timeout and self.next_expiry_created is not None:
            candidates.append(self.next_expiry_created + expire_timeout)
        return min(candidates) if candidates else None
