"""The retry delay of a failed item: exponential in its attempts, capped, with jitter (SPEC section 10).

Invariant: attempt n waits min(cap, base * 2^(n-1)) times a factor drawn uniformly from [0.5, 1], so
workers that failed together do not all come back at the same moment (the cap is never exceeded).
"""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_ms(attempts: int, base_ms: int, cap_ms: int, rand: Callable[[], float] = random.random) -> int:
    """Delay before the next delivery of an item whose `attempts`-th delivery (1-based) just failed."""
    n = max(1, attempts)
    # Bound the exponent: 2^(n-1) for a large attempt count would build a huge int only to be capped.
    ceiling = cap_ms if n > 64 else min(cap_ms, base_ms * 2 ** (n - 1))
    return int(ceiling * (0.5 + 0.5 * rand()))


def reason_of(exc: BaseException, limit: int = 4096) -> str:
    """The exception's text as a REASON (at most `limit` UTF-8 bytes, the server's bound). An exception
    without text gives its class name, so a failure never reads as "no reason"."""
    reason = str(exc) or type(exc).__name__
    encoded = reason.encode("utf-8", "surrogateescape")
    if len(encoded) <= limit:
        return reason
    return encoded[:limit].decode("utf-8", "ignore")
