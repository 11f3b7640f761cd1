"""The scrape cycle: tick → ingest → forget → snapshot → warm → publish → trim, in order."""

from __future__ import annotations

import asyncio
import threading
import time

from kubemetrics import _native
from kubemetrics.cycle import Cycle
from kubemetrics.kube.discovery import Removed
from kubemetrics.selfmetrics import SelfMetrics
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text


def _payload(ts_ms: int, cpu_s: float, pod: str = "p") -> bytes:
    return kubelet_text(
        NodeSample(cpu_s, 1048576, ts_ms),
        [ContainerSample("ns", pod, "c", cpu_s / 2, 4096, 1.7e9, ts_ms)],
    )


class FakeScraper:
    """A tick that scrapes nothing (the tests ingest themselves); records forgets."""

    def __init__(self) -> None:
        self.ticks = 0
        self.forgotten: list[str] = []
        self.closed = False
        self.only: list[object] = []
        self.failing: dict[str, str] = {}

    async def tick(self, only: object = None) -> None:
        self.ticks += 1
        self.only.append(only)

    def forget(self, node: str) -> None:
        self.forgotten.append(node)

    async def close(self) -> None:
        self.closed = True


class FakeDiscovery:
    def __init__(self) -> None:
        self.pending = Removed()

    def take_removed(self) -> Removed:
        out, self.pending = self.pending, Removed()
        return out


def _cycle(store: object, scraper: FakeScraper, metrics: SelfMetrics, d: FakeDiscovery) -> Cycle:
    return Cycle(scraper, store, d, metrics, 15.0)  # type: ignore[arg-type]


def test_cycle_publishes_a_snapshot_and_storage_points_after_each_tick() -> None:
    async def main() -> None:
        store = _native.Store(15.0)
        metrics = SelfMetrics(15.0)
        cycle = _cycle(store, FakeScraper(), metrics, FakeDiscovery())
        assert not cycle.current().ready
        now = int(time.time() * 1000)
        store.ingest("n1", _payload(now - 10_000, 100.0), now)
        store.ingest("n1", _payload(now, 101.0), now)
        await cycle.run_once()
        snap = cycle.current()
        assert snap.ready
        assert snap.node_index("n1") == 0
        assert int(snap.nodes["cpu_nanocores"][0]) == 100_000_000  # 1 core-s over 10 s
        assert b'metrics_server_storage_points{type="node"} 1' in metrics.render()
        assert b'metrics_server_storage_points{type="container"} 1' in metrics.render()
        assert b"metrics_server_manager_tick_duration_seconds_count 1" in metrics.render()

    asyncio.run(main())


def test_cycle_applies_what_discovery_removed() -> None:
    async def main() -> None:
        store = _native.Store(15.0)
        metrics = SelfMetrics(15.0)
        scraper = FakeScraper()
        d = FakeDiscovery()
        cycle = _cycle(store, scraper, metrics, d)
        now = int(time.time() * 1000)
        for node, pod in (("n1", "p1"), ("n2", "p2")):
            store.ingest(node, _payload(now - 10_000, 100.0, pod), now)
            store.ingest(node, _payload(now, 101.0, pod), now)
        metrics.on_request("n2", 0.1, True, time.time())
        await cycle.run_once()
        assert store.points() == (2, 2)
        d.pending = Removed(nodes={"n2"}, pods={("ns", "p1")})
        await cycle.run_once()
        assert store.points() == (1, 0)
        assert cycle.current().node_index("n2") is None
        assert scraper.forgotten == ["n2"]
        assert b'node="n2"' not in metrics.render()
        await cycle.run_once()  # applied once
        assert scraper.forgotten == ["n2"]

    asyncio.run(main())


class _SlowStore:
    """A Store whose snapshot() blocks (in the worker thread) until released."""

    def __init__(self, fail: bool = False) -> None:
        self.inner = _native.Store(15.0)
        self.release = threading.Event()
        self.entered = threading.Event()
        self.fail = fail
        self.running = 0
        self.max_running = 0
        self.calls = 0

    def snapshot(self, now_ms: int) -> _native.Snapshot:
        self.calls += 1
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.entered.set()
        self.release.wait(10)
        self.running -= 1
        if self.fail:
            raise RuntimeError("snapshot bug")
        return self.inner.snapshot(now_ms)

    def points(self) -> tuple[int, int]:
        return self.inner.points()

    def forget_node(self, node: str) -> None:
        self.inner.forget_node(node)

    def forget_pod(self, namespace: str, pod: str) -> None:
        self.inner.forget_pod(namespace, pod)


def test_snapshot_runs_off_the_loop_and_cycles_never_overlap() -> None:
    async def main() -> None:
        store = _SlowStore()
        store.release.set()  # the constructor's first snapshot
        cycle = _cycle(store, FakeScraper(), SelfMetrics(15.0), FakeDiscovery())
        first = cycle.current()
        store.release.clear()
        store.entered.clear()
        task = asyncio.create_task(cycle.run_once())
        await asyncio.to_thread(store.entered.wait, 10)  # the cycle is inside snapshot()
        # The loop keeps going and keeps serving the previous snapshot meanwhile.
        for _ in range(4):
            await asyncio.sleep(0.01)
            assert cycle.current() is first
        store.release.set()
        await task
        assert cycle.current() is not first
        assert cycle.cycles == 1
        assert store.calls == 1 + 1
        assert store.max_running == 1

    asyncio.run(main())


def test_a_failing_snapshot_keeps_the_previous_one_and_later_cycles() -> None:
    async def main() -> None:
        store = _SlowStore()
        store.release.set()
        cycle = _cycle(store, FakeScraper(), SelfMetrics(15.0), FakeDiscovery())
        first = cycle.current()
        store.fail = True
        await cycle.run_once()
        assert cycle.current() is first and cycle.cycles == 1
        store.fail = False
        await cycle.run_once()
        assert cycle.current() is not first and cycle.cycles == 2

    asyncio.run(main())


def test_the_view_is_built_before_publishing_with_the_labels_of_that_moment() -> None:
    """A label changed after the cycle shows from the next view; the published snapshot's
    view already exists (built in the cycle, not by the first request)."""

    async def main() -> None:
        store = _native.Store(15.0)
        inv = _native.Inventory()
        inv.set_pod("ns", "p", {"app": "before"})
        cycle = Cycle(FakeScraper(), store, FakeDiscovery(), SelfMetrics(15.0), 15.0, inventory=inv)
        now = int(time.time() * 1000)
        store.ingest("n1", _payload(now - 10_000, 100.0), now)
        store.ingest("n1", _payload(now, 101.0), now)
        await cycle.run_once()
        inv.set_pod("ns", "p", {"app": "after"})
        view = cycle.current().view(inv)
        assert len(view.query("pods", None, "app=before").select()) == 1
        assert len(view.query("pods", None, "app=after").select()) == 0
        await cycle.run_once()
        view = cycle.current().view(inv)
        assert len(view.query("pods", None, "app=after").select()) == 1

    asyncio.run(main())


class FakeSharding:
    """Records the order of the cycle's calls into the shard."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.released: set[str] = {"gone-from-shard"}
        self.shared: list[tuple[int, list[str]]] = []
        self.forgotten: list[str] = []

    async def exchange(self, now_ms: int) -> None:
        self.log.append("exchange")

    def targets(self) -> list[str]:
        self.log.append("targets")
        return ["mine"]

    def forget(self, nodes: set[str]) -> None:
        self.forgotten += sorted(nodes)

    async def share(self, now_ms: int, failing: dict[str, str]) -> None:
        self.log.append("share")
        self.shared.append((now_ms, sorted(failing)))


def test_a_sharded_cycle_exchanges_first_scrapes_its_targets_and_shares_last() -> None:
    async def main() -> None:
        log: list[str] = []
        store = _native.Store(15.0)
        scraper = FakeScraper()
        scraper.failing = {"mine": "timeout"}
        d = FakeDiscovery()
        d.pending = Removed(nodes={"left"})
        shard = FakeSharding(log)
        cycle = Cycle(
            scraper,  # type: ignore[arg-type]
            store,
            d,
            SelfMetrics(15.0),
            15.0,
            sharding=shard,  # type: ignore[arg-type]
        )
        original = store.snapshot

        class Spy:
            def snapshot(self, now_ms: int) -> _native.Snapshot:
                log.append("snapshot")
                return original(now_ms)

            def __getattr__(self, name: str) -> object:
                return getattr(store, name)

        cycle._store = Spy()  # type: ignore[assignment]
        await cycle.run_once()
        assert log == ["exchange", "targets", "snapshot", "share"]
        assert scraper.only == [["mine"]]
        # A node that left this replica's share, and one that left the cluster, are forgotten.
        assert scraper.forgotten == ["gone-from-shard", "left"]
        assert shard.forgotten == ["left"]
        assert shard.shared[0][1] == ["mine"]

    asyncio.run(main())


def test_an_unsharded_cycle_scrapes_every_node() -> None:
    scraper = FakeScraper()
    asyncio.run(_cycle(_native.Store(15.0), scraper, SelfMetrics(15.0), FakeDiscovery()).run_once())
    assert scraper.only == [None]
