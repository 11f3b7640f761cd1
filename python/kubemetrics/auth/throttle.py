"""What reviews may cost: a rate, a concurrency and a fair share per caller.

Every request with an unknown bearer token costs a TokenReview, and every new (user, request)
pair a SubjectAccessReview: round trips to kube-apiserver that anyone who reaches the port can
cause. Each kind of review has its own connection pool (see `auth.start_security`) and one of
these budgets:

- **rate**: a token bucket of `qps` with `burst`, as upstream's delegated clients (200 QPS,
  burst 400);
- **concurrency**: at most `concurrency` reviews under way (the pool's size), the others wait
  in order, at most `max_wait`;
- **fair share**: one caller (a client address for TokenReview, a user for
  SubjectAccessReview) may have at most `per_key` reviews under way or waiting. Past that, and
  past `max_wait`, a review is not made: `ReviewThrottled`, which the caller answers 429.

So a flood of bogus tokens from one address costs kube-apiserver at most `per_key` reviews at a
time, and someone else's review still finds a slot at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator, Callable

from kubemetrics.selfmetrics import MetricWriter

# Upstream's delegated authentication and authorization clients.
DEFAULT_QPS = 200.0
DEFAULT_BURST = 400
DEFAULT_CONCURRENCY = 32
DEFAULT_PER_KEY = 16
DEFAULT_MAX_WAIT = 5.0


class ReviewThrottled(Exception):
    """The review was not made: the caller's share or the budget is spent."""


class ReviewBudget:
    """The budget of one kind of review (`name`: `tokenreviews`, `subjectaccessreviews`)."""

    def __init__(
        self,
        name: str,
        *,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        concurrency: int = DEFAULT_CONCURRENCY,
        per_key: int = DEFAULT_PER_KEY,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.qps = qps
        self.burst = burst
        self.concurrency = concurrency
        self.per_key = per_key
        self.max_wait = max_wait
        self._clock = clock
        self._tokens = float(burst)
        self._filled_at = clock()
        self._running = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()
        self._keys: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.made = 0
        self.throttled = 0

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Held while one review for `key` is made. Raises ReviewThrottled."""
        if self._keys.get(key, 0) >= self.per_key:
            self.throttled += 1
            raise ReviewThrottled(f"{self.name}: too many under way for {key}")
        self._keys[key] = self._keys.get(key, 0) + 1
        try:
            await self._acquire()
            self.made += 1
            try:
                yield
            finally:
                self._running -= 1
                self._dispatch()
        finally:
            left = self._keys[key] - 1
            if left:
                self._keys[key] = left
            else:
                del self._keys[key]

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._filled_at) * self.qps)
        self._filled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    async def _acquire(self) -> None:
        if not self._queue and self._running < self.concurrency and self._take_token():
            self._running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        self._dispatch()
        try:
            async with asyncio.timeout(self.max_wait):
                await asyncio.shield(fut)
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                return  # granted just as time ran out: it is ours
            fut.cancel()
            with contextlib.suppress(ValueError):
                self._queue.remove(fut)
            self.throttled += 1
            raise ReviewThrottled(f"{self.name}: no room within {self.max_wait:g}s") from None
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._running -= 1  # granted, but its caller is gone: give it back
                self._dispatch()
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._queue.remove(fut)
            raise

    def _dispatch(self) -> None:
        """Grant waiting reviews, in order, while there is room and a token."""
        while self._queue and self._running < self.concurrency:
            head = self._queue[0]
            if head.done():
                self._queue.popleft()
                continue
            if not self._take_token():
                if self._timer is None:
                    wait = (1.0 - self._tokens) / self.qps if self.qps > 0 else 1.0
                    loop = asyncio.get_running_loop()
                    self._timer = loop.call_later(max(wait, 0.001), self._refilled)
                return
            self._queue.popleft()
            self._running += 1
            head.set_result(None)

    def _refilled(self) -> None:
        self._timer = None
        self._dispatch()

    def collect(self, w: MetricWriter) -> None:
        name = "kubemetrics_delegated_reviews_total"
        w.sample(name, [("result", "made"), ("review", self.name)], self.made)
        w.sample(name, [("result", "throttled"), ("review", self.name)], self.throttled)


def collect_reviews(w: MetricWriter, budgets: list[ReviewBudget]) -> None:
    """The review budgets' family for /metrics."""
    w.header(
        "kubemetrics_delegated_reviews_total",
        "TokenReviews and SubjectAccessReviews made, and those not made for the budget.",
        "counter",
    )
    for budget in budgets:
        budget.collect(w)
