"""A byte budget with a free allowance per holder: what peers can make us buffer, bounded.

Used for the request heads the HTTPS listener buffers, for the kubelet bodies in flight during a
scrape, and for the responses being sent to clients (`api.stream`, no allowance: each response's
footprint comes from the pool, which so bounds how many stream at once). Each holder (a
connection, a scrape) may hold `allowance` bytes without asking anyone, so ordinary traffic never
fails because someone else is hogging; bytes beyond that come from one shared `pool`, and a
holder that cannot get them is refused (its request or scrape fails, nobody else's). The most
memory held is therefore `holders × allowance + pool`, with the number of holders bounded
elsewhere (connections, scrape concurrency).

Single-threaded (the event loop); no waiting: `grow()` answers at once.
"""

from __future__ import annotations


class ByteBudget:
    """The shared pool; `holding()` starts a holder."""

    def __init__(self, pool: int, allowance: int) -> None:
        if pool < 0 or allowance < 0:
            raise ValueError("a byte budget cannot be negative")
        self.pool = pool
        self.allowance = allowance
        self.in_use = 0  # pool bytes lent out now
        self.peak = 0
        self.refused = 0  # grow() calls refused so far

    def holding(self) -> Holding:
        return Holding(self)


class Holding:
    """What one holder holds: `size` bytes, of which `borrowed` come from the pool."""

    __slots__ = ("borrowed", "budget", "size")

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0
        self.borrowed = 0

    def grow(self, n: int) -> bool:
        """Hold `n` more bytes; False (and nothing held) when the pool cannot cover them."""
        b = self.budget
        need = self.size + n - b.allowance - self.borrowed
        if need > 0:
            if b.in_use + need > b.pool:
                b.refused += 1
                return False
            b.in_use += need
            self.borrowed += need
            b.peak = max(b.peak, b.in_use)
        self.size += n
        return True

    def release(self) -> None:
        """Hold nothing (idempotent)."""
        self.budget.in_use -= self.borrowed
        self.borrowed = 0
        self.size = 0
