"""Test helpers for the kube/, auth/ and scrape/ tests: certificates, a fake API server.

Everything is real HTTP over real TLS on 127.0.0.1 with ports picked by the kernel. Async tests
run their coroutine with :func:`run` (``asyncio.run`` under a generous overall bound): the
project does not use pytest-asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web

from kubemetrics import _native
from kubemetrics_sim.apiserver import status_body
from kubemetrics_sim.certs import Authority

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def run(coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run one test coroutine on a fresh loop, failing (not hanging) after ``timeout``."""

    async def bounded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def until(pred: Callable[[], bool], what: str = "condition", within: float = 20.0) -> None:
    """Wait until ``pred()`` holds (polling), or fail with ``what``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- certificates


@dataclass
class Pair:
    cert_pem: bytes
    key_pem: bytes
    cert_file: Path
    key_file: Path


class CA:
    """A throwaway certificate authority (the simulator's `Authority`) writing its files under
    ``directory``."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.dir = directory
        self.name = name
        self.authority = Authority.create(name)
        self.cert_pem = self.authority.cert_pem
        self.cert_file = directory / f"{name}.crt"
        self.cert_file.write_bytes(self.cert_pem)

    def issue(self, cn: str, *, server: bool = True, org: str | None = None) -> Pair:
        """A serving pair for localhost / 127.0.0.1, or (``server=False``) a client pair."""
        cert_pem, key_pem = self.authority.issue(
            cn,
            organizations=(org,) if org else (),
            dns=("localhost",) if server else (),
            ips=("127.0.0.1",) if server else (),
            server=server,
            client=not server,
        )
        cert_file = self.dir / f"{self.name}-{cn}.crt"
        key_file = self.dir / f"{self.name}-{cn}.key"
        cert_file.write_bytes(cert_pem)
        key_file.write_bytes(key_pem)
        return Pair(cert_pem, key_pem, cert_file, key_file)

    def server_context(self, pair: Pair, client_ca: CA | None = None) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pair.cert_file, pair.key_file)
        if client_ca is not None:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=str(client_ca.cert_file))
        return ctx


# ---------------------------------------------------------------- serving helpers


class Server:
    """An aiohttp app on 127.0.0.1 (port 0 unless given), optionally TLS; restartable.

    ``peers`` collects the client (host, port) of every request: each distinct one is a TCP
    connection (a TLS handshake when ``ssl`` is set), which is how keep-alive is checked.
    """

    def __init__(self, app: web.Application, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.app = app
        self.ssl = ssl_ctx
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.peers: set[tuple[str, int]] = set()
        app.middlewares.append(self._count)

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer is not None:
            self.peers.add((peer[0], peer[1]))
        return await handler(request)

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self.ssl)
        await site.start()
        if self.port == 0:
            sock = site._server.sockets[0]  # type: ignore[union-attr]
            self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# ---------------------------------------------------------------- fake API server


def _match_labels(selector: str, labels: dict[str, str]) -> bool:
    # Equality-only selectors are all the tests need.
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


@dataclass
class _Collection:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    # (resourceVersion, type, object) in order; the oldest may be compacted away.
    log: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    compacted: int = 0  # versions at or below this are gone (410)


class FakeApiServer:
    """A fake kube-apiserver: nodes and pods with resourceVersions, list (paged) + watch
    (bookmarks, 410), faults; TokenReview and SubjectAccessReview (v1) answered from ``tokens``
    and ``allow`` and counted; the `extension-apiserver-authentication` ConfigMap.

    ``token`` is the bearer token node and pod requests must carry (None: any).
    ``watch_gone_as_http`` chooses how an expired version is answered: an HTTP 410 or an
    ``ERROR`` event with code 410 (the API server does both, depending on timing).
    """

    def __init__(
        self,
        ssl_ctx: ssl.SSLContext | None = None,
        token: str | None = None,
        *,
        tokens: dict[str, dict[str, Any]] | None = None,
        allow: Callable[[dict[str, Any]], tuple[bool, str]] | None = None,
    ) -> None:
        self.token = token
        self.tokens = tokens or {}  # TokenReview: token -> the user it authenticates
        self.allow = allow or (lambda spec: (False, ""))  # SubjectAccessReview's answer
        self.configmap: tuple[int, dict[str, str]] = (404, {})  # (status, data)
        self.configmap_items: list[Any] | None = None  # the ConfigMap list's items, raw
        self.configmap_watchable = False  # a ConfigMap watch stays open for pushed events
        self._configmap_events: list[dict[str, Any]] = []
        self.fail_reviews = False  # answer reviews with a Status failure
        self.review_delay = 0.0  # seconds each review takes
        self.reviews_in_flight: dict[str, int] = {"tokenreviews": 0, "subjectaccessreviews": 0}
        self.max_reviews_in_flight: dict[str, int] = dict(self.reviews_in_flight)
        self.token_reviews: list[dict[str, Any]] = []
        self.access_reviews: list[dict[str, Any]] = []
        self.rv = 100
        self.cols = {"nodes": _Collection(), "pods": _Collection()}
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.watch_gone_as_http = False
        self.fail_lists = 0  # answer this many lists with 500
        self.watch_generation = 0  # bumping it ends every open watch cleanly
        self._changed = asyncio.Condition()
        self._watch_responses: list[web.StreamResponse] = []
        app = web.Application()
        app.router.add_get("/api/v1/nodes", self._handle)
        app.router.add_get("/api/v1/pods", self._handle)
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._sar)
        app.router.add_get("/api/v1/namespaces/kube-system/configmaps/{name}", self._configmap)
        app.router.add_get("/api/v1/namespaces/kube-system/configmaps", self._configmaps)
        self.server = Server(app, ssl_ctx)

    @property
    def url(self) -> str:
        return self.server.url

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        for resp in self._watch_responses:
            if resp.task is not None:
                resp.task.cancel()
        await self.server.stop()

    # -- mutations

    async def put(self, kind: str, obj: dict[str, Any]) -> int:
        col = self.cols[kind]
        meta = obj["metadata"]
        key = f"{meta.get('namespace', '')}/{meta['name']}"
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        etype = "MODIFIED" if key in col.objects else "ADDED"
        col.objects[key] = obj
        col.log.append((self.rv, etype, obj))
        async with self._changed:
            self._changed.notify_all()
        return self.rv

    async def delete(self, kind: str, name: str, namespace: str = "") -> None:
        col = self.cols[kind]
        obj = col.objects.pop(f"{namespace}/{name}")
        self.rv += 1
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        col.log.append((self.rv, "DELETED", obj))
        async with self._changed:
            self._changed.notify_all()

    async def put_raw(self, kind: str, key: str, obj: Any) -> int:
        """Store `obj` exactly as given (malformed, say) under `key`, with an ADDED event."""
        col = self.cols[kind]
        self.rv += 1
        col.objects[key] = obj
        col.log.append((self.rv, "ADDED", obj))
        async with self._changed:
            self._changed.notify_all()
        return self.rv

    async def push_configmap_event(self, event_type: str, obj: Any) -> None:
        """Send one watch event, as given, to the open ConfigMap watch (configmap_watchable)."""
        self._configmap_events.append({"type": event_type, "object": obj})
        async with self._changed:
            self._changed.notify_all()

    def compact(self) -> None:
        """Forget all history: every watch from an older version now gets 410."""
        for col in self.cols.values():
            col.log.clear()
            col.compacted = self.rv

    async def bookmark(self) -> None:
        self.rv += 1
        for col in self.cols.values():
            col.log.append((self.rv, "BOOKMARK", {}))
        async with self._changed:
            self._changed.notify_all()

    async def end_watches(self) -> None:
        """End every open watch cleanly, as when its timeoutSeconds elapses."""
        self.watch_generation += 1
        async with self._changed:
            self._changed.notify_all()

    def delete_silently(self, kind: str, name: str, namespace: str = "") -> None:
        """Delete without a watch event and compact history: only a relist can notice."""
        self.cols[kind].objects.pop(f"{namespace}/{name}")
        self.rv += 1
        self.compact()

    def watching(self) -> int:
        """How many watches are open right now."""
        return sum(1 for r in self._watch_responses if r.task is not None and not r.task.done())

    def drop_watches(self) -> None:
        """Cut every open watch connection (as a dying API server or a proxy would)."""
        for resp in self._watch_responses:
            if resp.task is not None and not resp.task.done():
                transport = resp._req.transport if resp._req is not None else None
                if transport is not None:
                    transport.abort()
        self._watch_responses.clear()

    # -- serving

    @contextlib.asynccontextmanager
    async def _reviewing(self, kind: str) -> AsyncIterator[None]:
        self.reviews_in_flight[kind] += 1
        self.max_reviews_in_flight[kind] = max(
            self.max_reviews_in_flight[kind], self.reviews_in_flight[kind]
        )
        try:
            if self.review_delay:
                await asyncio.sleep(self.review_delay)
            yield
        finally:
            self.reviews_in_flight[kind] -= 1

    async def _token_review(self, request: web.Request) -> web.StreamResponse:
        async with self._reviewing("tokenreviews"):
            return await self._token_review_now(request)

    async def _sar(self, request: web.Request) -> web.StreamResponse:
        async with self._reviewing("subjectaccessreviews"):
            return await self._sar_now(request)

    async def _token_review_now(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query), dict(request.headers)))
        body = orjson.loads(await request.read())
        assert body["apiVersion"] == "authentication.k8s.io/v1" and body["kind"] == "TokenReview"
        self.token_reviews.append(body)
        if self.fail_reviews:
            return _status(500, "InternalError", "boom")
        user = self.tokens.get(body["spec"]["token"])
        status: dict[str, Any] = (
            {"authenticated": True, "user": user}
            if user
            else {"authenticated": False, "error": "invalid bearer token"}
        )
        return web.json_response({**body, "status": status}, status=201)

    async def _sar_now(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.query), dict(request.headers)))
        body = orjson.loads(await request.read())
        assert body["apiVersion"] == "authorization.k8s.io/v1"
        assert body["kind"] == "SubjectAccessReview"
        self.access_reviews.append(body)
        if self.fail_reviews:
            return _status(503, "ServiceUnavailable", "down")
        allowed, reason = self.allow(body["spec"])
        return web.json_response(
            {**body, "status": {"allowed": allowed, "reason": reason}}, status=201
        )

    async def _configmap(self, request: web.Request) -> web.StreamResponse:
        code, data = self.configmap
        if code != 200:
            return _status(code, "", f"configmap answer {code}")
        return web.json_response(
            {"kind": "ConfigMap", "metadata": {"name": request.match_info["name"]}, "data": data}
        )

    async def _configmaps(self, request: web.Request) -> web.StreamResponse:
        # a list answers; a watch sends what push_configmap_event() queues, else ends at once
        if request.query.get("watch"):
            if not self.configmap_watchable:
                return web.Response(body=b"")
            resp = web.StreamResponse()
            await resp.prepare(request)
            self._watch_responses.append(resp)
            while True:
                while self._configmap_events:
                    await resp.write(orjson.dumps(self._configmap_events.pop(0)) + b"\n")
                async with self._changed:
                    if not self._configmap_events:
                        await self._changed.wait()
        _, data = self.configmap
        items = self.configmap_items
        if items is None:
            items = [{"metadata": {"name": "extension-apiserver-authentication"}, "data": data}]
        return web.json_response(
            {"kind": "ConfigMapList", "metadata": {"resourceVersion": "1"}, "items": items}
        )

    def _view(self, kind: str, obj: Any, metadata_only: bool) -> Any:
        if metadata_only and isinstance(obj, dict):
            return {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata"),
            }
        return obj

    def _selected(self, kind: str, obj: Any, q: dict[str, str]) -> bool:
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        status = obj.get("status") if isinstance(obj, dict) else None
        if not isinstance(meta, dict) or not isinstance(status or {}, dict):
            return True  # malformed on purpose (put_raw): everyone gets to see it
        running = (status or {}).get("phase") == "Running"
        if kind == "pods" and q.get("fieldSelector") == "status.phase=Running" and not running:
            return False
        labels = meta.get("labels") or {}
        return _match_labels(q.get("labelSelector", ""), labels if isinstance(labels, dict) else {})

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        q = dict(request.query)
        self.requests.append((request.path, q, dict(request.headers)))
        if (
            self.token is not None
            and request.headers.get("Authorization") != f"Bearer {self.token}"
        ):
            return _status(401, "Unauthorized", "Unauthorized")
        kind = request.path.rsplit("/", 1)[1]
        if q.get("watch") == "true":
            return await self._watch(request, kind, q)
        if self.fail_lists > 0:
            self.fail_lists -= 1
            return _status(500, "InternalError", "etcd is sad")
        col = self.cols[kind]
        accept = request.headers.get("Accept", "")
        metadata_only = "as=PartialObjectMetadataList" in accept
        items = [
            self._view(kind, o, metadata_only)
            for k, o in sorted(col.objects.items())
            if self._selected(kind, o, q)
        ]
        start = 0
        cont = q.get("continue")
        if cont:
            start_s, _, rv_s = cont.partition(":")
            if int(rv_s) <= col.compacted:
                return _status(410, "Expired", "continue token too old")
            start = int(start_s)
        limit = int(q.get("limit", "0") or 0)
        end = start + limit if limit else len(items)
        meta: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if end < len(items):
            meta["continue"] = f"{end}:{self.rv}"
        body = {
            "kind": "PartialObjectMetadataList" if metadata_only else "List",
            "apiVersion": "meta.k8s.io/v1" if metadata_only else "v1",
            "metadata": meta,
            "items": items[start:end],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _watch(
        self, request: web.Request, kind: str, q: dict[str, str]
    ) -> web.StreamResponse:
        col = self.cols[kind]
        since = int(q.get("resourceVersion") or 0)
        if since and since < col.compacted:
            if self.watch_gone_as_http:
                return _status(410, "Expired", f"too old resource version: {since}")
            resp = web.StreamResponse()
            await resp.prepare(request)
            err = {
                "type": "ERROR",
                "object": {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "message": f"too old resource version: {since} ({col.compacted})",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            await resp.write(orjson.dumps(err) + b"\n")
            return resp
        metadata_only = "as=PartialObjectMetadata" in request.headers.get("Accept", "")
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        self._watch_responses.append(resp)
        timeout = float(q.get("timeoutSeconds", "300"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        sent = since
        generation = self.watch_generation
        while loop.time() < deadline and generation == self.watch_generation:
            for rv, etype, obj in list(col.log):
                if rv <= sent:
                    continue
                sent = rv
                if etype == "BOOKMARK":
                    if q.get("allowWatchBookmarks") == "true":
                        out: dict[str, Any] = {
                            "kind": obj.get("kind", ""),
                            "metadata": {"resourceVersion": str(rv)},
                        }
                        await resp.write(orjson.dumps({"type": "BOOKMARK", "object": out}) + b"\n")
                    continue
                if etype != "DELETED" and not self._selected(kind, obj, q):
                    if etype == "ADDED":
                        continue
                    etype = "DELETED"  # it left the selection (e.g. no longer Running)
                view = self._view(kind, obj, metadata_only)
                await resp.write(orjson.dumps({"type": etype, "object": view}) + b"\n")
            async with self._changed:
                if generation != self.watch_generation or any(rv > sent for rv, _, _ in col.log):
                    continue
                try:
                    await asyncio.wait_for(self._changed.wait(), deadline - loop.time())
                except TimeoutError:
                    break
        return resp


def _status(code: int, reason: str, message: str) -> web.Response:
    body = orjson.dumps(status_body(code, reason, message))
    return web.Response(status=code, body=body, content_type="application/json")


def node(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    addresses: list[tuple[str, str]] | None = None,
    port: int = 0,
    path: str | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    if path is not None:
        meta["annotations"] = {"metrics.k8s.io/resource-metrics-path": path}
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": meta,
        "status": {
            "addresses": [{"type": t, "address": a} for t, a in (addresses or [])],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        },
    }


def pod(namespace: str, name: str, *, phase: str = "Running", **labels: str) -> dict[str, Any]:
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"namespace": namespace, "name": name, "labels": dict(labels)},
        "spec": {"nodeName": "n1"},
        "status": {"phase": phase},
    }


def kubeconfig(path: Path, server: str, ca: CA, token: str | None = None, **user: str) -> Path:
    """Write a kubeconfig with the CA inline (certificate-authority-data)."""
    import base64

    u: dict[str, str] = dict(user)
    if token is not None:
        u["token"] = token
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.cert_pem).decode(),
                },
            }
        ],
        "users": [{"name": "u", "user": u}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path.write_bytes(orjson.dumps(cfg))  # JSON is YAML
    return path


# ---------------------------------------------------------------- recording fakes


class RecordingInventory:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, str]] = {}
        self.pods: dict[tuple[str, str], dict[str, str]] = {}

    def set_node(self, name: str, labels: dict[str, str]) -> None:
        self.nodes[name] = dict(labels)

    def delete_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    def set_pod(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        self.pods[(namespace, name)] = dict(labels)

    def delete_pod(self, namespace: str, name: str) -> None:
        self.pods.pop((namespace, name), None)


class RecordingStore:
    """Stands in for the native Store: records ingests; rejects bodies that aren't metrics.
    Its snapshots are empty (what the scrape cycle publishes is not what these tests check)."""

    def __init__(self) -> None:
        self.ingested: list[tuple[str, bytes, int]] = []
        self.forgotten_nodes: list[str] = []
        self.forgotten_pods: list[tuple[str, str]] = []
        self.on_ingest: Callable[[str], None] | None = None

    def ingest(self, node: str, data: bytes, request_time_ms: int) -> None:
        if not data.startswith(b"#") and not data.startswith(b"node_"):
            raise ValueError("line 1: not a metric line")
        self.ingested.append((node, data, request_time_ms))
        if self.on_ingest is not None:
            self.on_ingest(node)

    def forget_node(self, node: str) -> None:
        self.forgotten_nodes.append(node)

    def forget_pod(self, namespace: str, pod: str) -> None:
        self.forgotten_pods.append((namespace, pod))

    def snapshot(self, now_ms: int) -> _native.Snapshot:
        return _native.Store(60.0).snapshot(now_ms)

    def points(self) -> tuple[int, int]:
        return 0, 0
