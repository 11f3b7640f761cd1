"""One scrape tick (SPEC §2): GET each node's kubelet /metrics/resource, into the store.

The loop that runs a tick every resolution is the scrape cycle (``kubemetrics.cycle``).
Inside a tick each node is fetched after a
random stagger of up to min(8 ms × nodes, 4 s), under its own timeout, with no retry, at most
``max_concurrency`` at a time. Response bodies go as bytes into ``Store.ingest`` (Rust parses
and stores them), so no per-container Python object is ever built. One aiohttp session with
keep-alive longer than the resolution is reused across ticks, so a steady cluster costs no TLS
handshakes after the first tick; its TLS layer is ``scrape.transport`` (small idle connections).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import aiohttp

from kubemetrics.budget import ByteBudget, Holding
from kubemetrics.config import ConfigError
from kubemetrics.kube.client import ClusterCredentials, TokenSource, make_ssl_context
from kubemetrics.kube.discovery import NodeTarget
from kubemetrics.logs import StateLog, kv
from kubemetrics.scrape.transport import KubeletConnector
from kubemetrics.selfmetrics import MetricWriter

log = logging.getLogger("kubemetrics.scraper")

DEFAULT_MAX_BODY_BYTES = 16 << 20
# Kubelet bodies in flight (read, not yet ingested) across concurrent scrapes: each scrape may
# hold this much on its own (a 250-pod node with 2 containers each sends ~210 KiB) and borrow
# beyond it from one shared pool, so the most they hold is max_concurrency x allowance + pool
# (64 MiB by default) instead of max_concurrency x DEFAULT_MAX_BODY_BYTES (2 GiB).
BODY_ALLOWANCE_BYTES = 256 << 10
BODY_POOL_BYTES = 32 << 20


class Ingestor(Protocol):
    """The part of ``kubemetrics._native.Store`` the scraper feeds."""

    def ingest(self, node: str, data: bytes, request_time_ms: int) -> None: ...


class ScrapeObserver(Protocol):
    """Self-metrics hook (implemented by selfmetrics.py). Called on the event loop; keep cheap."""

    def on_request(self, node: str, seconds: float, success: bool, started_at: float) -> None:
        """One kubelet request finished; ``started_at`` is its wall-clock start (Unix seconds)."""
        ...


class NullObserver:
    def on_request(self, node: str, seconds: float, success: bool, started_at: float) -> None:
        pass


@dataclass(frozen=True)
class KubeletClientSettings:
    """How to talk to kubelets. Build it with :func:`kubelet_settings` from the flags."""

    scheme: Literal["https", "http"] = "https"
    ca_file: str | None = None
    ca_pem: str | None = None
    insecure_skip_verify: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    token: TokenSource | None = None
    request_timeout: float = 10.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    connections_per_host: int = 2

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.scheme == "http":
            return None
        return make_ssl_context(
            ca_file=self.ca_file,
            ca_pem=None if self.ca_file else self.ca_pem,
            cert_file=self.client_cert_file,
            key_file=self.client_key_file,
            cert_pem=None if self.client_cert_file else self.client_cert_pem,
            key_pem=None if self.client_cert_file else self.client_key_pem,
            verify=not self.insecure_skip_verify,
        )


def kubelet_settings(
    creds: ClusterCredentials | None,
    *,
    certificate_authority: str | None = None,
    certificate_authority_pem: str | None = None,
    insecure_tls: bool = False,
    client_certificate: str | None = None,
    client_key: str | None = None,
    completely_insecure: bool = False,
    request_timeout: float = 10.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> KubeletClientSettings:
    """Map the ``--kubelet-*`` flags onto settings the way upstream does.

    By default the kubelet client inherits the API-server credentials (CA, client pair, bearer
    token); ``--kubelet-certificate-authority`` (a file, or PEM text) replaces the CA,
    ``--kubelet-insecure-tls`` skips verification (still authenticating),
    ``--kubelet-client-certificate/-key`` replace the client pair, and
    ``--deprecated-kubelet-completely-insecure`` is plain HTTP with no credentials.
    """
    if bool(client_certificate) != bool(client_key):
        raise ConfigError(
            "--kubelet-client-certificate and --kubelet-client-key must be given together"
        )
    own_ca = bool(certificate_authority or certificate_authority_pem)
    if insecure_tls and own_ca:
        raise ConfigError(
            "--kubelet-insecure-tls and --kubelet-certificate-authority cannot be used together"
        )
    if completely_insecure:
        if insecure_tls or own_ca or client_certificate:
            raise ConfigError(
                "--deprecated-kubelet-completely-insecure cannot be combined with "
                "--kubelet-insecure-tls, --kubelet-certificate-authority or a client certificate"
            )
        return KubeletClientSettings(
            scheme="http", request_timeout=request_timeout, max_body_bytes=max_body_bytes
        )
    return KubeletClientSettings(
        scheme="https",
        ca_file=certificate_authority or None,
        ca_pem=certificate_authority_pem
        or (None if certificate_authority or creds is None else creds.ca_pem),
        insecure_skip_verify=insecure_tls,
        client_cert_file=client_certificate or None,
        client_key_file=client_key or None,
        client_cert_pem=None if client_certificate or creds is None else creds.cert_pem,
        client_key_pem=None if client_certificate or creds is None else creds.key_pem,
        token=None if creds is None else creds.token,
        request_timeout=request_timeout,
        max_body_bytes=max_body_bytes,
    )


@dataclass(frozen=True)
class ScrapeSettings:
    resolution: float = 60.0
    user_agent: str = "kubemetrics"  # sharded replicas add their name: kubelet logs tell them apart
    max_concurrency: int = 128
    stagger_per_node: float = 0.008
    max_stagger: float = 4.0
    body_allowance_bytes: int = BODY_ALLOWANCE_BYTES
    body_pool_bytes: int = BODY_POOL_BYTES


class _ScrapeFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Scraper:
    """Scrapes every node of ``targets``, the live node table (``Discovery.targets``), per tick."""

    def __init__(
        self,
        targets: Mapping[str, NodeTarget],
        store: Ingestor,
        kubelet: KubeletClientSettings,
        settings: ScrapeSettings,
        observer: ScrapeObserver | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._targets = targets
        self._store = store
        self._k = kubelet
        self._s = settings
        self._observer: ScrapeObserver = observer or NullObserver()
        self._rng = rng or random.Random()
        self._ssl = kubelet.ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self.body_budget = ByteBudget(settings.body_pool_bytes, settings.body_allowance_bytes)
        # node -> reason, for nodes whose last scrape failed.
        self.failing: dict[str, str] = {}
        # One log line per change of a node's state, not one per tick.
        self._states = StateLog(log)
        self.last_tick_started: float | None = None  # time.monotonic() at the start of a tick
        self.ticks = 0

    def seconds_since_last_tick(self) -> float | None:
        """For the liveness check (metric-collection-timely)."""
        if self.last_tick_started is None:
            return None
        return time.monotonic() - self.last_tick_started

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = KubeletConnector(
                ssl=self._ssl if self._ssl is not None else False,
                limit=self._s.max_concurrency * 2,
                limit_per_host=self._k.connections_per_host,
                # Idle connections must outlive the gap between two ticks.
                keepalive_timeout=max(2.0 * self._s.resolution + 10.0, 30.0),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": self._s.user_agent},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def tick(self, only: Sequence[NodeTarget] | None = None) -> None:
        """Scrape every node once, or the nodes `only` names (this replica's shard), returning
        when all finished or timed out."""
        self.last_tick_started = time.monotonic()
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._s.max_concurrency)
        targets = list(self._targets.values()) if only is None else list(only)
        # aiohttp asks for gzip, as Go's client does for upstream: kubelets compress ~6x, which
        # matters on the cluster network at thousands of nodes; inflating costs ~8% of a cycle.
        headers = {"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1"}
        if self._k.token is not None and self._k.scheme == "https":
            try:
                auth = await self._k.token.authorization()
            except ConfigError as exc:
                # No credential was ever readable: every kubelet would refuse us. Fail this tick
                # for every node (logged once per state change) and try again on the next.
                for target in targets:
                    self._record(target.name, 0.0, ("no-credentials", str(exc)), time.time())
                self.ticks += 1
                return
            if auth:
                headers["Authorization"] = auth
        max_delay = min(self._s.stagger_per_node * len(targets), self._s.max_stagger)
        session = self._get_session()
        async with asyncio.TaskGroup() as tg:
            for target in targets:
                delay = self._rng.uniform(0.0, max_delay) if max_delay > 0 else 0.0
                tg.create_task(self._scrape(session, target, delay, headers))
        self.ticks += 1

    def collect(self, w: MetricWriter) -> None:
        """The body budget, for /metrics."""
        name = "kubemetrics_kubelet_body_budget_refused_total"
        w.header(name, "Kubelet responses failed for want of room in the body budget.", "counter")
        w.sample(name, [], self.body_budget.refused)

    def forget(self, node: str) -> None:
        """The node left the cluster, or this replica's shard: drop its failure state (and its
        state-log entry)."""
        self.failing.pop(node, None)
        self._states.forget(node)

    async def _scrape(
        self,
        session: aiohttp.ClientSession,
        target: NodeTarget,
        delay: float,
        headers: dict[str, str],
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if target.error is not None:
            self._record(target.name, 0.0, ("no-address", target.error), time.time())
            return
        assert self._sem is not None
        async with self._sem:
            started = time.monotonic()
            wall = time.time()
            error: tuple[str, str] | None = None
            held = self.body_budget.holding()
            try:
                body = await self._fetch(session, target, headers, held)
                # The time just before sending stamps samples that carry no timestamp.
                self._store.ingest(target.name, body, int(wall * 1000))
            except _ScrapeFailed as exc:
                error = (exc.kind, str(exc))
            except TimeoutError:
                error = ("timeout", f"request timed out after {self._k.request_timeout:g}s")
            except (aiohttp.ClientError, OSError) as exc:
                error = ("unreachable", f"{type(exc).__name__}: {exc}".rstrip(": "))
            except ValueError as exc:  # ParseError from the store: bad payload, node unchanged
                error = ("invalid-metrics", f"invalid metrics: {exc}")
            except Exception as exc:  # a bug must not take the other nodes down
                log.exception("Unexpected error scraping node", extra=kv(node=target.name))
                error = ("error", f"{type(exc).__name__}: {exc}")
            finally:
                held.release()
            self._record(target.name, time.monotonic() - started, error, wall)

    async def _fetch(
        self,
        session: aiohttp.ClientSession,
        target: NodeTarget,
        headers: dict[str, str],
        held: Holding,
    ) -> bytes:
        url = f"{self._k.scheme}://{target.hostport}{target.path}"
        limit = self._k.max_body_bytes
        async with (
            asyncio.timeout(self._k.request_timeout),
            session.get(url, headers=headers, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                if resp.status == 401 and self._k.token is not None:
                    self._k.token.invalidate()  # re-read a rotated token next tick
                raise _ScrapeFailed(
                    f"http-{resp.status}", f'request failed, status: "{resp.status} {resp.reason}"'
                )
            if resp.content_length is not None and resp.content_length > limit:
                raise _ScrapeFailed(
                    "too-large", f"response too large: {resp.content_length} bytes (limit {limit})"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _ScrapeFailed("too-large", f"response too large: over {limit} bytes")
                if not held.grow(len(chunk)):
                    raise _ScrapeFailed(
                        "body-budget",
                        f"response of over {size} bytes does not fit the budget for kubelet "
                        "bodies in flight (other nodes' bodies hold it)",
                    )
                chunks.append(chunk)
        return b"".join(chunks)

    def _record(
        self, node: str, seconds: float, error: tuple[str, str] | None, started_at: float
    ) -> None:
        self._observer.on_request(node, seconds, error is None, started_at)
        if error is None:
            if self.failing.pop(node, None) is not None:
                self._states.ok(node, "Scraping node works again", node=node)
            return
        kind, message = error
        self.failing[node] = message
        self._states.bad(node, kind, "Failed to scrape node", node=node, err=message)
