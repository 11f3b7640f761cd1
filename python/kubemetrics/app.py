"""Wiring only: a validated `Config` → a running server.

    credentials ─▶ ApiClient ─▶ Discovery (node + pod reflectors) ─▶ Inventory, node table
    Cycle (cycle.py), once per resolution: Scraper tick → Store.ingest → forget what discovery
      removed → Store.snapshot → warm → publish to the API → trim memory
    SelfMetrics observes the scraper and the cycle; health checks read discovery, the
    published snapshot and the loop.
    --sharding=lease: Membership (Leases) + PeerClient → Sharding, used by the cycle; the API
      serves this replica's points to its peers.

The HTTPS listener comes up first (so probes get answers while the caches fill); the scrape
loop starts once the node list is synced, so its first tick already sees every node. On SIGTERM
or SIGINT `/readyz` fails first (`shutdown`), then the scraper, the reflectors, the HTTP
sessions and the listener stop, in that order; a sharded replica deletes its Lease before all
that, so its peers take its nodes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import ssl
from dataclasses import dataclass

import uvloop
from aiohttp import web

from kubemetrics import _native
from kubemetrics.api.limits import InflightLimit
from kubemetrics.api.routes import ApiDependencies, build_app
from kubemetrics.auth import AuthConfigError, Security, TLSConfigError, start_security
from kubemetrics.auth.certs import ca_bundle, ensure_self_signed
from kubemetrics.config import Config, ConfigError
from kubemetrics.cycle import Cycle
from kubemetrics.health import HealthChecks, ShutdownCheck, close_checks, standard_checks
from kubemetrics.kube.client import ApiClient, load_credentials
from kubemetrics.kube.discovery import Discovery, DiscoverySettings
from kubemetrics.listener import Listener, ListenerLimits, ListenerStats, bracket
from kubemetrics.logs import kv
from kubemetrics.scrape.scraper import Scraper, ScrapeSettings, kubelet_settings
from kubemetrics.selfmetrics import SelfMetrics
from kubemetrics.shard.lease import Identity, Membership, cert_fingerprint, host_port
from kubemetrics.shard.peers import PeerClient, PeerSettings
from kubemetrics.shard.sharding import Sharding

log = logging.getLogger("kubemetrics.app")

# How long in-flight requests may take to finish once the listener stops accepting.
SHUTDOWN_GRACE_SECONDS = 5.0
# Descriptors kept for everything but client connections (kubelets, the API server, files)
# when checking --max-connections against the process limit.
_FD_RESERVE = 1024


class StartupError(Exception):
    """The server cannot start; the message says why (one line, no traceback needed)."""


# --- the server ---------------------------------------------------------------------------------


@dataclass
class _Parts:
    client: ApiClient
    discovery: Discovery
    scraper: Scraper
    cycle: Cycle
    health: HealthChecks
    runner: web.AppRunner
    sharding: Sharding | None


def peer_timeout(resolution: float) -> float:
    """How long one fetch of a peer's points may take: a quarter of the resolution, within
    [0.5 s, 5 s], so that a dead or slow peer delays a cycle by little."""
    return min(max(resolution / 4, 0.5), 5.0)


class Server:
    """All the pieces, started and stopped in order. `start()` then `wait()`, then `stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.shutdown = ShutdownCheck()
        self.address: tuple[str, int] | None = None  # the bound (host, port)
        self._parts: _Parts | None = None
        self._client: ApiClient | None = None
        self._runner: web.AppRunner | None = None
        self._listener: Listener | None = None
        self._security: Security | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._membership: Membership | None = None
        self._cert_file = ""  # the serving certificate peers pin (--sharding=lease)

    async def start(self) -> None:
        c = self.config
        try:
            creds = await load_credentials(c.kubeconfig)
        except ConfigError as e:
            raise StartupError(f"cannot load API-server credentials: {e}") from e
        log.info("Using API server", extra=kv(server=creds.server, source=creds.source))
        try:
            kubelet = kubelet_settings(
                creds,
                certificate_authority=c.kubelet.certificate_authority,
                certificate_authority_pem=c.kubelet.certificate_authority_text,
                insecure_tls=c.kubelet.insecure_tls,
                client_certificate=c.kubelet.client_certificate,
                client_key=c.kubelet.client_key,
                completely_insecure=c.kubelet.completely_insecure,
                request_timeout=c.kubelet.request_timeout,
            )
            kubelet.ssl_context()  # fail now on an unreadable CA or client pair
        except ConfigError as e:
            raise StartupError(f"kubelet client: {e}") from e

        client = self._client = ApiClient(creds)
        try:
            security = self._security = await start_security(c, client)
        except AuthConfigError as e:
            raise StartupError(f"delegated authentication: {e}") from e
        store = _native.Store(c.metric_resolution)
        inventory = _native.Inventory()
        discovery = Discovery(
            client,
            inventory,
            DiscoverySettings(
                address_types=c.kubelet.preferred_address_types,
                kubelet_port=c.kubelet.port,
                use_node_status_port=c.kubelet.use_node_status_port,
                node_selector=c.kubelet.node_selector,
            ),
        )
        metrics = SelfMetrics(c.metric_resolution)
        sh = c.sharding
        scraper = Scraper(
            discovery.targets,
            store,
            kubelet,
            ScrapeSettings(
                resolution=c.metric_resolution,
                user_agent=f"kubemetrics (shard {sh.pod_name})" if sh.enabled else "kubemetrics",
            ),
            metrics,
        )
        metrics.sources.append(scraper.collect)
        sharding = None
        if sh.enabled:
            self._membership = Membership(client, sh, self._identity)
            peers = PeerClient(
                creds.token,
                PeerSettings(
                    timeout=peer_timeout(c.metric_resolution),
                    keepalive=max(2.0 * c.metric_resolution + 10.0, 30.0),
                    user_agent=f"kubemetrics (shard {sh.pod_name})",
                ),
            )
            sharding = Sharding(
                self._membership,
                peers,
                store,
                metrics,
                discovery.targets,
                # one fetch's time, and as long again for the imports and fetches queued
                exchange_timeout=2 * peer_timeout(c.metric_resolution),
            )
            if creds.token.current() is None:
                log.warning(
                    "--sharding=lease: the credentials carry no bearer token, which is what "
                    "peers authenticate each other with; the exchange will be refused"
                )
        cycle = Cycle(
            scraper,
            store,
            discovery,
            metrics,
            c.metric_resolution,
            inventory=inventory,
            sharding=sharding,
        )
        health = standard_checks(
            informers_synced=lambda: discovery.has_synced,
            storage_ready=lambda: cycle.current().ready,
            last_tick_start=lambda: scraper.last_tick_started,
            resolution_seconds=c.metric_resolution,
            shutdown=self.shutdown,
        )
        inflight = InflightLimit(c.serving.max_requests_inflight)
        metrics.sources.append(inflight.collect)
        metrics.sources.append(security.collect)
        app = build_app(
            ApiDependencies(
                snapshot=cycle.current,
                inventory=inventory,
                health=health,
                metrics=metrics,
                authenticator=security.authenticator,
                admission=inflight,
                authorizer=security.authorizer,
                response_deadline=c.serving.request_timeout,
                peer_points=(lambda: sharding.points) if sharding is not None else None,
            )
        )
        # The listener's bracket goes outermost: it tells each connection its request is done.
        app.middlewares.insert(0, bracket)
        s = c.serving
        limits = ListenerLimits.from_config(s)
        runner = self._runner = web.AppRunner(
            app,
            handle_signals=False,
            shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
            **limits.runner_options(),
        )
        ctx = await self._tls()
        await runner.setup()
        assert runner.server is not None
        _check_descriptors(s.max_connections)
        stats = ListenerStats()
        metrics.sources.append(stats.collect)
        listener = self._listener = Listener(runner.server, ctx, limits, stats)
        try:
            await listener.start(
                s.bind_address, s.secure_port, backlog=1024, reuse_port=s.permit_port_sharing
            )
        except OSError as e:
            raise StartupError(
                f"cannot listen on {_hostport(s.bind_address, s.secure_port)}: {e.strerror or e}"
            ) from e
        self.address = listener.addresses[0]
        log.info("Serving securely", extra=kv(address=_hostport(self.address[0], self.address[1])))
        self._parts = _Parts(client, discovery, scraper, cycle, health, runner, sharding)
        self._tasks.append(asyncio.create_task(discovery.run(), name="discovery"))
        if self._membership is not None:
            # Only now is the port known that peers are told to use.
            self._tasks.append(asyncio.create_task(self._membership.run(), name="membership"))
        self._tasks.append(asyncio.create_task(self._scrape_when_synced(), name="scraper"))

    async def _identity(self) -> Identity:
        """What this replica's Lease tells its peers: where it listens, which certificate."""
        assert self.address is not None
        sh = self.config.sharding
        try:
            fingerprint = await asyncio.to_thread(cert_fingerprint, self._cert_file)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the serving certificate {self._cert_file}: {e}") from e
        return Identity(host_port(sh.pod_ip, self.address[1]), fingerprint)

    async def _tls(self) -> ssl.SSLContext:
        s = self.config.serving
        if s.tls_cert_file is not None and s.tls_private_key_file is not None:
            self._cert_file = s.tls_cert_file
            return await self._serving_tls(s.tls_cert_file, s.tls_private_key_file)
        try:
            cert, key, created = await asyncio.to_thread(ensure_self_signed, s)
        except TLSConfigError as e:
            raise StartupError(str(e)) from e
        self._cert_file = cert
        ctx = await self._serving_tls(cert, key)
        try:
            bundle = await asyncio.to_thread(ca_bundle, cert)
        except (OSError, ValueError):
            bundle = ""
        log.info(
            "Generated a self-signed serving certificate"
            if created
            else "Using the self-signed serving certificate found in --cert-dir",
            extra=kv(cert=cert, key=key),
        )
        if bundle:
            # The standard APIService skips verification; to verify, give it this CA.
            log.info(
                "To let kube-apiserver verify this server, set the APIService's "
                "spec.caBundle (and insecureSkipTLSVerify: false) to the CA below; the "
                "certificate names only localhost/127.0.0.1, so prefer --tls-cert-file with a "
                "certificate for <service>.<namespace>.svc in a cluster",
                extra=kv(caBundle=bundle),
            )
        if s.sni_cert_keys:
            log.warning("--tls-sni-cert-key is not supported yet; serving the default pair only")
        return ctx

    async def _serving_tls(self, cert: str, key: str) -> ssl.SSLContext:
        # Reloaded when the files or the client CAs change (auth.tls).
        assert self._security is not None
        try:
            return await self._security.serving_tls(self.config, cert, key).start()
        except (TLSConfigError, OSError) as e:
            raise StartupError(str(e)) from e

    async def _scrape_when_synced(self) -> None:
        assert self._parts is not None
        d = self._parts.discovery
        # Wait for the node list so the first tick already scrapes every node (and, sharded,
        # for the members' Leases, so that it scrapes only this replica's share).
        await d.node_reflector.wait_synced()
        if self._membership is not None:
            try:
                # Bounded: without Lease rights (or Leases) a replica still scrapes, alone.
                async with asyncio.timeout(self.config.sharding.lease_duration):
                    await self._membership.wait_synced()
            except TimeoutError:
                log.warning(
                    "The shard Leases could not be listed; scraping as if alone until they can"
                )
        log.info(
            "Starting the scrape loop",
            extra=kv(nodes=len(d.targets), resolution=f"{self.config.metric_resolution:g}s"),
        )
        await self._parts.cycle.run()

    async def wait(self, stop: asyncio.Event) -> int:
        """Until `stop` is set (0) or a background task dies (1)."""
        stopper = asyncio.create_task(stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait(
                [stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopper.cancel()
        for task in done:
            if task is stopper:
                continue
            exc = task.exception() if not task.cancelled() else None
            log.error(
                "Background task %s stopped unexpectedly",
                task.get_name(),
                exc_info=exc,
            )
            return 1
        return 0

    async def stop(self) -> None:
        """The shard Lease goes first (peers take this replica's nodes at their next cycle),
        then readyz fails, then scraper, reflectors, sessions, listener."""
        if self._membership is not None:
            await self._membership.release()
        self.shutdown.begin()
        log.info("Shutting down")
        for task in reversed(self._tasks):  # scraper first, then discovery
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._parts is not None:
            await self._parts.scraper.close()
            if self._parts.sharding is not None:
                await self._parts.sharding.close()
        if self._security is not None:
            await self._security.close()
        if self._client is not None:
            await self._client.close()
        if self._listener is not None:
            await self._listener.close(SHUTDOWN_GRACE_SECONDS)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._parts is not None:
            await close_checks(self._parts.health)
        log.info("Stopped")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_descriptors(max_connections: int) -> None:
    """Raise the descriptor limit to its hard maximum, as Go programs do at start, and warn
    when --max-connections would leave too few for the kubelets and the API server."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft != resource.RLIM_INFINITY and max_connections + _FD_RESERVE > soft:
        log.warning(
            "--max-connections leaves fewer than %d file descriptors for kubelet and API-server "
            "connections; past that, new client connections wait in the backlog",
            _FD_RESERVE,
            extra=kv(max_connections=max_connections, descriptor_limit=soft),
        )


async def serve(config: Config, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or `stop`); the process exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = Server(config)
    try:
        # Start-up may wait on the API server (credentials, the authentication ConfigMap):
        # a signal meanwhile stops it rather than waiting for it.
        starting = asyncio.create_task(server.start(), name="start")
        stopping = asyncio.create_task(stop.wait(), name="stop")
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not starting.done():
            log.info("Stop requested during start-up")
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartupError):
                await starting
            return 0
        try:
            starting.result()
        except StartupError as e:
            log.error("%s", e)
            return 1
        return await server.wait(stop)
    finally:
        await server.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(config: Config) -> int:
    """The `kubemetrics` command after flag parsing: serve on uvloop until stopped."""
    return uvloop.run(serve(config))
