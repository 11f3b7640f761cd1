"""The scraper and the scrape cycle's loop against fake kubelets over real HTTP/TLS on 127.0.0.1.

Covers: bodies reach the store unchanged with the request time, the path annotation, failing
kubelets (slow, 500, garbage, oversized, unreachable, no address) not affecting healthy ones,
one log line per state change, keep-alive across ticks, ticks that never overlap, the TLS
modes (CA, insecure, mTLS, completely insecure) and token rotation, cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import uvloop
from aiohttp import web

from kubemetrics._native import Inventory, Store
from kubemetrics.config import ConfigError
from kubemetrics.cycle import Cycle
from kubemetrics.kube import (
    ApiClient,
    ClusterCredentials,
    Discovery,
    DiscoverySettings,
    NodeTarget,
    TokenSource,
    load_kubeconfig_credentials,
)
from kubemetrics.kube.discovery import Removed
from kubemetrics.scrape import transport
from kubemetrics.scrape.memory import release_free_memory
from kubemetrics.scrape.scraper import (
    KubeletClientSettings,
    Scraper,
    ScrapeSettings,
    kubelet_settings,
)
from kubemetrics.scrape.transport import KubeletConnector
from kubemetrics.transport import TLSTransport
from kubemetrics_sim.launch import SimProcess
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text
from tests.helpers.hostile import HostileProcess
from tests.helpers.kube import CA, RecordingStore, Server, run, until

TOKEN = "kubelet-token"


def payload(node: str) -> bytes:
    ts = 1_700_000_000_000
    return kubelet_text(
        NodeSample(357.35, None, ts),
        [ContainerSample("ns", f"{node}-pod", "c", 1.5, None, None, ts)],
    )


def big_body(node: str) -> bytes:
    """~3 MiB of distinct lines: far more than one TLS record, socket buffer or read window."""
    head = payload(node)
    return head + b"".join(b"# %s line %07d\n" % (node.encode(), i) for i in range(120_000))


class Kubelet:
    """One fake kubelet. ``mode``: ok, slow, error, garbage, big, slowbig, huge."""

    def __init__(self, name: str, mode: str = "ok", path: str = "/metrics/resource") -> None:
        self.name = name
        self.mode = mode
        self.path = path
        self.auth_headers: list[str | None] = []
        self.encodings: list[str | None] = []
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.app = app
        self.server: Server | None = None
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path != self.path:
            return web.Response(status=404)
        self.auth_headers.append(request.headers.get("Authorization"))
        self.encodings.append(request.headers.get("Accept-Encoding"))
        if self.mode == "slow":
            await self.release.wait()
        if self.mode == "error":
            return web.Response(status=500, text="boom")
        if self.mode == "garbage":
            return web.Response(body=b"<html>not metrics</html>")
        if self.mode == "big":
            return web.Response(body=big_body(self.name), content_type="text/plain")
        if self.mode == "slowbig":  # ~3 MiB over about a second
            resp = web.StreamResponse()
            resp.content_type = "text/plain"
            await resp.prepare(request)
            body = big_body(self.name)
            for i in range(0, len(body), 65536):
                await resp.write(body[i : i + 65536])
                await asyncio.sleep(0.02)
            return resp
        if self.mode == "huge":
            resp = web.StreamResponse()
            await resp.prepare(request)
            chunk = b"#" * 65536
            for _ in range(64):  # 4 MiB, chunked: no Content-Length to check up front
                await resp.write(chunk)
            return resp
        return web.Response(body=payload(self.name), content_type="text/plain")

    async def start(self, ctx: object) -> Server:
        import ssl

        self.server = Server(self.app, ctx if isinstance(ctx, ssl.SSLContext) else None)
        await self.server.start()
        return self.server

    def target(self, path: str | None = None) -> NodeTarget:
        assert self.server is not None
        return NodeTarget(self.name, "127.0.0.1", self.server.port, path or self.path)


class Observer:
    """The scraper's and the cycle's observer, recording what they report, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool]] = []
        self.ticks: list[float] = []
        self.removed: list[str] = []
        self.points: list[tuple[int, int]] = []

    def on_request(self, node: str, seconds: float, success: bool, started_at: float) -> None:
        self.events.append(("request", node, success))

    def on_tick(self, seconds: float) -> None:
        self.ticks.append(seconds)
        self.events.append(("tick", "", True))

    def on_node_removed(self, node: str) -> None:
        self.removed.append(node)

    def set_storage_points(self, nodes: int, containers: int) -> None:
        self.points.append((nodes, containers))

    def result(self, node: str) -> list[bool]:
        return [ok for kind, n, ok in self.events if kind == "request" and n == node]


@contextlib.asynccontextmanager
async def kubelets(
    ca: CA, *modes: str, client_ca: CA | None = None
) -> AsyncIterator[list[Kubelet]]:
    ctx = ca.server_context(ca.issue("kubelet"), client_ca=client_ca)
    fleet = [Kubelet(f"node-{i}-{m}", m) for i, m in enumerate(modes)]
    for k in fleet:
        await k.start(ctx)
    try:
        yield fleet
    finally:
        for k in fleet:
            k.release.set()
            assert k.server is not None
            await k.server.stop()


def creds_for(ca: CA, token: str = TOKEN) -> ClusterCredentials:
    return ClusterCredentials(
        server="https://127.0.0.1:1",
        ca_pem=ca.cert_pem.decode(),
        token=TokenSource(f"Bearer {token}"),
    )


class Removals:
    """Stands in for discovery: what the next cycle takes as removed."""

    def __init__(self) -> None:
        self.next = Removed()

    def take_removed(self) -> Removed:
        out, self.next = self.next, Removed()
        return out


def cycle_of(scraper: Scraper, store: RecordingStore, obs: Observer, resolution: float) -> Cycle:
    return Cycle(scraper, store, Removals(), obs, resolution)


def fast(resolution: float = 60.0) -> ScrapeSettings:
    # A small stagger keeps the tests quick; the 8 ms × nodes rule is exercised all the same.
    return ScrapeSettings(resolution=resolution, max_stagger=0.05)


def test_tick_delivers_bodies_to_the_store(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "ok", "ok", "ok") as fleet:
            fleet[2].path = "/custom/metrics"  # as the node's resource-metrics-path says
            targets = {k.name: k.target() for k in fleet}
            store = RecordingStore()
            obs = Observer()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast(), obs)
            before = int(time.time() * 1000)
            await cycle_of(scraper, store, obs, 60.0).run_once()
            after = int(time.time() * 1000)
            await scraper.close()
            got = {node: body for node, body, _ in store.ingested}
            assert got == {k.name: payload(k.name) for k in fleet}
            assert all(before <= t <= after for _, _, t in store.ingested)
            assert all(k.auth_headers == [f"Bearer {TOKEN}"] for k in fleet)
            # gzip accepted, as upstream's Go client does: kubelets compress their answers.
            assert all(len(k.encodings) == 1 and "gzip" in k.encodings[0] for k in fleet)
            assert sorted(n for kind, n, ok in obs.events if kind == "request" and ok) == sorted(
                targets
            )
            assert obs.events[-1][0] == "tick" and scraper.failing == {}
            assert scraper.last_tick_started is not None

    run(main())


def test_failing_kubelets_do_not_affect_healthy_ones(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "ok", "slow", "error", "garbage", "huge", "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            # A port with nobody listening, and a node without a usable address.
            closed = Server(web.Application())
            await closed.start()
            port = closed.port
            await closed.stop()
            targets["gone"] = NodeTarget("gone", "127.0.0.1", port)
            targets["noaddr"] = NodeTarget(
                "noaddr", "", 10250, error="no address matched types [InternalIP]"
            )
            store = RecordingStore()
            obs = Observer()
            settings = KubeletClientSettings(
                ca_pem=ca.cert_pem.decode(),
                token=TokenSource(f"Bearer {TOKEN}"),
                request_timeout=1.0,
                max_body_bytes=1 << 20,
            )
            scraper = Scraper(targets, store, settings, fast(), obs)
            await scraper.tick()
            await scraper.close()

            ok = {fleet[0].name, fleet[5].name}
            assert {n for n, _, _ in store.ingested} == ok
            f = scraper.failing
            assert set(f) == set(targets) - ok
            assert f[fleet[1].name] == "request timed out after 1s"
            assert f[fleet[2].name] == 'request failed, status: "500 Internal Server Error"'
            assert f[fleet[3].name].startswith("invalid metrics: line 1")
            assert f[fleet[4].name] == f"response too large: over {1 << 20} bytes"
            assert "ClientConnectorError" in f["gone"] or "Connect" in f["gone"]
            assert f["noaddr"] == "no address matched types [InternalIP]"
            # The healthy nodes were done before the slow one gave up: it delayed nobody.
            order = [n for kind, n, _ in obs.events if kind == "request"]
            assert order.index(fleet[1].name) > max(order.index(n) for n in ok)
            assert all(obs.result(n) == [False] for n in set(targets) - ok)

    run(main())


def test_one_log_line_per_state_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "error", "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            scraper = Scraper(targets, RecordingStore(), kubelet_settings(creds_for(ca)), fast())
            for _ in range(3):
                await scraper.tick()
            fleet[0].mode = "ok"
            for _ in range(2):
                await scraper.tick()
            await scraper.close()

    with caplog.at_level(logging.INFO, logger="kubemetrics.scraper"):
        run(main())
    msgs = [r.getMessage() for r in caplog.records if r.name == "kubemetrics.scraper"]
    assert msgs == ["Failed to scrape node", "Scraping node works again"]


def test_connections_are_kept_alive_across_ticks(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "ok", "ok", "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            store = RecordingStore()
            obs = Observer()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast(0.2), obs)
            task = asyncio.create_task(cycle_of(scraper, store, obs, 0.2).run())
            await until(lambda: len(obs.ticks) >= 4, "four ticks")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert len(store.ingested) >= 12
            # One TCP connection (one TLS handshake) per kubelet for all the ticks.
            for k in fleet:
                assert k.server is not None
                assert len(k.server.peers) == 1, k.server.peers

    run(main())


def test_ticks_never_overlap_and_do_not_pile_up(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "slow") as fleet:
            targets = {k.name: k.target() for k in fleet}
            obs = Observer()
            settings = kubelet_settings(creds_for(ca), request_timeout=0.5)
            store = RecordingStore()
            scraper = Scraper(targets, store, settings, fast(0.1), obs)
            task = asyncio.create_task(cycle_of(scraper, store, obs, 0.1).run())
            await until(lambda: len(obs.ticks) >= 3, "three ticks")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            kinds = [kind for kind, _, _ in obs.events]
            # Each tick (0.5 s, longer than the 0.1 s resolution) ends before the next begins.
            assert kinds[:6] == ["request", "tick"] * 3
            # No pile-up: the kubelet saw one request per tick, never concurrent ones.
            assert len(fleet[0].auth_headers) <= len(obs.ticks) + 1

    run(main())


def test_cancellation_stops_in_flight_scrapes(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "slow", "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            store = RecordingStore()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast())
            task = asyncio.create_task(cycle_of(scraper, store, Observer(), 60.0).run())
            await until(lambda: len(fleet[0].auth_headers) == 1, "slow request in flight")
            await until(lambda: len(store.ingested) == 1, "healthy node scraped")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert scraper._session is None  # closed on the way out

    run(main(), timeout=30)


def test_removed_nodes_are_reported_once(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "ok", "error") as fleet:
            targets = {k.name: k.target() for k in fleet}
            obs = Observer()
            store = RecordingStore()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast(), obs)
            removals = Removals()
            cycle = Cycle(scraper, store, removals, obs, 60.0)
            await cycle.run_once()
            assert fleet[1].name in scraper.failing
            # Discovery drops the node from the table and emits its removal.
            del targets[fleet[1].name]
            removals.next.nodes.add(fleet[1].name)
            await cycle.run_once()
            await cycle.run_once()
            await scraper.close()
            assert obs.removed == [fleet[1].name]
            assert store.forgotten_nodes == [fleet[1].name]
            assert scraper.failing == {}

    run(main())


# ---------------------------------------------------------------- TLS modes and credentials


def test_kubelet_ca_verification_and_insecure_tls(tmp_path: Path) -> None:
    async def main() -> None:
        cluster_ca = CA(tmp_path, "cluster")
        kubelet_ca = CA(tmp_path, "kubelet-ca")
        async with kubelets(kubelet_ca, "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            creds = creds_for(cluster_ca)
            name = fleet[0].name

            verified = Scraper(targets, RecordingStore(), kubelet_settings(creds), fast())
            await verified.tick()
            await verified.close()
            assert "CERTIFICATE_VERIFY_FAILED" in verified.failing[name]

            with_ca = kubelet_settings(creds, certificate_authority=str(kubelet_ca.cert_file))
            store = RecordingStore()
            s = Scraper(targets, store, with_ca, fast())
            await s.tick()
            await s.close()
            assert [n for n, _, _ in store.ingested] == [name]

            store = RecordingStore()
            insecure = kubelet_settings(creds, insecure_tls=True)
            s = Scraper(targets, store, insecure, fast())
            await s.tick()
            await s.close()
            assert [n for n, _, _ in store.ingested] == [name]
            # Skipping verification still authenticates.
            assert fleet[0].auth_headers[-1] == f"Bearer {TOKEN}"

    run(main())


def test_kubelet_client_certificate(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        client_ca = CA(tmp_path, "client-ca")
        pair = client_ca.issue("metrics-server", server=False)
        async with kubelets(ca, "ok", client_ca=client_ca) as fleet:
            targets = {k.name: k.target() for k in fleet}
            creds = creds_for(ca)

            without = Scraper(targets, RecordingStore(), kubelet_settings(creds), fast())
            await without.tick()
            await without.close()
            assert fleet[0].name in without.failing

            store = RecordingStore()
            settings = kubelet_settings(
                creds, client_certificate=str(pair.cert_file), client_key=str(pair.key_file)
            )
            s = Scraper(targets, store, settings, fast())
            await s.tick()
            await s.close()
            assert len(store.ingested) == 1

            # Without flags the kubeconfig's own client pair is inherited.
            inherited = ClusterCredentials(
                server=creds.server,
                ca_pem=creds.ca_pem,
                cert_pem=pair.cert_pem.decode(),
                key_pem=pair.key_pem.decode(),
            )
            store = RecordingStore()
            s = Scraper(targets, store, kubelet_settings(inherited), fast())
            await s.tick()
            await s.close()
            assert len(store.ingested) == 1

    run(main())


def test_completely_insecure_is_plain_http_without_credentials(tmp_path: Path) -> None:
    async def main() -> None:
        fleet = [Kubelet("plain")]
        await fleet[0].start(None)
        try:
            targets = {k.name: k.target() for k in fleet}
            store = RecordingStore()
            settings = kubelet_settings(creds_for(CA(tmp_path)), completely_insecure=True)
            assert settings.scheme == "http"
            s = Scraper(targets, store, settings, fast())
            await s.tick()
            await s.close()
            assert len(store.ingested) == 1
            assert fleet[0].auth_headers == [None]
        finally:
            assert fleet[0].server is not None
            await fleet[0].server.stop()

    run(main())


def test_conflicting_kubelet_flags_are_errors(tmp_path: Path) -> None:
    creds = creds_for(CA(tmp_path))
    with pytest.raises(ConfigError, match="cannot be used together"):
        kubelet_settings(creds, insecure_tls=True, certificate_authority="/ca.crt")
    with pytest.raises(ConfigError, match="must be given together"):
        kubelet_settings(creds, client_certificate="/c.crt")
    with pytest.raises(ConfigError, match="completely-insecure cannot be combined"):
        kubelet_settings(creds, completely_insecure=True, insecure_tls=True)
    with pytest.raises(ConfigError, match="cannot load CA"):
        KubeletClientSettings(ca_pem="not a certificate").ssl_context()


def test_kubelet_token_rotation(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        token_file = tmp_path / "token"
        token_file.write_text("first")
        async with kubelets(ca, "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            creds = ClusterCredentials(
                server="https://127.0.0.1:1",
                ca_pem=ca.cert_pem.decode(),
                token=TokenSource.from_file(str(token_file), refresh_seconds=0.0),
            )
            s = Scraper(targets, RecordingStore(), kubelet_settings(creds), fast())
            await s.tick()
            token_file.write_text("second")
            await s.tick()
            await s.close()
            assert fleet[0].auth_headers == ["Bearer first", "Bearer second"]

    run(main())


def test_unreadable_token_fails_the_tick_not_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        ca = CA(tmp_path)
        token_file = tmp_path / "token"  # not written yet: no credential was ever readable
        async with kubelets(ca, "ok", "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            creds = ClusterCredentials(
                server="https://127.0.0.1:1",
                ca_pem=ca.cert_pem.decode(),
                token=TokenSource.from_file(str(token_file), refresh_seconds=0.0),
            )
            store = RecordingStore()
            obs = Observer()
            s = Scraper(targets, store, kubelet_settings(creds), fast(), obs)
            await cycle_of(s, store, obs, 60.0).run_once()
            assert set(s.failing) == set(targets)
            assert all("cannot read credentials" in m for m in s.failing.values())
            assert store.ingested == [] and obs.events[-1][0] == "tick"
            assert all(k.auth_headers == [] for k in fleet)  # nothing sent without a token
            token_file.write_text("late")
            await s.tick()
            await s.close()
            assert s.failing == {}
            assert all(k.auth_headers == ["Bearer late"] for k in fleet)

    run(main())


# ---------------------------------------------------------------- against the simulator


@pytest.mark.slow
def test_discovery_and_scraping_against_the_simulator(sim: SimProcess) -> None:
    """Real reflectors, scraper, Store and Inventory against the simulated cluster."""

    async def main() -> None:
        creds = await load_kubeconfig_credentials(sim.kubeconfig("metrics-server"))
        inv = Inventory()
        store = Store(1.0)
        obs = Observer()
        settings = DiscoverySettings(
            address_types=("InternalIP", "ExternalIP", "Hostname"),
            kubelet_port=1,  # wrong on purpose: the node status port must win
            use_node_status_port=True,
        )
        async with ApiClient(creds) as client:
            d = Discovery(client, inv, settings)
            tasks = [asyncio.create_task(d.run())]
            try:
                await d.wait_synced()
                running = await asyncio.to_thread(
                    sim.api, "/api/v1/pods?fieldSelector=status.phase%3DRunning"
                )
                assert set(d.targets) == set(sim.info["nodes"])
                for name, t in d.targets.items():
                    assert (t.host, t.port) == sim.node_address(name)
                assert inv.pod_count() == len(running["items"]) > 0
                for item in running["items"]:
                    meta = item["metadata"]
                    assert inv.pod_labels(meta["namespace"], meta["name"]) == meta["labels"]

                scraper = Scraper(
                    d.targets,
                    store,
                    kubelet_settings(creds, request_timeout=0.8),
                    ScrapeSettings(resolution=1.0),
                    obs,
                )
                cycle = Cycle(scraper, store, d, obs, 1.0)
                tasks.append(asyncio.create_task(cycle.run()))

                def servable() -> int:
                    snap = store.snapshot(int(time.time() * 1000))
                    return sum(snap.node_index(n) is not None for n in d.targets)

                await until(lambda: servable() == len(d.targets), "every node servable", 30)
                snap = store.snapshot(int(time.time() * 1000))
                truth = await asyncio.to_thread(sim.truth)
                matched = 0
                for name, node_truth in truth["nodes"].items():
                    i = snap.node_index(name)
                    assert i is not None
                    ts = int(snap.nodes["timestamp_ms"][i])
                    hist = {h[0]: h for h in node_truth["history"]}
                    if ts in hist:  # the simulator keeps two samples; it may have moved on
                        assert int(snap.nodes["memory_bytes"][i]) == hist[ts][2]
                        matched += 1
                assert matched >= 1

                # Faults on two kubelets: only they fail, the third keeps being scraped.
                names = sorted(d.targets)
                await asyncio.to_thread(sim.fault, names[1], "http500")
                await asyncio.to_thread(sim.fault, names[2], "garbage")
                await until(
                    lambda: set(scraper.failing) == {names[1], names[2]}, "faults noticed", 30
                )
                assert scraper.failing[names[1]].startswith('request failed, status: "500')
                assert scraper.failing[names[2]].startswith("invalid metrics:")
                healthy = len(obs.result(names[0]))
                await until(lambda: len(obs.result(names[0])) > healthy + 1, "still scraping")
                assert all(obs.result(names[0]))
                for n in names[1:]:
                    await asyncio.to_thread(sim.heal, n)
                await until(lambda: not scraper.failing, "healed", 30)

                # A deleted pod leaves the inventory through the watch.
                item = running["items"][0]["metadata"]
                await asyncio.to_thread(sim.delete_pod, item["namespace"], item["name"])
                await until(
                    lambda: not inv.has_pod(item["namespace"], item["name"]), "pod deletion", 30
                )
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    run(main(), timeout=120)


def test_tls_transport_large_bodies_byte_exact_and_reused(tmp_path: Path) -> None:
    """The scraper's own TLS transport (OpenSSL on the socket): multi-MiB bodies arrive byte
    for byte through read pauses (aiohttp's flow control) on both event loops, and the
    connection is reused for the next tick."""

    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "big", "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            store = RecordingStore()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast())
            await scraper.tick()
            await scraper.tick()
            session = scraper._session
            assert session is not None
            transports = [
                proto.transport
                for conns in session.connector._conns.values()  # type: ignore[union-attr]
                for proto, _ in conns
            ]
            assert len(transports) == 2
            assert all(isinstance(t, TLSTransport) for t in transports)
            await scraper.close()
            assert scraper.failing == {}
            want = {k.name: big_body(k.name) if k.mode == "big" else payload(k.name) for k in fleet}
            assert [n for n, _, _ in store.ingested].count(fleet[0].name) == 2
            for node, body, _ in store.ingested:
                assert body == want[node]
            for k in fleet:
                assert k.server is not None and len(k.server.peers) == 1

    run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 60))


def test_connection_closed_by_kubelet_is_replaced(tmp_path: Path) -> None:
    """A kubelet that closes an idle kept-alive connection (restart, idle timeout) costs
    nothing: the pool notices the close and the next tick connects afresh."""

    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "ok") as fleet:
            k = fleet[0]
            targets = {k.name: k.target()}
            store = RecordingStore()
            obs = Observer()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast(), obs)
            await scraper.tick()
            assert k.server is not None
            await k.server.stop()
            await k.server.start()  # same port; the old connection was closed by the server
            session = scraper._session
            assert session is not None
            connector = session.connector
            assert connector is not None
            await until(
                lambda: (
                    not any(
                        proto.is_connected()
                        for conns in connector._conns.values()
                        for proto, _ in conns
                    )
                ),
                "the idle connection to notice the close",
            )
            await scraper.tick()
            await scraper.close()
            assert obs.result(k.name) == [True, True]
            assert len(store.ingested) == 2 and len(k.server.peers) == 2

    run(main())


def test_stalled_tls_handshake_times_out_and_closes_the_socket(tmp_path: Path) -> None:
    """A peer that accepts TCP but never answers the TLS hello fails that node by its timeout
    and the socket is closed (no descriptor left behind)."""

    async def main() -> None:
        closed = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()  # returns at the client's close
            closed.set()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            ca = CA(tmp_path)
            settings = KubeletClientSettings(ca_pem=ca.cert_pem.decode(), request_timeout=0.5)
            targets = {"mute": NodeTarget("mute", "127.0.0.1", port)}
            scraper = Scraper(targets, RecordingStore(), settings, fast())
            await scraper.tick()
            assert scraper.failing == {"mute": "request timed out after 0.5s"}
            await asyncio.wait_for(closed.wait(), 10)
            await scraper.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


@pytest.mark.skipif(
    not hasattr(__import__("ctypes").CDLL(None), "malloc_trim"), reason="needs glibc"
)
def test_release_free_memory_returns_freed_heap_pages() -> None:
    """Freed 32 KiB blocks trapped between live small ones stay resident until trimmed."""

    def rss_kib() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    assert release_free_memory()
    big: list[bytes] = []
    pins: list[bytes] = []
    for i in range(4096):  # 128 MiB of bodies, each followed by a small long-lived object
        big.append(bytes([i & 0xFF]) * 32768)
        pins.append(b"pin %d" % i * 40)
    before = rss_kib()
    big.clear()
    freed_kib = 4096 * 32
    held = rss_kib()
    assert release_free_memory()
    after = rss_kib()
    assert held - after > freed_kib // 2, (before, held, after)
    assert len(pins) == 4096


def test_unexpected_aiohttp_hook_shape_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If aiohttp ever calls the private hook differently, the connector uses aiohttp's own
    TLS transport (correct, only bigger) and says so once."""
    calls: list[dict[str, object]] = []

    async def aiohttp_own(self: object, *args: object, **kwargs: object) -> tuple[str, str]:
        calls.append(kwargs)
        return "aiohttp-transport", "protocol"

    monkeypatch.setattr(transport, "_fell_back", False)
    monkeypatch.setattr(aiohttp.TCPConnector, "_wrap_create_connection", aiohttp_own)

    async def main() -> None:
        connector = KubeletConnector()
        ctx = ssl.create_default_context()
        try:
            for _ in range(3):  # no addr_infos: not the shape the hook was written for
                got = await connector._wrap_create_connection(lambda: None, ssl=ctx)
                assert got == ("aiohttp-transport", "protocol")
            # plain HTTP is not a fall-back: nothing to replace there
            await connector._wrap_create_connection(lambda: None, ssl=False)
        finally:
            await connector.close()

    with caplog.at_level(logging.WARNING, logger="kubemetrics.scraper"):
        run(main())
    assert len(calls) == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "aiohttp's own TLS transport" in warnings[0]
    assert aiohttp.__version__ in warnings[0]


# --- hostile kubelets ---------------------------------------------------------------------------


def test_a_flooding_kubelet_cannot_freeze_the_event_loop(tmp_path: Path) -> None:
    """A kubelet answering with a flood of tiny pipelined `200 OK`s (from its own process, so
    it is never slowed by our loop): the transport reads a bounded amount per readable event
    and yields, so the loop keeps running, the scrape takes the first answer, and the
    connection is closed at once instead of being parsed until the peer tires."""

    async def main() -> None:
        ca = CA(tmp_path)
        pair = ca.issue("kubelet")
        body_file = tmp_path / "body.txt"
        body_file.write_bytes(payload("flood"))
        with HostileProcess(
            "flood-kubelet", str(pair.cert_file), str(pair.key_file), str(body_file), "20"
        ) as kubelet:
            port = int((await asyncio.to_thread(kubelet.readline)).split()[1])
            targets = {"flood": NodeTarget("flood", "127.0.0.1", port)}
            store = RecordingStore()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast())
            loop = asyncio.get_running_loop()
            gaps: list[float] = []

            async def heartbeat() -> None:
                last = loop.time()
                while True:
                    await asyncio.sleep(0.01)
                    now = loop.time()
                    gaps.append(now - last)
                    last = now

            beat = asyncio.create_task(heartbeat())
            try:
                await scraper.tick()
                ended = await asyncio.to_thread(kubelet.readline, 30)
            finally:
                beat.cancel()
                await scraper.close()
            # Without fair reads the loop is stuck in one read callback until the flood ends.
            assert max(gaps) < 5.0, max(gaps)
            assert float(ended.split()[-1]) < 10.0, ended
            assert scraper.failing == {}
            assert [n for n, _, _ in store.ingested] == ["flood"]
            assert store.ingested[0][1] == payload("flood")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(main(), 90))


def test_unsolicited_data_on_a_pooled_connection_closes_it(tmp_path: Path) -> None:
    """Once its answer is read, a kubelet has nothing to say until the next tick asks: bytes
    it sends on the idle kept-alive connection (here a forged answer) close that connection,
    and the next tick reads its own answer on a new one, not the planted one."""

    async def main() -> None:
        ca = CA(tmp_path)
        ctx = ca.server_context(ca.issue("kubelet"))
        forged = payload("forged")
        connections = 0
        answered = 0

        def answer(body: bytes) -> bytes:
            return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

        async def kubelet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections, answered
            connections += 1
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    answered += 1
                    writer.write(answer(payload("planted" if answered > 1 else "real")))
                    if answered == 1:
                        await asyncio.sleep(0.3)
                        writer.write(answer(forged))  # nobody asked for this one
                    await writer.drain()
            writer.close()

        server = await asyncio.start_server(kubelet, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            targets = {"n": NodeTarget("n", "127.0.0.1", port)}
            store = RecordingStore()
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), fast())
            await scraper.tick()
            await asyncio.sleep(1.0)  # the forged answer arrives on the idle connection
            await scraper.tick()
            await scraper.close()
        finally:
            server.close()
            await server.wait_closed()
        assert scraper.failing == {}
        bodies = [body for _, body, _ in store.ingested]
        assert bodies == [payload("real"), payload("planted")]
        assert forged not in bodies
        assert connections == 2

    run(main())


def test_a_hung_credential_refresh_fails_the_tick_not_the_loop(tmp_path: Path) -> None:
    """A credential reader that never answers (an exec plugin stuck on a dead IAM endpoint):
    while a token exists the tick waits about a second and uses it; without one the tick
    fails every node once the refresh gives up (here after 1 s), and the next tick runs.
    Before, every tick waited on the refresh for ever."""

    async def main() -> None:
        ca = CA(tmp_path)
        cancelled = asyncio.Event()

        async def hang() -> str | None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise
            return None

        async with kubelets(ca, "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            stale = TokenSource("Bearer current", reader=hang, refresh_timeout=1.0)
            stale.invalidate()  # a 401 asked for a fresh one
            creds = ClusterCredentials(
                server="https://127.0.0.1:1", ca_pem=ca.cert_pem.decode(), token=stale
            )
            s = Scraper(targets, RecordingStore(), kubelet_settings(creds), fast())
            await asyncio.wait_for(s.tick(), 20)
            assert s.failing == {} and fleet[0].auth_headers == ["Bearer current"]
            await asyncio.wait_for(cancelled.wait(), 20)  # the refresh was given up
            await s.close()

            cancelled.clear()
            none = TokenSource(reader=hang, refresh_timeout=1.0)
            creds = ClusterCredentials(
                server="https://127.0.0.1:1", ca_pem=ca.cert_pem.decode(), token=none
            )
            s = Scraper(targets, RecordingStore(), kubelet_settings(creds), fast())
            for _ in range(2):
                await asyncio.wait_for(s.tick(), 20)
                assert all("no answer within 1s" in m for m in s.failing.values()), s.failing
                assert set(s.failing) == set(targets)
            assert cancelled.is_set() and fleet[0].auth_headers == ["Bearer current"]
            await s.close()

    run(main())


def test_kubelet_bodies_in_flight_share_one_budget(tmp_path: Path) -> None:
    """Two kubelets each sending a ~3 MiB body at the same time against a 4 MiB pool (256 KiB
    free per scrape): one body cannot be held and that node alone fails this tick; a small
    body never needs the pool; the pool is never overdrawn and is returned after the tick."""

    async def main() -> None:
        ca = CA(tmp_path)
        async with kubelets(ca, "slowbig", "slowbig", "ok") as fleet:
            targets = {k.name: k.target() for k in fleet}
            store = RecordingStore()
            settings = replace(fast(), body_pool_bytes=4 << 20, body_allowance_bytes=256 << 10)
            scraper = Scraper(targets, store, kubelet_settings(creds_for(ca)), settings)
            await scraper.tick()
            await scraper.close()
            budget = scraper.body_budget
            failed = {n: m for n, m in scraper.failing.items()}
            assert len(failed) == 1, failed
            assert "budget for kubelet bodies in flight" in next(iter(failed.values()))
            assert fleet[2].name not in failed
            ingested = {n for n, _, _ in store.ingested}
            assert ingested == {k.name for k in fleet} - set(failed)
            assert budget.refused >= 1 and budget.peak <= budget.pool
            assert budget.in_use == 0

    run(main())
