"""The kubelet fleet: one HTTPS listener per node address, all served by one aiohttp server.

Each node listens on its own 127.0.x.y with a certificate for that address from the cluster CA.
``GET /metrics/resource`` needs a bearer token (or client certificate) that may
``get nodes/metrics``; answers are cached like the kubelet's webhook authenticator does.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
import zlib
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.web_server import Server

from .cluster import Cluster
from .model import Node, mix
from .rbac import Attributes, UserInfo

if TYPE_CHECKING:
    from .attach import RemoteAuth

log = logging.getLogger("kubemetrics_sim.kubelet")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
AUTH_TTL = 10.0


def user_from_cert(peercert: object) -> UserInfo | None:
    """CN = user, O = groups, from ssl's decoded peer certificate."""
    if not isinstance(peercert, dict):
        return None
    cn, groups = "", []
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationName":
                groups.append(v)
    if not cn:
        return None
    return UserInfo(cn, (*groups, "system:authenticated"))


def accepts_gzip(header: str) -> bool:
    """promhttp's test: one comma-separated part is ``gzip`` or starts ``gzip;``."""
    return any(p.strip() == "gzip" or p.strip().startswith("gzip;") for p in header.split(","))


def gzip_if_accepted(accept_encoding: str, resp: web.StreamResponse) -> web.StreamResponse:
    """Real kubelets serve /metrics/resource through promhttp, which gzips when asked."""
    if (
        not isinstance(resp, web.Response)
        or resp.status != 200
        or not isinstance(resp.body, bytes)
        or not accepts_gzip(accept_encoding)
    ):
        return resp
    z = zlib.compressobj(1, zlib.DEFLATED, 31)  # level 1: cheap; 31 = gzip framing
    body = z.compress(resp.body) + z.flush()
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE, "Content-Encoding": "gzip"}
    )


class Fleet:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.servers: dict[str, asyncio.Server] = {}
        self.contexts: dict[str, ssl.SSLContext] = {}
        self.handler = Server(self.handle, handler_cancellation=True, access_log=None)
        self.auth_cache: dict[tuple[str, str, int], tuple[float, int, str]] = {}
        self.requests = 0
        # node → User-Agent → metrics requests served: who scraped which kubelet how often.
        self.served_by_agent: dict[str, dict[str, int]] = {}
        self.pending: set[asyncio.Task[None]] = set()
        # Attached to a real API server: authn/authz by TokenReview/SubjectAccessReview there.
        self.remote_auth: RemoteAuth | None = None
        cluster.listener_hooks.append(self._sync_listener)

    # --- listeners -------------------------------------------------------------------------
    def _context(self, node: Node) -> ssl.SSLContext:
        ctx = self.contexts.get(node.name)
        if ctx is None:
            cert = self.cluster.kubelet_cert(node)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(cert), self.cluster.files.paths["kubelet_key"])
            # Client certificates from the cluster CA are accepted, as by a real kubelet.
            ctx.verify_mode = ssl.CERT_OPTIONAL
            ctx.load_verify_locations(cadata=self.cluster.ca.cert_pem.decode())
            self.contexts[node.name] = ctx
        return ctx

    def _bind(self, ip: str, port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            s.listen(512)
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        return s

    def choose_port(self, first_ip: str) -> int:
        """One free port for all node addresses (each address is its own socket)."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((first_ip, 0))
            return int(s.getsockname()[1])
        finally:
            s.close()

    async def open(self, node: Node) -> None:
        if node.name in self.servers:
            return
        sock = self._bind(node.ip, node.port)
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(
            self.handler, sock=sock, ssl=self._context(node), ssl_handshake_timeout=30
        )
        self.servers[node.name] = srv

    def close(self, node: Node) -> None:
        srv = self.servers.pop(node.name, None)
        if srv is not None:
            srv.close()

    def _sync_listener(self, node: Node) -> None:
        want = node.name in self.cluster.nodes and node.fault != "down"
        if want and node.name not in self.servers:
            task = asyncio.get_running_loop().create_task(self._open_logged(node))
            self.pending.add(task)
            task.add_done_callback(self.pending.discard)
        elif not want:
            self.close(node)
            if node.name not in self.cluster.nodes:
                self.contexts.pop(node.name, None)

    async def settle(self) -> None:
        """Wait until listeners opened by node changes are accepting connections."""
        if self.pending:
            await asyncio.gather(*list(self.pending))

    async def _open_logged(self, node: Node) -> None:
        try:
            await self.open(node)
        except OSError as e:
            log.error("kubelet %s: cannot listen on %s:%d: %s", node.name, node.ip, node.port, e)

    async def start(self) -> None:
        nodes = list(self.cluster.nodes.values())
        if not nodes:
            return
        for attempt in range(5):
            port = self.cluster.kubelet_port or self.choose_port(nodes[0].ip)
            try:
                for n in nodes:
                    n.port = port
                    await self.open(n)
                self.cluster.kubelet_port = port
                return
            except OSError:
                for n in nodes:
                    self.close(n)
                if self.cluster.kubelet_port or attempt == 4:
                    raise

    async def stop(self) -> None:
        for srv in self.servers.values():
            srv.close()
        await self.handler.shutdown(1.0)
        self.servers.clear()

    # --- requests --------------------------------------------------------------------------
    def _authorize(self, request: web.BaseRequest, node: Node) -> tuple[int, str]:
        """(status, user) — 200 allowed, 401 unauthenticated, 403 forbidden."""
        rbac = self.cluster.rbac
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        user: UserInfo | None = None
        if token:
            key = (token, node.name, rbac.generation)
            hit = self.auth_cache.get(key)
            now = time.monotonic()
            if hit is not None and hit[0] > now:
                return hit[1], hit[2]
            user = rbac.authenticate(token)
            status = 401
            name = ""
            if user is not None:
                name = user.name
                ok, _ = rbac.authorize(
                    user,
                    Attributes(verb="get", resource="nodes", subresource="metrics", name=node.name),
                )
                status = 200 if ok else 403
            if len(self.auth_cache) > 100_000:
                self.auth_cache.clear()
            self.auth_cache[key] = (now + AUTH_TTL, status, name)
            return status, name
        user = user_from_cert(
            request.transport.get_extra_info("peercert") if request.transport else None
        )
        if user is None:
            return 401, ""
        ok, _ = rbac.authorize(
            user, Attributes(verb="get", resource="nodes", subresource="metrics", name=node.name)
        )
        return (200 if ok else 403), user.name

    async def _authorize_remote(self, request: web.BaseRequest, node: Node) -> tuple[int, str]:
        assert self.remote_auth is not None
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if token:
            return await self.remote_auth.review(token, "", (), node.name)
        user = user_from_cert(
            request.transport.get_extra_info("peercert") if request.transport else None
        )
        if user is None:
            return 401, ""
        return await self.remote_auth.review("", user.name, user.groups, node.name)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.requests += 1
        transport = request.transport
        sock = transport.get_extra_info("sockname") if transport else None
        node = self.cluster.ip_nodes.get(sock[0]) if sock else None
        if node is None or node.fault == "down":
            # The node went away with this connection still open: drop it like a dead host.
            if transport is not None:
                transport.abort()
            raise asyncio.CancelledError
        path = request.path
        if path == "/healthz":
            return web.Response(text="ok")
        if path != "/metrics/resource":
            return web.Response(status=404, text="404 page not found\n")
        if request.method != "GET":
            return web.Response(status=405, text="405 method not allowed\n")
        if self.remote_auth is not None:
            status, user = await self._authorize_remote(request, node)
        else:
            status, user = self._authorize(request, node)
        if status == 401:
            return web.Response(status=401, text="Unauthorized")
        if status == 403:
            return web.Response(
                status=403,
                text=f"Forbidden (user={user}, verb=get, resource=nodes, "
                f"subresource(s)=[metrics])\n",
            )
        agent = request.headers.get("User-Agent", "")[:200]
        counts = self.served_by_agent.setdefault(node.name, {})
        if agent not in counts and len(counts) >= 64:
            agent = "(other)"  # bounded: a client inventing agents adds no entries
        counts[agent] = counts.get(agent, 0) + 1
        resp = await self.serve_metrics(node)
        return gzip_if_accepted(request.headers.get("Accept-Encoding", ""), resp)

    async def serve_metrics(self, node: Node) -> web.StreamResponse:
        fault = node.fault
        if fault == "slow":
            await asyncio.sleep(node.fault_seconds or 60.0)
            fault = node.fault
        now_ms = int(time.time() * 1000)
        if fault == "http500":
            return web.Response(status=500, text="Internal Server Error: simulated fault\n")
        if fault == "garbage":
            k = node.sample_index(now_ms)
            body = b"".join(mix(node.index, k, i).to_bytes(8, "little") for i in range(128))
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
        body = node.payload(now_ms, scrape_error=fault == "scrape_error")
        if fault == "truncated":
            # Stop in the middle of a series line: a parser must notice and reject it.
            cut = body.find(b"{", len(body) // 2)
            body = body[: cut + 12 if cut >= 0 else len(body) // 2]
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def proxy_metrics(self, node: Node) -> tuple[int, bytes]:
        """For the API server's nodes/NAME/proxy/metrics/resource."""
        if node.fault == "down":
            return 503, b"node is down\n"
        resp = await self.serve_metrics(node)
        assert isinstance(resp, web.Response)
        return resp.status, resp.body if isinstance(resp.body, bytes) else b""
