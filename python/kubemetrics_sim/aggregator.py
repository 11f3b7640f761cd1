"""The metrics.k8s.io APIService behind a Service with several endpoints, as a cluster runs it.

Three parts of a cluster, each doing what the real one does:

- **endpoints** (the kubelet's probes and the EndpointSlice controller): every endpoint of the
  backend is probed each `probe_period`; a refused connection means the process is gone and the
  endpoint is not ready at once (a kubelet sees its container die), a readiness path that fails
  `failure_threshold` times in a row makes it not ready, one success makes it ready again. The
  state is written as `discovery.k8s.io/v1` EndpointSlices of the Service (one slice per port),
  readable and watchable through the API.
- **the aggregator's proxy** (kube-apiserver's `proxyHandler`): each request goes to one ready
  endpoint chosen at random from the EndpointSlices, over HTTPS with the front-proxy client
  certificate and `X-Remote-User`/`X-Remote-Group`; an endpoint that is gone from the slices gets
  nothing more, one that died but is still listed gets a 503 for that request, as with
  kube-apiserver between a pod's death and its endpoint's removal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from .cluster import Backend, Cluster
from .errors import ApiError
from .gofmt import rfc3339
from .rbac import UserInfo
from .store import DictObj

log = logging.getLogger("kubemetrics_sim.aggregator")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice-controller.k8s.io"


@dataclass
class Endpoint:
    url: str
    host: str
    port: int
    ready: bool
    failures: int = 0  # consecutive failed readiness probes
    probes: int = 0
    transitions: list[tuple[float, bool]] = field(default_factory=list)  # (time, ready)

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "ready": self.ready,
            "failures": self.failures,
            "probes": self.probes,
            "transitions": [[t, r] for t, r in self.transitions],
        }


def _endpoint(url: str, ready: bool) -> Endpoint:
    u = urlsplit(url)
    if u.scheme != "https" or not u.hostname or not u.port:
        raise ValueError(f"endpoint {url!r}: want https://HOST:PORT")
    return Endpoint(url.rstrip("/"), u.hostname, u.port, ready)


class Aggregator:
    """The backend's endpoints (probed, published as EndpointSlices) and the proxy over them."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.session: aiohttp.ClientSession | None = None
        self.endpoints: dict[str, Endpoint] = {}
        self.sent: dict[str, int] = {}  # requests proxied, by endpoint URL
        self._prober: asyncio.Task[None] | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        cluster.on_backend_changed.append(self._backend_changed)

    # --- endpoints -------------------------------------------------------------------------
    def _backend_changed(self) -> None:
        old = self.session
        self.session = None
        if old is not None:
            asyncio.get_running_loop().create_task(old.close())
        b = self.cluster.backend
        known = self.endpoints
        self.endpoints = {}
        if b is not None:
            for url in b.urls:
                ep = _endpoint(url, ready=not b.readiness_path)
                before = known.get(ep.url)
                if before is not None:  # the same pod: keep what its probes found
                    ep = before
                self.endpoints[ep.url] = ep
        self._sync_slices()
        if self._prober is not None:
            self._prober.cancel()
            self._prober = None
        if b is not None:
            self._prober = asyncio.get_running_loop().create_task(self._probe_loop(b))

    def _slices(self, b: Backend) -> dict[str, dict[str, Any]]:
        """slice name → body, one slice per port (as the controller groups endpoints)."""
        _, svc = b.service.split("/", 1)
        by_port: dict[int, list[Endpoint]] = {}
        for ep in self.endpoints.values():
            by_port.setdefault(ep.port, []).append(ep)
        out: dict[str, dict[str, Any]] = {}
        for port, eps in sorted(by_port.items()):
            suffix = hashlib.sha256(f"{b.service}:{port}".encode()).hexdigest()[:5]
            out[f"{svc}-{suffix}"] = {
                "addressType": "IPv6" if ":" in eps[0].host else "IPv4",
                "endpoints": [
                    {
                        "addresses": [ep.host],
                        "conditions": {
                            "ready": ep.ready,
                            "serving": ep.ready,
                            "terminating": False,
                        },
                    }
                    for ep in eps
                ],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
            }
        return out

    def _sync_slices(self) -> None:
        store = self.cluster.store
        b = self.cluster.backend
        want = self._slices(b) if b is not None else {}
        ns, svc = b.service.split("/", 1) if b is not None else ("", "")
        for o in list(store.objects["endpointslices"].values()):
            assert isinstance(o, DictObj)
            if o.labels.get("endpointslice.kubernetes.io/managed-by") != MANAGED_BY:
                continue
            body = want.pop(o.name, None) if o.namespace == ns else None
            if body is None:
                store.delete(o)
            elif body != o.body:
                old = store.snapshot_old(o)
                o.body = body
                store.modified(o, old)
        for name, body in want.items():
            store.add(
                DictObj(
                    "endpointslices",
                    "EndpointSlice",
                    ns,
                    name,
                    body,
                    rfc3339(time.time()),
                    f"eps-{name}",
                    {SERVICE_NAME_LABEL: svc, "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
                    api_version="discovery.k8s.io/v1",
                )
            )

    async def _probe_loop(self, b: Backend) -> None:
        timeout = aiohttp.ClientTimeout(total=max(min(b.probe_period, 1.0), 0.2))
        if self._probe_session is None:
            # httpGet probes skip certificate verification, as the kubelet's do.
            self._probe_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=False, force_close=True)
            )
        session = self._probe_session
        while True:
            eps = list(self.endpoints.values())
            results = await asyncio.gather(*(self._probe(session, b, ep, timeout) for ep in eps))
            changed = False
            for ep, (alive, ok) in zip(eps, results, strict=True):
                ep.probes += 1
                if not alive:
                    ep.failures += 1
                    ready = False  # the process is gone: not ready at once
                elif ok:
                    ep.failures = 0
                    ready = True
                else:
                    ep.failures += 1
                    ready = ep.ready and ep.failures < b.failure_threshold
                if ready != ep.ready:
                    ep.ready = ready
                    ep.transitions.append((time.time(), ready))
                    log.info("endpoint %s ready=%s", ep.url, ready)
                    changed = True
            if changed:
                self._sync_slices()
            await asyncio.sleep(b.probe_period)

    async def _probe(
        self, session: aiohttp.ClientSession, b: Backend, ep: Endpoint, t: aiohttp.ClientTimeout
    ) -> tuple[bool, bool]:
        """(alive, ready): alive = something accepts connections on the endpoint."""
        try:
            async with asyncio.timeout(t.total):
                _, w = await asyncio.open_connection(ep.host, ep.port)
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
        except (OSError, TimeoutError):
            return False, False
        if not b.readiness_path:
            return True, True
        try:
            async with session.get(ep.url + b.readiness_path, timeout=t) as r:
                await r.read()
                return True, 200 <= r.status < 400
        except (aiohttp.ClientError, OSError, TimeoutError):
            return True, False

    def ready_urls(self) -> list[str]:
        """What the aggregator may send to: the ready endpoints of the Service's slices."""
        b = self.cluster.backend
        if b is None:
            return []
        ns, svc = b.service.split("/", 1)
        urls = []
        for o in self.cluster.store.objects["endpointslices"].values():
            if o.namespace != ns or o.labels.get(SERVICE_NAME_LABEL) != svc:
                continue
            assert isinstance(o, DictObj)
            ports = o.body.get("ports") or []
            if not ports:
                continue
            port = ports[0]["port"]
            for e in o.body.get("endpoints") or []:
                if (e.get("conditions") or {}).get("ready") is False:
                    continue
                for addr in e.get("addresses") or []:
                    host = f"[{addr}]" if ":" in addr else addr
                    urls.append(f"https://{host}:{port}")
        return urls

    def describe(self) -> dict[str, Any] | None:
        b = self.cluster.backend
        if b is None:
            return None
        return {
            **b.to_dict(),
            "endpoint_states": [ep.to_dict() for ep in self.endpoints.values()],
            "ready": self.ready_urls(),
            "sent": dict(self.sent),
        }

    async def stop(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        for s in (self.session, self._probe_session):
            if s is not None:
                await s.close()

    # --- the proxy -------------------------------------------------------------------------
    def _session(self, b: Backend) -> aiohttp.ClientSession:
        if self.session is None:
            p = self.cluster.files.paths
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if b.insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx.load_verify_locations(cadata=(b.ca_pem or self.cluster.ca.cert_pem).decode())
            # The front-proxy client certificate is what the backend trusts X-Remote-* for.
            ctx.load_cert_chain(p["front_proxy_client_cert"], p["front_proxy_client_key"])
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=ctx, limit=100),
                timeout=aiohttp.ClientTimeout(total=self.cluster.cfg.aggregator_timeout),
                auto_decompress=False,
            )
        return self.session

    async def proxy(self, request: web.Request, user: UserInfo) -> web.StreamResponse:
        b = self.cluster.backend
        if b is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        urls = self.ready_urls()
        if not urls:
            svc = b.service.split("/", 1)[1]
            raise ApiError(
                503,
                "ServiceUnavailable",
                f'error trying to reach service: no endpoints available for service "{svc}"',
            )
        target = random.choice(urls)
        self.sent[target] = self.sent.get(target, 0) + 1
        headers: dict[str, Any] = {}
        for k, v in request.headers.items():
            lk = k.lower()
            # Client-supplied identity headers are dropped: only the proxy may assert them.
            if lk.startswith("x-remote-") or lk in (
                "authorization",
                "host",
                "connection",
                "content-length",
                "transfer-encoding",
            ):
                continue
            headers[k] = v
        out = CIMultiDict(headers)
        out["X-Remote-User"] = user.name
        for g in user.groups:
            out.add("X-Remote-Group", g)
        try:
            body = await request.read()
            async with self._session(b).request(
                request.method, target + request.path_qs, headers=out, data=body or None
            ) as r:
                data = await r.read()
                resp_headers = {
                    k: v
                    for k, v in r.headers.items()
                    if k.lower()
                    in ("content-type", "content-encoding", "cache-control", "warning", "audit-id")
                }
                return web.Response(status=r.status, body=data, headers=resp_headers)
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as e:
            raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: {e}") from e
