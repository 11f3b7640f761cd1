"""The scrape cycle, top to bottom: what the server does once per `--metric-resolution`.

    exchange         (--sharding=lease) the peers' latest points into the store, and from
                     them and the live members the nodes this replica scrapes
    tick → ingest    every node's kubelet once (or this replica's share); each body goes into
                     `Store.ingest` as it arrives
    forget           what discovery saw leave the cluster since the last cycle
    snapshot → view → publish
                     the one place the served data changes (`_publish`): the snapshot's
                     served view (labels as of now, label index, every item's values) is
                     built before the one assignment that publishes it
    share            (--sharding=lease) this replica's own points, encoded for its peers
    trim             give the cycle's freed memory back to the OS

Upstream's `server.tick()` is `data := scraper.Scrape(); storage.Store(data)`; this is the
same, with the steps that are ours written out. One cycle at start, then one per resolution;
cycles never overlap (one that overruns is followed at once by the next, never by a pile-up).
Discovery only writes the Inventory and the node table; it *emits* removals and the cycle
applies them here, so the store is written by this module alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from kubemetrics import _native
from kubemetrics.kube.discovery import Removed
from kubemetrics.scrape.memory import release_free_memory
from kubemetrics.scrape.scraper import Scraper
from kubemetrics.shard.sharding import Sharding

log = logging.getLogger("kubemetrics.cycle")


class CycleStore(Protocol):
    """The part of ``kubemetrics._native.Store`` the cycle uses (the scraper ingests)."""

    def forget_node(self, node: str) -> None: ...
    def forget_pod(self, namespace: str, pod: str) -> None: ...
    def snapshot(self, now_ms: int) -> _native.Snapshot: ...
    def points(self) -> tuple[int, int]: ...


class RemovalSource(Protocol):
    """Discovery, as the cycle sees it."""

    def take_removed(self) -> Removed: ...


class CycleObserver(Protocol):
    """Self-metrics hooks (implemented by selfmetrics.py)."""

    def on_tick(self, seconds: float) -> None: ...
    def on_node_removed(self, node: str) -> None: ...
    def set_storage_points(self, nodes: int, containers: int) -> None: ...


class Cycle:
    """Runs the cycle and holds the published snapshot the API serves (`current`)."""

    def __init__(
        self,
        scraper: Scraper,
        store: CycleStore,
        discovery: RemovalSource,
        observer: CycleObserver,
        resolution: float,
        clock: Callable[[], float] = time.time,
        *,
        inventory: _native.Inventory | None = None,
        sharding: Sharding | None = None,
    ) -> None:
        """`inventory`: what each snapshot's view is built with before it is published;
        without one (tests of the cycle alone) the API builds a view on first use."""
        self._scraper = scraper
        self._inventory = inventory
        self._sharding = sharding
        self._store = store
        self._discovery = discovery
        self._observer = observer
        self._resolution = resolution
        self._clock = clock
        # An empty snapshot until the first cycle: the API answers (with nothing) meanwhile.
        self._published = store.snapshot(int(clock() * 1000))
        self.cycles = 0

    def current(self) -> _native.Snapshot:
        return self._published

    async def run(self) -> None:
        """One cycle now, then one per resolution, until cancelled."""
        try:
            next_at = time.monotonic()
            while True:
                await self.run_once()
                next_at += self._resolution
                now = time.monotonic()
                if next_at < now:
                    # Overran: start the next cycle at once, and don't try to catch up.
                    next_at = now
                await asyncio.sleep(next_at - now)
        finally:
            await self._scraper.close()

    async def run_once(self) -> None:
        started = time.monotonic()
        shard = self._sharding
        # exchange: peers' points first, so a node adopted now already has its previous point
        targets = None
        if shard is not None:
            await shard.exchange(int(self._clock() * 1000))
            targets = shard.targets()
            for node in shard.released:
                self._scraper.forget(node)
        # tick → ingest
        await self._scraper.tick(targets)
        self._observer.on_tick(time.monotonic() - started)
        # forget
        self._forget(self._discovery.take_removed())
        # snapshot → warm → publish
        now_ms = int(self._clock() * 1000)
        try:
            await self._publish(now_ms)
        except Exception:  # a bug here must not stop later cycles
            log.exception("Taking the metrics snapshot failed")
        # share
        if shard is not None:
            try:
                await shard.share(now_ms, self._scraper.failing)
            except Exception:
                log.exception("Encoding this replica's points for its peers failed")
        nodes, containers = self._store.points()
        self._observer.set_storage_points(nodes, containers)
        self.cycles += 1
        # trim: the cycle's bodies and the previous snapshot are freed by now
        await asyncio.to_thread(release_free_memory)

    def _forget(self, removed: Removed) -> None:
        if self._sharding is not None:
            self._sharding.forget(removed.nodes)
        for node in removed.nodes:
            self._store.forget_node(node)
            self._scraper.forget(node)
            self._observer.on_node_removed(node)
        for namespace, pod in removed.pods:
            self._store.forget_pod(namespace, pod)

    async def _publish(self, now_ms: int) -> None:
        """snapshot → view → publish: the seam where what the API serves is built.

        `Store.snapshot` and `Snapshot.view` release the GIL, so they run in a worker thread
        and the loop keeps serving the previous snapshot meanwhile. The view takes the
        inventory's members and labels as they are now (a label change shows from the next
        cycle; a deletion applies to every view at once) and formats every item, so no request
        after a new snapshot pays for it. With --sharding=lease the peers' points were merged
        into the store by this cycle's exchange, so the snapshot, and so its view, is the union.
        """
        snapshot = await asyncio.to_thread(self._store.snapshot, now_ms)
        if self._inventory is not None:
            await asyncio.to_thread(snapshot.view, self._inventory)
        self._published = snapshot
