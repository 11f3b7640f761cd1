"""Bounded TTL caches for review answers, with one in-flight request per key.

TokenReview and SubjectAccessReview answers are cached like client-go's webhook caches (10 s by
default). Concurrent misses on the same key share one review: a burst of requests from one user
(kubectl top fans out) sends one request to the API server, not one each.
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_for = ttl_for
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._inflight: dict[K, asyncio.Future[V]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V) -> None:
        ttl = self._ttl_for(value)
        if ttl <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

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
