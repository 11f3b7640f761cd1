"""metrics.k8s.io over real HTTP: a real aiohttp server on a free port, a real `Store` fed with
kubelet payloads, a real `Inventory`; bodies compared with values worked out by hand.

The cluster: node-a and node-b scraped twice 15 s apart; node-c known but its kubelet silent;
node-d scraped but not selected (not in the inventory). Pods: default/web (app + sidecar) and
kube-system/coredns on node-a, default/db on node-b, default/pending known but without metrics,
ns2/orphan with metrics but unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict
from prometheus_client.parser import text_string_to_metric_families

from kubemetrics import _native
from kubemetrics.api.hooks import Decision, RequestAttributes, UserInfo
from kubemetrics.api.routes import ApiDependencies, build_app
from kubemetrics.health import ShutdownCheck, standard_checks
from kubemetrics.selfmetrics import SelfMetrics
from kubemetrics_sim.apiserver import status_body
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text
from kubemetrics_sim.protowire import fields

T0 = 1_735_032_800_000  # 2024-12-24T09:33:20Z
T1 = T0 + 15_000
NOW_S = T1 / 1000 + 25  # 2024-12-24T09:34:00Z
START_S = 1_735_000_000.0

PROTOBUF = "application/vnd.kubernetes.protobuf"
TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def rfc3339(ms: int) -> str:
    t = datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def cpu_text(ns: int) -> str:
    # half a nanosecond above the wanted count: the parser truncates to whole nanoseconds
    return f"{(ns + 0.5) / 1e9:.10f}"


@dataclass
class C:
    namespace: str
    pod: str
    name: str
    cpu_ns: int
    memory: int
    ts: int


def payload(node_cpu_ns: int, node_mem: int, node_ts: int, containers: list[C]) -> bytes:
    return kubelet_text(
        NodeSample(cpu_text(node_cpu_ns), node_mem, node_ts),
        [
            ContainerSample(c.namespace, c.pod, c.name, cpu_text(c.cpu_ns), c.memory, START_S, c.ts)
            for c in containers
        ],
    )


S = 1_000_000_000  # ns per core-second


def build_store() -> _native.Store:
    store = _native.Store(15.0)
    # scrape 1
    store.ingest(
        "node-a",
        payload(
            100 * S,
            12_000_000,
            T0,
            [
                C("default", "web", "app", 50 * S, 3 << 20, T0 - 200),
                C("default", "web", "sidecar", 1 * S, 900, T0 - 1100),
                C("kube-system", "coredns", "coredns", 7 * S, 20 << 20, T0 - 300),
            ],
        ),
        T0,
    )
    store.ingest(
        "node-b",
        payload(
            5 * S,
            1_000_000,
            T0,
            [
                C("default", "db", "db", 9 * S, 500, T0),
                C("ns2", "orphan", "x", 1 * S, 1 << 20, T0),
            ],
        ),
        T0,
    )
    store.ingest("node-d", payload(1 * S, 1 << 30, T0, []), T0)
    # scrape 2, 15 s later
    store.ingest(
        "node-a",
        payload(
            100 * S + 7_500_000_000,  # 0.5 core over 15 s
            12_533_760,  # 12240Ki
            T1,
            [
                C("default", "web", "app", 65 * S, 3 << 20, T1 - 200),  # 1 core
                C("default", "web", "sidecar", 1 * S + 24_000_000, 1000, T1 - 100),  # 1.5m / 16s
                C("kube-system", "coredns", "coredns", 7 * S + 150_000_000, 20 << 20, T1 - 300),
            ],
        ),
        T1,
    )
    store.ingest(
        "node-b",
        payload(
            5 * S + 300_000,  # 20000 nanocores
            1_234_567,
            T1,
            [
                C("default", "db", "db", 9 * S + 3_750_000_000, 512, T1),  # 250m
                C("ns2", "orphan", "x", 2 * S, 1 << 20, T1),
            ],
        ),
        T1,
    )
    store.ingest("node-d", payload(2 * S, 1 << 30, T1, []), T1)
    return store


def build_inventory() -> _native.Inventory:
    inv = _native.Inventory()
    inv.set_node("node-a", {"zone": "a", "kubernetes.io/hostname": "node-a"})
    inv.set_node("node-b", {"zone": "b"})
    inv.set_node("node-c", {"zone": "c"})
    inv.set_pod("default", "web", {"app": "web", "tier": "front"})
    inv.set_pod("default", "db", {"app": "db"})
    inv.set_pod("kube-system", "coredns", {"k8s-app": "kube-dns"})
    inv.set_pod("default", "pending", {"app": "web"})
    return inv


def node_item(name: str, labels: dict[str, str], ts: int, cpu: str, mem: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "creationTimestamp": rfc3339(int(NOW_S * 1000))}
    if labels:
        meta["labels"] = labels
    return {
        "metadata": meta,
        "timestamp": rfc3339(ts),
        "window": "15s",
        "usage": {"cpu": cpu, "memory": mem},
    }


NODE_A = node_item(
    "node-a", {"kubernetes.io/hostname": "node-a", "zone": "a"}, T1, "500m", "12240Ki"
)
NODE_B = node_item("node-b", {"zone": "b"}, T1, "20u", "1234567")


def pod_item(
    ns: str,
    name: str,
    labels: dict[str, str],
    ts: int,
    window: str,
    containers: list[tuple[str, str, str]],
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": rfc3339(int(NOW_S * 1000)),
            "labels": labels,
        },
        "timestamp": rfc3339(ts),
        "window": window,
        "containers": [
            {"name": c, "usage": {"cpu": cpu, "memory": mem}} for c, cpu, mem in containers
        ],
    }


WEB = pod_item(
    "default",
    "web",
    {"app": "web", "tier": "front"},
    T1 - 200,  # the container with the earliest last sample sets timestamp and window
    "15s",
    [("app", "1", "3Mi"), ("sidecar", "1500u", "1k")],
)
DB = pod_item("default", "db", {"app": "db"}, T1, "15s", [("db", "250m", "512")])
COREDNS = pod_item(
    "kube-system", "coredns", {"k8s-app": "kube-dns"}, T1 - 300, "15s",
    [("coredns", "10m", "20Mi")],
)  # fmt: skip


def lst(kind: str, version: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kind": kind,
        "apiVersion": f"metrics.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def single(kind: str, version: str, item: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "apiVersion": f"metrics.k8s.io/{version}", **item}


@dataclass
class Response:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json", self.headers
        return orjson.loads(self.body)


Fetch = Callable[..., Awaitable[Response]]


@dataclass
class Env:
    store: _native.Store = field(default_factory=build_store)
    inventory: _native.Inventory = field(default_factory=build_inventory)
    metrics: SelfMetrics = field(default_factory=lambda: SelfMetrics(15.0))
    shutdown: ShutdownCheck = field(default_factory=ShutdownCheck)
    authorizer: Any = None
    peer_points: Any = None

    def __post_init__(self) -> None:
        self.snapshot = self.store.snapshot(T1 + 1000)

    def deps(self) -> ApiDependencies:
        checks = standard_checks(
            informers_synced=lambda: True,
            storage_ready=lambda: self.snapshot.ready,
            last_tick_start=lambda: None,
            resolution_seconds=15.0,
            shutdown=self.shutdown,
        )
        kw: dict[str, Any] = {}
        if self.authorizer is not None:
            kw["authorizer"] = self.authorizer
        if self.peer_points is not None:
            kw["peer_points"] = self.peer_points
        return ApiDependencies(
            snapshot=lambda: self.snapshot,
            inventory=self.inventory,
            health=checks,
            metrics=self.metrics,
            clock=lambda: NOW_S,
            server_version="0.1.0",
            **kw,
        )


@contextlib.asynccontextmanager
async def serve(env: Env) -> AsyncIterator[Fetch]:
    runner = aiohttp.web.AppRunner(build_app(env.deps()))
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession(auto_decompress=False) as session:

        async def fetch(
            path: str, accept: str | None = None, method: str = "GET", **headers: str
        ) -> Response:
            h = dict(headers)
            if accept is not None:
                h["Accept"] = accept
            async with session.request(
                method, f"http://127.0.0.1:{port}{path}", headers=h, allow_redirects=False
            ) as resp:
                return Response(resp.status, CIMultiDict(resp.headers), await resp.read())

        try:
            yield fetch
        finally:
            await runner.cleanup()


def run(env: Env, scenario: Callable[[Fetch], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        async with serve(env) as fetch:
            await scenario(fetch)

    asyncio.run(asyncio.wait_for(main(), 60))


V = pytest.mark.parametrize("version", ["v1beta1", "v1"])
BASE = "/apis/metrics.k8s.io"


# --- lists and gets ----------------------------------------------------------------------------


@V
def test_node_list_and_get(version: str) -> None:
    async def scenario(fetch: Fetch) -> None:
        r = await fetch(f"{BASE}/{version}/nodes")
        assert r.status == 200
        assert r.json() == lst("NodeMetricsList", version, [NODE_A, NODE_B])
        r = await fetch(f"{BASE}/{version}/nodes/node-b")
        assert r.json() == single("NodeMetrics", version, NODE_B)
        # field order as upstream's Go structs
        assert r.body.startswith(
            b'{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/'
            + version.encode()
            + b'","metadata":{"name":"node-b","creationTimestamp":"2024-12-24T09:34:00Z",'
            b'"labels":{"zone":"b"}},"timestamp":"2024-12-24T09:33:35Z","window":"15s",'
            b'"usage":{"cpu":"20u","memory":"1234567"}}'
        )

    run(Env(), scenario)


@V
def test_pod_lists_all_namespaces_one_namespace_and_get(version: str) -> None:
    async def scenario(fetch: Fetch) -> None:
        r = await fetch(f"{BASE}/{version}/pods")
        assert r.json() == lst("PodMetricsList", version, [DB, WEB, COREDNS])
        r = await fetch(f"{BASE}/{version}/namespaces/default/pods")
        assert r.json() == lst("PodMetricsList", version, [DB, WEB])
        r = await fetch(f"{BASE}/{version}/namespaces/empty/pods")
        assert r.json() == lst("PodMetricsList", version, [])
        r = await fetch(f"{BASE}/{version}/namespaces/default/pods/web")
        assert r.json() == single("PodMetrics", version, WEB)
        r = await fetch(f"{BASE}/{version}/namespaces/kube-system/pods/coredns")
        assert r.json() == single("PodMetrics", version, COREDNS)

    run(Env(), scenario)


def test_selectors() -> None:
    async def scenario(fetch: Fetch) -> None:
        v = f"{BASE}/v1beta1"
        items = lambda r: [i["metadata"]["name"] for i in r.json()["items"]]  # noqa: E731
        assert items(await fetch(f"{v}/nodes?labelSelector=zone%3Db")) == ["node-b"]
        assert items(await fetch(f"{v}/nodes?labelSelector=zone+in+(a,c)")) == ["node-a"]
        assert items(await fetch(f"{v}/nodes?fieldSelector=metadata.name%3Dnode-a")) == ["node-a"]
        assert items(await fetch(f"{v}/pods?labelSelector=app")) == ["db", "web"]
        assert items(await fetch(f"{v}/pods?labelSelector=app!%3Dweb")) == ["db", "coredns"]
        assert items(await fetch(f"{v}/pods?labelSelector=!app")) == ["coredns"]
        assert items(await fetch(f"{v}/pods?fieldSelector=spec.nodeName%3Dnode-a")) == [
            "web",
            "coredns",
        ]
        assert (
            items(
                await fetch(f"{v}/namespaces/default/pods?fieldSelector=metadata.namespace%3Dother")
            )
            == []
        )
        # limit is ignored, as upstream
        assert items(await fetch(f"{v}/pods?limit=1")) == ["db", "web", "coredns"]

    run(Env(), scenario)


def test_bad_selectors_are_400_status() -> None:
    async def scenario(fetch: Fetch) -> None:
        for q in (
            "labelSelector=app%20in%20(",
            "fieldSelector=status.phase%3DRunning",
            "fieldSelector=spec.nodeName%3Dx",  # not a node field
        ):
            r = await fetch(f"{BASE}/v1beta1/nodes?{q}")
            assert r.status == 400, q
            body = r.json()
            assert {k: body[k] for k in ("kind", "apiVersion", "status", "reason", "code")} == {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "BadRequest",
                "code": 400,
            }
            assert body["message"]
        r = await fetch(f"{BASE}/v1/pods?fieldSelector=metadata.uid%3Dx")
        assert r.status == 400
        assert "metadata.uid" in r.json()["message"]

    run(Env(), scenario)


# --- 404 / 405 / 406 ---------------------------------------------------------------------------


@V
def test_not_found_rules(version: str) -> None:
    async def scenario(fetch: Fetch) -> None:
        cases = [
            # no such Running pod (namespace-scoped)
            (
                "namespaces/default/pods/nope",
                'pods "nope" not found',
                {"name": "nope", "kind": "pods"},
            ),
            (
                "namespaces/kube-system/pods/web",
                'pods "web" not found',
                {"name": "web", "kind": "pods"},
            ),
            # metrics without a known pod are not served
            (
                "namespaces/ns2/pods/orphan",
                'pods "orphan" not found',
                {"name": "orphan", "kind": "pods"},
            ),
            # the pod exists but has no metrics
            (
                "namespaces/default/pods/pending",
                'podmetrics.metrics.k8s.io "default/pending" not found',
                {"name": "default/pending", "group": "metrics.k8s.io", "kind": "podmetrics"},
            ),
            ("nodes/nope", 'node "nope" not found', {"name": "nope", "kind": "node"}),
            ("nodes/node-d", 'node "node-d" not found', {"name": "node-d", "kind": "node"}),
            (
                "nodes/node-c",
                'nodemetrics.metrics.k8s.io "node-c" not found',
                {"name": "node-c", "group": "metrics.k8s.io", "kind": "nodemetrics"},
            ),
        ]
        for path, message, details in cases:
            r = await fetch(f"{BASE}/{version}/{path}")
            assert r.status == 404, path
            assert r.json() == status_body(404, "NotFound", message, details), path
        # also when protobuf was asked for (JSON Status, by design)
        r = await fetch(f"{BASE}/{version}/nodes/nope", accept=f"{PROTOBUF}, */*")
        assert r.status == 404
        assert r.json()["message"] == 'node "nope" not found'

    run(Env(), scenario)


def test_unknown_paths_are_404_status() -> None:
    async def scenario(fetch: Fetch) -> None:
        for path in (
            "/nope",
            "/apis/metrics.k8s.io/v2/nodes",
            "/apis/metrics.k8s.io/v1beta1/services",
            "/apis/other.k8s.io/v1",
            "/api/v1/pods",
            "/readyz/nope",
        ):
            r = await fetch(path)
            assert r.status == 404, path
            assert r.json() == status_body(
                404, "NotFound", "the server could not find the requested resource", {}
            )

    run(Env(), scenario)


def test_watch_and_other_methods_are_405() -> None:
    async def scenario(fetch: Fetch) -> None:
        for res in ("nodes", "pods", "namespaces/default/pods"):
            r = await fetch(f"{BASE}/v1beta1/{res}?watch=true")
            assert r.status == 405
            kind = res.rsplit("/", 1)[-1]
            assert r.json() == status_body(
                405,
                "MethodNotAllowed",
                f'watch is not supported on resources of kind "{kind}.metrics.k8s.io"',
                {"group": "metrics.k8s.io", "kind": kind},
            )
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for path in ("nodes", "nodes/node-a", "namespaces/default/pods/web", ""):
                r = await fetch(f"{BASE}/v1/{path}".rstrip("/"), method=method)
                assert r.status == 405, (method, path)
                assert r.json() == status_body(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                    {},
                )

    run(Env(), scenario)


def test_not_acceptable() -> None:
    async def scenario(fetch: Fetch) -> None:
        r = await fetch(f"{BASE}/v1/nodes", accept="text/html")
        assert r.status == 406
        assert r.json()["reason"] == "NotAcceptable"

    run(Env(), scenario)


# --- content types -----------------------------------------------------------------------------


def one(msg: bytes, num: int) -> Any:
    vals = [v for n, v in fields(msg) if n == num]
    assert len(vals) == 1, (num, fields(msg))
    return vals[0]


def quantity_map(entries: list[bytes]) -> dict[str, str]:
    # map<string, Quantity>: entry{1: key, 2: Quantity{1: string}}
    return {one(e, 1).decode(): one(one(e, 2), 1).decode() for e in entries}


def time_of(msg: bytes) -> str:
    secs = dict(fields(msg)).get(1, 0)
    assert isinstance(secs, int)
    return rfc3339(secs * 1000)


def decode_node(msg: bytes) -> dict[str, Any]:
    meta = one(msg, 1)
    labels = {one(e, 1).decode(): one(e, 2).decode() for n, e in fields(meta) if n == 11}
    m: dict[str, Any] = {"name": one(meta, 1).decode(), "creationTimestamp": time_of(one(meta, 8))}
    if labels:
        m["labels"] = labels
    window_ns = dict(fields(one(msg, 3))).get(1, 0)
    assert isinstance(window_ns, int)
    return {
        "metadata": m,
        "timestamp": time_of(one(msg, 2)),
        "window_ns": window_ns,
        "usage": quantity_map([v for n, v in fields(msg) if n == 4]),  # type: ignore[misc]
    }


@V
def test_protobuf_envelope_decodes_to_the_json_answer(version: str) -> None:
    async def scenario(fetch: Fetch) -> None:
        r = await fetch(f"{BASE}/{version}/nodes", accept=f"{PROTOBUF}, */*")
        assert r.status == 200
        assert r.headers["Content-Type"] == PROTOBUF
        assert r.body[:4] == b"k8s\x00"
        unknown = r.body[4:]
        type_meta = one(unknown, 1)
        assert one(type_meta, 1) == f"metrics.k8s.io/{version}".encode()
        assert one(type_meta, 2) == b"NodeMetricsList"
        raw = one(unknown, 2)
        items = [decode_node(v) for n, v in fields(raw) if n == 2]  # type: ignore[arg-type]
        want = []
        for item in (NODE_A, NODE_B):
            w = {k: v for k, v in item.items() if k != "window"}
            w["window_ns"] = 15 * S
            want.append(w)
        assert items == want

        r = await fetch(f"{BASE}/{version}/nodes/node-a", accept=PROTOBUF)
        assert r.headers["Content-Type"] == PROTOBUF
        assert one(one(r.body[4:], 1), 2) == b"NodeMetrics"

        r = await fetch(f"{BASE}/{version}/namespaces/default/pods", accept=f"{PROTOBUF}, */*")
        assert r.headers["Content-Type"] == PROTOBUF
        raw = one(r.body[4:], 2)
        names = [one(one(v, 1), 1) for n, v in fields(raw) if n == 2]  # type: ignore[arg-type]
        assert names == [b"db", b"web"]

    run(Env(), scenario)


def test_table() -> None:
    async def scenario(fetch: Fetch) -> None:
        r = await fetch(f"{BASE}/v1beta1/namespaces/default/pods", accept=TABLE)
        assert r.status == 200
        t = r.json()
        assert t["kind"] == "Table"
        assert t["apiVersion"] == "meta.k8s.io/v1"
        assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "cpu", "memory", "Window"]
        # pods: sums over containers (1 + 1500u, 3Mi + 1k)
        assert [row["cells"] for row in t["rows"]] == [
            ["db", "250m", "512", "15s"],
            ["web", "1001500u", "3146728", "15s"],
        ]
        r = await fetch(f"{BASE}/v1/nodes", accept=TABLE)
        assert [row["cells"] for row in r.json()["rows"]] == [
            ["node-a", "500m", "12240Ki", "15s"],
            ["node-b", "20u", "1234567", "15s"],
        ]
        r = await fetch(
            f"{BASE}/v1/nodes/node-b", accept="application/json;as=Table;v=v1beta1;g=meta.k8s.io"
        )
        t = r.json()
        assert t["apiVersion"] == "meta.k8s.io/v1beta1"
        assert [row["cells"] for row in t["rows"]] == [["node-b", "20u", "1234567", "15s"]]
        assert b'"meta.k8s.io/v1"' not in r.body

    run(Env(), scenario)


def test_table_include_object() -> None:
    """`includeObject`: Metadata (default) → PartialObjectMetadata, Object → the whole item as the
    JSON API serves it (kubectl get --sort-by sorts on its fields), None → null; others: 400."""

    async def scenario(fetch: Fetch) -> None:
        path = f"{BASE}/v1beta1/namespaces/default/pods"
        items = (await fetch(path)).json()["items"]
        r = await fetch(f"{path}?includeObject=Object", accept=TABLE)
        assert r.status == 200
        objects = [row["object"] for row in r.json()["rows"]]
        want = [
            {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1", **item} for item in items
        ]
        assert [o["metadata"]["name"] for o in objects] == ["db", "web"]
        assert objects == want
        r = await fetch(f"{BASE}/v1/nodes/node-b?includeObject=Object", accept=TABLE)
        node = (await fetch(f"{BASE}/v1/nodes/node-b")).json()
        assert [row["object"] for row in r.json()["rows"]] == [node]

        for query in ("", "?includeObject=Metadata"):
            rows = (await fetch(f"{path}{query}", accept=TABLE)).json()["rows"]
            assert [row["object"]["kind"] for row in rows] == ["PartialObjectMetadata"] * 2
        rows = (await fetch(f"{path}?includeObject=None", accept=TABLE)).json()["rows"]
        assert [row["object"] for row in rows] == [None, None]
        assert [row["cells"][0] for row in rows] == ["db", "web"]

        r = await fetch(f"{path}?includeObject=Everything", accept=TABLE)
        assert r.status == 400
        assert r.json()["message"] == 'unrecognized includeObject value: "Everything"'
        # Only Tables carry row objects: other encodings ignore the parameter.
        assert (await fetch(f"{path}?includeObject=Everything")).status == 200

    run(Env(), scenario)


# --- discovery, version, openapi -----------------------------------------------------------------


def test_discovery_version_and_openapi_over_http() -> None:
    async def scenario(fetch: Fetch) -> None:
        for path in ("/apis", "/apis/"):
            r = await fetch(path)
            assert r.json()["kind"] == "APIGroupList"
        assert (await fetch(f"{BASE}")).json()["preferredVersion"]["version"] == "v1"
        for v in ("v1beta1", "v1"):
            for path in (f"{BASE}/{v}", f"{BASE}/{v}/"):
                body = (await fetch(path)).json()
                assert body["groupVersion"] == f"metrics.k8s.io/{v}"
                assert [(x["name"], x["namespaced"]) for x in body["resources"]] == [
                    ("nodes", False),
                    ("pods", True),
                ]
        assert (await fetch("/version")).json()["gitVersion"] == "v0.1.0"
        root = (await fetch("/")).json()["paths"]
        assert {
            "/apis",
            "/healthz",
            "/livez",
            "/readyz",
            "/metrics",
            "/openapi/v2",
            "/version",
        } <= (set(root))
        assert "/apis/metrics.k8s.io/v1beta1" in root

        r = await fetch("/openapi/v2")
        assert r.status == 200
        etag = r.headers["ETag"]
        assert orjson.loads(r.body)["swagger"] == "2.0"
        r = await fetch("/openapi/v2", **{"If-None-Match": etag})
        assert r.status == 304

        index = (await fetch("/openapi/v3")).json()
        url = index["paths"]["apis/metrics.k8s.io/v1beta1"]["serverRelativeURL"]
        r = await fetch(url)
        assert r.status == 200
        assert r.headers["Cache-Control"] == "public, immutable"
        assert orjson.loads(r.body)["openapi"] == "3.0.0"
        r = await fetch("/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=stale")
        assert r.status == 301
        assert r.headers["Location"] == url
        r = await fetch("/openapi/v3/apis/metrics.k8s.io/v1")
        assert r.status == 200
        assert r.headers["Cache-Control"] == "no-cache, private"

    run(Env(), scenario)


# --- health and /metrics through the whole app ---------------------------------------------------


def test_health_and_metrics_through_the_app() -> None:
    env = Env()

    async def scenario(fetch: Fetch) -> None:
        r = await fetch("/readyz")
        assert (r.status, r.body) == (200, b"ok")
        env.shutdown.begin()
        r = await fetch("/readyz")
        assert r.status == 500
        assert r.body.endswith(b"[-]shutdown failed: reason withheld\nreadyz check failed\n")
        assert (await fetch("/livez")).status == 200

        # every returned item is one freshness observation; errors and empty lists add none
        await fetch(f"{BASE}/v1/nodes")  # 2 items, ages 25 s
        await fetch(f"{BASE}/v1/pods")  # 3 items, ages 25.2, 25, 25.3 s
        await fetch(f"{BASE}/v1/namespaces/default/pods/web", accept=PROTOBUF)  # 1
        await fetch(f"{BASE}/v1/nodes/nope")
        await fetch(f"{BASE}/v1/namespaces/empty/pods")
        r = await fetch("/metrics")
        assert r.status == 200
        assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        fams = {f.name: f for f in text_string_to_metric_families(r.body.decode())}
        fresh = fams["metrics_server_api_metric_freshness_seconds"].samples
        count = [s.value for s in fresh if s.name.endswith("_count")]
        total = [s.value for s in fresh if s.name.endswith("_sum")]
        assert count == [6]
        assert total[0] == pytest.approx(25 + 25 + 25.2 + 25 + 25.3 + 25.2)

    run(env, scenario)


# --- the security slot -------------------------------------------------------------------------


class RecordingAuthorizer:
    def __init__(self, deny: set[str]) -> None:
        self.deny = deny
        self.seen: list[RequestAttributes] = []

    async def authorize(self, attributes: RequestAttributes) -> Decision:
        self.seen.append(attributes)
        if attributes.resource in self.deny or attributes.path in self.deny:
            return Decision(False, "no RBAC policy matched")
        return Decision(True)


def test_authorizer_sees_kube_request_attributes_and_denies_with_403() -> None:
    authz = RecordingAuthorizer(deny={"nodes", "/metrics"})
    env = Env(authorizer=authz)

    async def scenario(fetch: Fetch) -> None:
        r = await fetch(f"{BASE}/v1beta1/nodes/node-a")
        assert r.status == 403
        assert r.json() == status_body(
            403,
            "Forbidden",
            'nodes.metrics.k8s.io "node-a" is forbidden: User "system:anonymous" cannot get '
            'resource "nodes" in API group "metrics.k8s.io" at the cluster scope: '
            "no RBAC policy matched",
            {"name": "node-a", "group": "metrics.k8s.io", "kind": "nodes"},
        )
        r = await fetch("/metrics")
        assert r.status == 403
        assert r.json()["message"] == (
            'forbidden: User "system:anonymous" cannot get path "/metrics": no RBAC policy matched'
        )
        assert (await fetch(f"{BASE}/v1beta1/namespaces/default/pods/web")).status == 200
        assert (await fetch(f"{BASE}/v1/pods?watch=1")).status == 405  # authorized, then 405
        assert (await fetch(f"{BASE}/v1beta1/namespaces/default/pods")).status == 200
        assert (await fetch(f"{BASE}/v1beta1")).status == 200
        assert (await fetch("/readyz")).status == 200

    run(env, scenario)
    anon = UserInfo("system:anonymous", ("system:unauthenticated",))
    got = [
        (a.verb, a.resource_request, a.resource, a.namespace, a.name, a.api_version)
        for a in authz.seen
    ]
    assert got == [
        ("get", True, "nodes", "", "node-a", "v1beta1"),
        ("get", False, "", "", "", ""),
        ("get", True, "pods", "default", "web", "v1beta1"),
        ("watch", True, "pods", "", "", "v1"),
        ("list", True, "pods", "default", "", "v1beta1"),
        ("get", False, "", "", "", ""),
        ("get", False, "", "", "", ""),
    ]
    assert all(a.user == anon for a in authz.seen)
    assert all(a.api_group == "metrics.k8s.io" for a in authz.seen if a.resource_request)
    assert [a.path for a in authz.seen if not a.resource_request] == [
        "/metrics",
        f"{BASE}/v1beta1",
        "/readyz",
    ]


def test_authorizer_sees_the_name_a_list_field_selector_pins() -> None:
    """kube-apiserver's RequestInfo: a list whose fieldSelector requires metadata.name carries
    that name (so RBAC resourceNames apply); other selectors, `!=`, malformed selectors and
    names that are no path segment carry none."""
    authz = RecordingAuthorizer(deny=set())
    env = Env(authorizer=authz)
    queries = {
        "metadata.name=web": "web",
        "metadata.name==web,metadata.namespace=default": "web",
        "metadata.namespace=default,metadata.name=web": "web",
        "metadata.name!=web": "",
        "metadata.namespace=default": "",
        "metadata.name=a%2Fb": "",
        "metadata.name=..": "",
        "metadata.name=a\\,b": "a,b",
        "metadata.name=a\\q": "",
        "nonsense": "",
    }

    async def scenario(fetch: Fetch) -> None:
        for selector in queries:
            q = urllib.parse.quote(selector, safe="")
            await fetch(f"{BASE}/v1beta1/namespaces/default/pods?fieldSelector={q}")
        r = await fetch(f"{BASE}/v1/nodes?fieldSelector=metadata.name%3Dnode-a&watch=true")
        assert r.status == 405
        r = await fetch(f"{BASE}/v1beta1/namespaces/default/pods?fieldSelector=metadata.name%3Dweb")
        assert [i["metadata"]["name"] for i in r.json()["items"]] == ["web"]

    run(env, scenario)
    got = [(a.verb, a.resource, a.name) for a in authz.seen]
    want = [("list", "pods", name) for name in queries.values()]
    want += [("watch", "nodes", "node-a"), ("list", "pods", "web")]
    assert got == want


class FailingAuthenticator:
    async def authenticate(self, request: aiohttp.web.Request) -> UserInfo:
        from kubemetrics.api.hooks import AuthenticationError

        if request.headers.get("Authorization") == "Bearer bad":
            raise AuthenticationError("token review said no")
        return UserInfo("alice", ("system:authenticated",))


def test_failed_authentication_is_401() -> None:
    env = Env()

    async def main() -> None:
        deps = env.deps()
        deps = ApiDependencies(**{**deps.__dict__, "authenticator": FailingAuthenticator()})
        runner = aiohttp.web.AppRunner(build_app(deps))
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as s:
                url = f"http://127.0.0.1:{port}{BASE}/v1/nodes"
                async with s.get(url, headers={"Authorization": "Bearer bad"}) as r:
                    assert r.status == 401
                    assert orjson.loads(await r.read()) == status_body(
                        401, "Unauthorized", "Unauthorized", None
                    )
                async with s.get(url) as r:
                    assert r.status == 200
        finally:
            await runner.cleanup()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_large_answers_are_built_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubemetrics.api import routes

    offloaded: list[str] = []
    real = asyncio.to_thread

    async def spy(fn: Callable[..., Any], /, *args: Any) -> Any:
        offloaded.append(getattr(fn, "__name__", None) or fn.func.__name__)  # type: ignore[attr-defined]
        return await real(fn, *args)

    monkeypatch.setattr(routes.asyncio, "to_thread", spy)
    monkeypatch.setattr(routes, "OFFLOAD_ITEMS", 2)

    async def scenario(fetch: Fetch) -> None:
        assert (await fetch(f"{BASE}/v1/pods")).json() == lst(
            "PodMetricsList", "v1", [DB, WEB, COREDNS]
        )
        assert (await fetch(f"{BASE}/v1/nodes")).json() == lst(
            "NodeMetricsList", "v1", [NODE_A, NODE_B]
        )
        # one candidate: answered inline
        assert (await fetch(f"{BASE}/v1/nodes?labelSelector=zone%3Da")).json()["items"] == [NODE_A]

    run(Env(), scenario)
    # Selection and encoding are one native call (`Query.respond`), offloaded by the query's
    # cost: 3 pods and 2 nodes are over the lowered threshold, one zone=a node is not.
    assert offloaded == ["respond", "respond"]


# --- peer points (--sharding=lease) ---------------------------------------------------------


def test_peer_points_are_served_to_callers_allowed_get_nodes_metrics() -> None:
    box: dict[str, bytes | None] = {"points": None}
    authz = RecordingAuthorizer(deny=set())
    env = Env(authorizer=authz, peer_points=lambda: box["points"])

    async def scenario(fetch: Fetch) -> None:
        r = await fetch("/shard/v1/points")
        assert r.status == 503 and r.json()["reason"] == "ServiceUnavailable"
        box["points"] = b"KMPT\x01\x01..."
        r = await fetch("/shard/v1/points")
        assert r.status == 200 and r.body == b"KMPT\x01\x01..."
        assert r.headers["Content-Type"] == "application/vnd.kubemetrics.points"
        authz.deny = {"nodes"}
        r = await fetch("/shard/v1/points")
        assert r.status == 403
        assert r.json()["message"].startswith(
            'nodes is forbidden: User "system:anonymous" cannot get resource "nodes/metrics"'
        ), r.json()

    run(env, scenario)
    # What a kubelet asks of a metrics scraper: no new verb, no open endpoint.
    assert {
        (a.verb, a.resource_request, a.api_group, a.resource, a.subresource, a.name)
        for a in authz.seen
    } == {("get", True, "", "nodes", "metrics", "")}


def test_without_sharding_there_is_no_points_path() -> None:
    async def scenario(fetch: Fetch) -> None:
        assert (await fetch("/shard/v1/points")).status == 404

    run(Env(), scenario)
