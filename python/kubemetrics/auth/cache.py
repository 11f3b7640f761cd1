"""Bounded TTL caches for review answers, with one in-flight request per key.

TokenReview and SubjectAccessReview answers are cached like client-go's webhook caches (10 s by
default). Concurrent misses on the same key share one review: a burst of requests from one user
(kubectl top fans out) sends one request to the API server, not one each.

Answers can be kept in two partitions of `max_entries` each (`expendable(value)` picks the
second): refusals go there, so a flood of bogus tokens or denied requests evicts other
refusals, never the answers legitimate users are being served from.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Entries kept at most; the oldest are dropped first. client-go's webhook caches hold 4096-8192.
DEFAULT_MAX_ENTRIES = 8192


class TTLCache(Generic[K, V]):
    """A mapping whose entries expire `ttl_for(value)` seconds after they were stored."""

    def __init__(
        self,
        ttl_for: Callable[[V], float],
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        expendable: Callable[[V], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_for = ttl_for
        self._max = max_entries
        self._expendable = expendable
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._refusals: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries) + len(self._refusals)

    def get(self, key: K) -> V | None:
        for part in (self._entries, self._refusals):
            entry = part.get(key)
            if entry is None:
                continue
            expires, value = entry
            if self._clock() >= expires:
                del part[key]
                return None
            return value
        return None

    def put(self, key: K, value: V) -> None:
        ttl = self._ttl_for(value)
        self._entries.pop(key, None)
        self._refusals.pop(key, None)
        if ttl <= 0:
            return
        part = self._refusals if self._expendable and self._expendable(value) else self._entries
        part[key] = (self._clock() + ttl, value)
        while len(part) > self._max:
            part.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
        self._refusals.clear()

    async def get_or_load(
        self,
        key: K,
        load: Callable[[], Awaitable[V]],
        *,
        cacheable: Callable[[V], bool] = lambda _v: True,
    ) -> V:
        """The cached value, else the result of `load()` (shared by concurrent callers).

        An exception from `load()` reaches every waiter and is not cached; a value is cached
        only when `cacheable(value)`.
        """
        value = self.get(key)
        if value is not None:
            self.hits += 1
            return value
        pending = self._inflight.get(key)
        if pending is not None:
            self.hits += 1
            return await asyncio.shield(pending)
        self.misses += 1

        async def run() -> V:
            loaded = await load()
            if cacheable(loaded):
                self.put(key, loaded)
            return loaded

        # A task of its own: a caller that gives up (client gone) must not cancel the review
        # other callers are waiting for.
        task = asyncio.get_running_loop().create_task(run())
        self._inflight[key] = task

        def done(t: asyncio.Future[V]) -> None:
            if self._inflight.get(key) is t:
                del self._inflight[key]
            if not t.cancelled():
                t.exception()  # mark retrieved even if every caller went away

        task.add_done_callback(done)
        return await asyncio.shield(task)
