"""Attach the simulated fleet to a real API server (``kubemetrics-sim --apiserver KUBECONFIG``).

The simulator then serves only its kubelets (and the ``/_sim`` control API): the nodes and pods
live in the real kube-apiserver, and three things keep the two in step:

- ``Mirror`` makes the API server's Nodes and Pods follow the simulator's objects: one
  reconciler per object key, so a burst of changes to one pod costs one request for its latest
  state (create, then the status subresource as a kubelet writes it; delete with grace 0 as a
  kubelet finishes a deletion).
- ``Adopter`` plays scheduler and kubelet for pods created through the API (a Deployment's
  ReplicaSet): it binds each unscheduled pod to the node with the fewest pods, runs it in the
  simulator (so its kubelet reports it) and finishes deletions the API server starts.
- ``RemoteAuth`` authenticates and authorizes kubelet clients as a kubelet does with webhook
  authn/authz: TokenReview and SubjectAccessReview against the API server, cached.

``Workloads`` lets a test make the containers of a workload (pods with one ``app`` label in one
namespace) busy or idle: a total CPU rate spread evenly over its running pods, as a load
balancer spreads requests, so the HPA's formula has one fixed point.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from .cluster import Cluster
from .gofmt import rfc3339
from .model import Node, Pattern, Pod
from .store import Event

log = logging.getLogger("kubemetrics_sim.attach")

WORKERS = 24
RETRIES = 8
AUTH_TTL_OK = 120.0  # the kubelet's webhook authentication cache TTL (2 min)
AUTH_TTL_DENIED = 30.0  # its unauthorized cache TTL
AUTH_CACHE_MAX = 100_000
IDLE = Pattern(kind="steady", cpu=1_000_000, mem=16 << 20)  # an adopted pod's default usage


class ApiFailure(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {path}: {status} {body[:300]!r}")
        self.status = status


@dataclass
class Kubeconfig:
    server: str
    ssl: ssl.SSLContext
    token: str

    @classmethod
    def load(cls, path: Path) -> Kubeconfig:
        raw = path.read_bytes()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            try:  # a kubeconfig written by kubectl is YAML; PyYAML comes with the test extras
                import yaml  # type: ignore[import-untyped]
            except ImportError as e:
                raise ValueError(f"{path}: not JSON, and PyYAML is not installed") from e
            doc = yaml.safe_load(raw)
        ctx_name = doc["current-context"]
        ctx = next(c["context"] for c in doc["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in doc["users"] if u["name"] == ctx["user"])
        sslctx = ssl.create_default_context()
        if "certificate-authority-data" in cluster:
            sslctx.load_verify_locations(
                cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
            )
        elif "certificate-authority" in cluster:
            sslctx.load_verify_locations(cafile=cluster["certificate-authority"])
        if "client-certificate-data" in user:
            # ssl loads a certificate chain only from files.
            with tempfile.TemporaryDirectory() as d:
                cert, key = Path(d, "c.crt"), Path(d, "c.key")
                cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
                key.write_bytes(base64.b64decode(user["client-key-data"]))
                sslctx.load_cert_chain(str(cert), str(key))
        elif "client-certificate" in user:
            sslctx.load_cert_chain(user["client-certificate"], user["client-key"])
        return cls(str(cluster["server"]).rstrip("/"), sslctx, str(user.get("token", "")))


class ApiClient:
    """JSON over HTTPS to kube-apiserver, with bounded retries for transient failures."""

    def __init__(self, kc: Kubeconfig) -> None:
        self.kc = kc
        headers = {"Accept": "application/json"}
        if kc.token:
            headers["Authorization"] = f"Bearer {kc.token}"
        self.session = aiohttp.ClientSession(
            base_url=kc.server,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=kc.ssl, limit=WORKERS * 2),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self.requests = 0

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        ctype: str = "application/json",
        ok: tuple[int, ...] = (200, 201),
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        data = orjson.dumps(body) if body is not None else None
        delay = 0.1
        for attempt in range(RETRIES):
            self.requests += 1
            try:
                async with self.session.request(
                    method, path, data=data, params=params, headers={"Content-Type": ctype}
                ) as r:
                    raw = await r.read()
                    if r.status in ok:
                        return r.status, orjson.loads(raw) if raw else None
                    if (r.status == 429 or r.status >= 500) and attempt + 1 < RETRIES:
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
                    raise ApiFailure(method, path, r.status, raw)
            except (TimeoutError, aiohttp.ClientConnectionError):
                if attempt + 1 == RETRIES:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    async def watch(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        q = {**params, "watch": "1", "allowWatchBookmarks": "true"}
        async with self.session.get(
            path, params=q, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
        ) as r:
            if r.status != 200:
                raise ApiFailure("WATCH", path, r.status, await r.read())
            async for line in r.content:
                if line.strip():
                    yield orjson.loads(line)


def _node_object(node: Node) -> dict[str, Any]:
    d = node.to_dict()
    meta = d["metadata"]
    d["metadata"] = {
        "name": meta["name"],
        "labels": meta["labels"],
        "annotations": meta["annotations"],
    }
    now = rfc3339(time.time())
    for c in d["status"]["conditions"]:
        c["lastHeartbeatTime"] = now
    return d


def _pod_status(st: dict[str, Any], pod: Pod, node: Node | None) -> dict[str, Any]:
    """The simulator's pod status as a kubelet writes it to the API server."""
    st = dict(st)
    st["conditions"] = [dict(c) for c in st["conditions"]]
    started = rfc3339(pod.started)
    for c in st["conditions"]:
        # The HPA compares pod readiness transitions with metric timestamps.
        c["lastTransitionTime"] = started
    if node is not None:
        st["hostIP"] = node.ip
        st["hostIPs"] = [{"ip": node.ip}]
    else:
        st.pop("hostIP", None)
    return st


class Mirror:
    """Keeps the API server's nodes, namespaces and pods equal to the simulator's."""

    def __init__(self, cluster: Cluster, api: ApiClient) -> None:
        self.cluster = cluster
        self.api = api
        self.dirty: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        self.queued: set[tuple[str, str, str]] = set()
        self.busy: set[tuple[str, str, str]] = set()
        self.created: set[tuple[str, str, str]] = set()  # exists in the API server
        self.status_sent: dict[tuple[str, str, str], bytes] = {}
        self.recorded: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.adopted: set[tuple[str, str]] = set()  # pods the API server created (no POST)
        self.namespaces: dict[str, asyncio.Future[None]] = {}
        self.errors = 0
        self.workers: list[asyncio.Task[None]] = []
        self.idle = asyncio.Event()
        self.in_flight = 0

    # The simulator's store calls offer() for every change (a watcher of everything).
    def offer_change(
        self, resource: str, namespace: str, name: str, status: dict[str, Any] | None = None
    ) -> None:
        """Mark an object for reconciling. `status`: the pod's status as the store recorded the
        change (a restart shows there at once, in the model only from the next sample)."""
        if resource not in ("nodes", "pods"):
            return
        key = (resource, namespace, name)
        if status is not None:
            self.recorded[key] = status
        if key in self.queued:
            return
        self.queued.add(key)
        self.idle.clear()
        self.dirty.put_nowait(key)

    def start(self) -> None:
        for n in self.cluster.nodes.values():
            self.offer_change("nodes", "", n.name)
        for p in self.cluster.pods.values():
            self.offer_change("pods", p.namespace, p.name)
        if self.dirty.empty():
            self.idle.set()
        self.workers = [asyncio.create_task(self._work()) for _ in range(WORKERS)]

    async def stop(self) -> None:
        for w in self.workers:
            w.cancel()
        for w in self.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w

    async def _work(self) -> None:
        while True:
            key = await self.dirty.get()
            self.queued.discard(key)
            if key in self.busy:
                # Another worker holds this key: look again when it is done.
                await asyncio.sleep(0.05)
                self.offer_change(*key)
                continue
            self.busy.add(key)
            self.in_flight += 1
            try:
                await self._reconcile(key)
            except Exception as e:
                self.errors += 1
                log.warning("mirror %s/%s/%s: %s", *key, e)
            finally:
                self.busy.discard(key)
                self.in_flight -= 1
                if self.dirty.empty() and self.in_flight == 0:
                    self.idle.set()

    async def ensure_namespace(self, ns: str) -> None:
        fut = self.namespaces.get(ns)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self.namespaces[ns] = fut
            try:
                await self.api.call(
                    "POST",
                    "/api/v1/namespaces",
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                    ok=(201, 409),
                )
                # Pods name the `default` ServiceAccount; without a controller manager nothing
                # else would create it, and admission rejects pods whose account is missing.
                await self.api.call(
                    "POST",
                    f"/api/v1/namespaces/{ns}/serviceaccounts",
                    {
                        "apiVersion": "v1",
                        "kind": "ServiceAccount",
                        "metadata": {"name": "default"},
                    },
                    ok=(201, 409),
                )
                fut.set_result(None)
            except Exception as e:
                self.namespaces.pop(ns, None)
                fut.set_exception(e)
                raise
        await asyncio.shield(fut)

    async def _reconcile(self, key: tuple[str, str, str]) -> None:
        resource, ns, name = key
        if resource == "nodes":
            node = self.cluster.nodes.get(name)
            path = f"/api/v1/nodes/{name}"
            if node is None:
                if key in self.created:
                    await self.api.call("DELETE", path, ok=(200, 202, 404))
                    self.created.discard(key)
                return
            if key not in self.created:
                # Nodes keep their status on create (pods do not).
                await self.api.call("POST", "/api/v1/nodes", _node_object(node), ok=(201, 409))
                self.created.add(key)
            return
        pod = self.cluster.pods.get((ns, name))
        path = f"/api/v1/namespaces/{ns}/pods/{name}"
        if pod is None:
            if key in self.created or (ns, name) in self.adopted:
                # As a kubelet does once the containers are gone: remove the object now.
                await self.api.call(
                    "DELETE",
                    path,
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
                    ok=(200, 202, 404),
                )
            self.created.discard(key)
            self.adopted.discard((ns, name))
            self.status_sent.pop(key, None)
            self.recorded.pop(key, None)
            return
        if key not in self.created:
            if (ns, name) not in self.adopted:
                await self.ensure_namespace(ns)
                d = pod.to_dict()
                meta = d["metadata"]
                spec = d["spec"]
                # No ownerReferences: the simulator's ReplicaSets do not exist in the API
                # server, whose garbage collector would delete the pods.
                spec["automountServiceAccountToken"] = False
                body = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "namespace": ns, "labels": meta.get("labels", {})},
                    "spec": spec,
                }
                await self.api.call("POST", f"/api/v1/namespaces/{ns}/pods", body, ok=(201, 409))
            self.created.add(key)
        recorded = self.recorded.pop(key, None) or pod.to_dict()["status"]
        status = _pod_status(recorded, pod, self.cluster.nodes.get(pod.node))
        enc = orjson.dumps(status)
        if self.status_sent.get(key) == enc:
            return
        code, _ = await self.api.call(
            "PATCH",
            f"{path}/status",
            {"status": status},
            ctype="application/merge-patch+json",
            ok=(200, 404),
        )
        if code == 200:
            self.status_sent[key] = enc


class Workloads:
    """Per (namespace, app label): a total CPU rate and a memory per pod, spread over its pods."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.targets: dict[tuple[str, str], tuple[int, int]] = {}

    def pods(self, ns: str, app: str) -> list[Pod]:
        return [
            p
            for p in self.cluster.pods.values()
            if p.namespace == ns and p.labels.get("app") == app and p.phase == "Running"
        ]

    def set(self, ns: str, app: str, cpu_nanocores: int, memory_bytes: int) -> dict[str, Any]:
        if cpu_nanocores < 0 or memory_bytes < 0:
            raise ValueError("cpu_nanocores and memory_bytes must be >= 0")
        self.targets[(ns, app)] = (cpu_nanocores, memory_bytes)
        return self.rebalance(ns, app)

    def rebalance(self, ns: str, app: str) -> dict[str, Any]:
        """Give each running pod of the workload its share from its node's next sample."""
        target = self.targets.get((ns, app))
        pods = self.pods(ns, app)
        if target is None:
            return {"namespace": ns, "app": app, "pods": len(pods)}
        total, mem = target
        now_ms = int(time.time() * 1000)
        per_container = 0
        for p in pods:
            node = self.cluster.nodes.get(p.node)
            if node is not None:
                node.advance(now_ms)  # samples already taken keep the old rate
            share = total // len(pods) // max(1, len(p.containers))
            per_container = share // 1000 * 1000
            for c in p.containers:
                c.pattern = Pattern(kind="steady", cpu=max(per_container, 1000), mem=mem)
        return {
            "namespace": ns,
            "app": app,
            "pods": len(pods),
            "cpu_nanocores": total,
            "memory_bytes": mem,
            "cpu_nanocores_per_container": per_container,
        }


class Adopter:
    """Scheduler and kubelet for pods that controllers create through the API server."""

    def __init__(
        self, cluster: Cluster, api: ApiClient, mirror: Mirror, workloads: Workloads
    ) -> None:
        self.cluster = cluster
        self.api = api
        self.mirror = mirror
        self.workloads = workloads
        self.task: asyncio.Task[None] | None = None
        self.adopted_total = 0
        self.synced = asyncio.Event()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    _, lst = await self.api.call("GET", "/api/v1/pods", params={"limit": "0"})
                    rv = lst["metadata"]["resourceVersion"]
                    for o in lst["items"]:
                        await self._observe("ADDED", o)
                    self.synced.set()
                async for ev in self.api.watch("/api/v1/pods", {"resourceVersion": rv}):
                    o = ev.get("object", {})
                    if ev.get("type") == "ERROR":
                        rv = ""  # 410 Gone: list again
                        break
                    rv = o.get("metadata", {}).get("resourceVersion", rv)
                    if ev.get("type") != "BOOKMARK":
                        await self._observe(str(ev.get("type")), o)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("pod watch: %s; resuming", e)
                await asyncio.sleep(1.0)

    async def _observe(self, kind: str, o: dict[str, Any]) -> None:
        meta = o.get("metadata", {})
        ns, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        key = (ns, name)
        mine = self.cluster.pods.get(key)
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if mine is not None:
                # The API server started (or finished) a deletion: stop the pod; the mirror
                # then removes the object with grace 0, as the kubelet does.
                self.cluster.delete_pod(ns, name)
                app = mine.labels.get("app")
                if app is not None:
                    self.workloads.rebalance(ns, app)
            return
        if mine is not None or o.get("spec", {}).get("nodeName"):
            return
        await self._schedule(o)

    async def _schedule(self, o: dict[str, Any]) -> None:
        meta, spec = o["metadata"], o["spec"]
        ns, name = meta["namespace"], meta["name"]
        if not self.cluster.nodes:
            return
        node = min(self.cluster.nodes.values(), key=lambda n: (len(n.pods), n.name))
        await self.api.call(
            "POST",
            f"/api/v1/namespaces/{ns}/pods/{name}/binding",
            {
                "apiVersion": "v1",
                "kind": "Binding",
                "metadata": {"name": name, "namespace": ns},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node.name},
            },
            ok=(201, 409),
        )
        labels = dict(meta.get("labels") or {})
        app = labels.get("app", name)
        pattern = IDLE  # the workload's share, if it has one, is set by rebalance() below
        self.mirror.adopted.add((ns, name))
        self.cluster.create_pod(
            {
                "namespace": ns,
                "name": name,
                "node": node.name,
                "app": app,
                "labels": labels,
                "containers": [
                    {"name": c["name"], "pattern": pattern.to_dict()} for c in spec["containers"]
                ],
                "start_delay": 0,
            }
        )
        self.adopted_total += 1
        self.workloads.rebalance(ns, app)


class RemoteAuth:
    """Kubelet authn/authz through the API server (webhook mode), cached like the kubelet."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.cache: dict[tuple[str, str], tuple[float, int, str]] = {}
        self.reviews = 0

    async def review(
        self, token: str, user: str, groups: tuple[str, ...], node: str
    ) -> tuple[int, str]:
        """(status, user name): 200, 401 or 403. ``token`` or (``user``, ``groups``) from a
        client certificate the TLS layer verified."""
        key = (token or f"cert:{user}:{','.join(groups)}", node)
        now = time.monotonic()
        hit = self.cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1], hit[2]
        extra: dict[str, Any] = {}
        if token:
            self.reviews += 1
            _, tr = await self.api.call(
                "POST",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
            )
            st = tr.get("status", {})
            if not st.get("authenticated"):
                self._put(key, now + AUTH_TTL_DENIED, 401, "")
                return 401, ""
            u = st.get("user", {})
            user, groups = str(u.get("username", "")), tuple(u.get("groups") or ())
            extra = {"uid": u.get("uid", ""), "extra": u.get("extra") or {}}
        self.reviews += 1
        _, sar = await self.api.call(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": user,
                    "groups": list(groups),
                    **{k: v for k, v in extra.items() if v},
                    "resourceAttributes": {
                        "verb": "get",
                        "resource": "nodes",
                        "subresource": "metrics",
                        "name": node,
                    },
                },
            },
        )
        allowed = bool(sar.get("status", {}).get("allowed"))
        status = 200 if allowed else 403
        self._put(key, now + (AUTH_TTL_OK if allowed else AUTH_TTL_DENIED), status, user)
        return status, user

    def _put(self, key: tuple[str, str], until: float, status: int, user: str) -> None:
        if len(self.cache) >= AUTH_CACHE_MAX:
            self.cache.clear()
        self.cache[key] = (until, status, user)


class StoreTap:
    """Registered among the store's watchers: every change marks its object for the mirror."""

    def __init__(self, mirror: Mirror) -> None:
        self.mirror = mirror

    def offer(self, ev: Event) -> None:
        status = ev.obj.get("status") if ev.resource == "pods" and ev.type != "DELETED" else None
        self.mirror.offer_change(ev.resource, ev.namespace, ev.name, status)


class Attached:
    """The simulator's side of a real API server: mirror, adopter, workloads, kubelet auth."""

    def __init__(self, cluster: Cluster, kubeconfig: Path) -> None:
        self.cluster = cluster
        self.kc = Kubeconfig.load(kubeconfig)
        self.api = ApiClient(self.kc)
        self.mirror = Mirror(cluster, self.api)
        self.workloads = Workloads(cluster)
        self.adopter = Adopter(cluster, self.api, self.mirror, self.workloads)
        self.auth = RemoteAuth(self.api)
        self.t_synced = 0.0

    @property
    def server(self) -> str:
        return self.kc.server

    async def start(self, limit_s: float) -> None:
        """Mirror every node and pod, start adopting; return once the API server has them."""
        t0 = time.monotonic()
        self.cluster.store.watchers.add(StoreTap(self.mirror))  # type: ignore[arg-type]
        self.mirror.start()
        self.adopter.start()
        async with asyncio.timeout(limit_s):
            await self.mirror.idle.wait()
            await self.adopter.synced.wait()
        self.t_synced = time.monotonic() - t0

    async def stop(self) -> None:
        await self.adopter.stop()
        await self.mirror.stop()
        await self.api.close()

    def state(self) -> dict[str, Any]:
        return {
            "apiserver": self.server,
            "requests": self.api.requests,
            "mirror_errors": self.mirror.errors,
            "mirror_pending": self.mirror.dirty.qsize() + self.mirror.in_flight,
            "adopted": self.adopter.adopted_total,
            "kubelet_auth_reviews": self.auth.reviews,
            "initial_sync_seconds": round(self.t_synced, 3),
        }

    async def control(self, method: str, parts: list[str], body: dict[str, Any]) -> Any:
        """``GET /_sim/attached/state``; ``PUT /_sim/attached/workloads/NS/APP``
        ``{cpu_nanocores (total), memory_bytes (per pod)}``; ``GET`` the same path."""
        if parts == ["state"] and method == "GET":
            return self.state()
        if len(parts) == 3 and parts[0] == "workloads":
            ns, app = parts[1], parts[2]
            if method in ("PUT", "POST"):
                return self.workloads.set(
                    ns,
                    app,
                    int(body.get("cpu_nanocores", 0)),
                    int(body.get("memory_bytes", 64 << 20)),
                )
            if method == "GET":
                return self.workloads.rebalance(ns, app)
        raise LookupError(f"no control endpoint {method} /_sim/attached/{'/'.join(parts)}")
