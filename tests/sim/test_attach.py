"""The simulator's attach mode without a real API server: the mirror's requests, workload load,
kubelet review caching (the real-cluster tier runs all of it against kube-apiserver)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubemetrics_sim.attach import ApiClient, Mirror, RemoteAuth, StoreTap, Workloads
from kubemetrics_sim.cluster import Cluster, Config
from tests.helpers.kube import run


class FakeApi:
    """Records calls; answers TokenReview/SubjectAccessReview from `users`/`allowed`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.users: dict[str, str] = {"good": "system:serviceaccount:kube-system:metrics-server"}
        self.allowed: set[str] = {"system:serviceaccount:kube-system:metrics-server"}
        self.requests = 0

    async def call(self, method: str, path: str, body: Any = None, **_: Any) -> tuple[int, Any]:
        self.calls.append((method, path, body))
        if path.endswith("/tokenreviews"):
            user = self.users.get(body["spec"]["token"])
            if user is None:
                return 201, {"status": {"authenticated": False}}
            return 201, {"status": {"authenticated": True, "user": {"username": user}}}
        if path.endswith("/subjectaccessreviews"):
            return 201, {"status": {"allowed": body["spec"]["user"] in self.allowed}}
        return 201, {}


def cluster(tmp_path: Path, nodes: int = 2, pods: int = 3) -> Cluster:
    c = Cluster(Config(nodes=nodes, pods_per_node=pods, state_dir=tmp_path))
    c.make_pki()
    c.build()
    return c


def mirror_of(c: Cluster, api: FakeApi) -> Mirror:
    m = Mirror(c, api)  # type: ignore[arg-type]
    c.store.watchers.add(StoreTap(m))  # type: ignore[arg-type]
    return m


async def settle(m: Mirror) -> None:
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        await m.idle.wait()


def test_mirror_creates_nodes_and_pods_then_only_what_changed(tmp_path: Path) -> None:
    c = cluster(tmp_path)
    api = FakeApi()

    async def main() -> None:
        m = mirror_of(c, api)
        m.start()
        await settle(m)
        posts = [p for meth, p, _ in api.calls if meth == "POST"]
        assert posts.count("/api/v1/nodes") == 2
        pod_posts = [p for p in posts if p.endswith("/pods")]
        assert len(pod_posts) == len(c.pods) == 6
        patches = [(p, b) for meth, p, b in api.calls if meth == "PATCH"]
        assert len(patches) == 6 and all(p.endswith("/status") for p, _ in patches)
        assert {b["status"]["phase"] for _, b in patches} == {"Running"}
        # Pods carry no ownerReferences: the simulator's ReplicaSets are not in the API server.
        bodies = [b for meth, p, b in api.calls if meth == "POST" and p.endswith("/pods")]
        assert all("ownerReferences" not in b["metadata"] for b in bodies)
        assert all(b["spec"]["nodeName"] in c.nodes for b in bodies)

        # A restart changes only that pod's status; a delete is one DELETE with grace 0.
        api.calls.clear()
        ns, name = next(k for k in c.pods if k[0] != "kube-system")
        before = c.pods[(ns, name)].containers[0].restarts
        c.restart_container(ns, name, None)
        await settle(m)
        assert [(meth, p) for meth, p, _ in api.calls] == [
            ("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status")
        ]
        statuses = api.calls[0][2]["status"]["containerStatuses"]
        assert statuses[0]["restartCount"] == before + 1  # shown at once, as the store has it
        api.calls.clear()
        c.delete_pod(ns, name)
        await settle(m)
        assert [(meth, p, b["gracePeriodSeconds"]) for meth, p, b in api.calls] == [
            ("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}", 0)
        ]
        await m.stop()

    run(main())


def test_adopted_pods_are_not_created_again(tmp_path: Path) -> None:
    c = cluster(tmp_path, nodes=1, pods=0)
    api = FakeApi()

    async def main() -> None:
        m = mirror_of(c, api)
        m.start()
        await settle(m)
        api.calls.clear()
        m.adopted.add(("hpa", "load-abc"))
        c.create_pod(
            {
                "namespace": "hpa",
                "name": "load-abc",
                "node": "node-0001",
                "app": "load",
                "labels": {"app": "load"},
                "containers": [{"name": "app"}],
                "start_delay": 0,
            }
        )
        await settle(m)
        methods = [(meth, p) for meth, p, _ in api.calls]
        assert methods == [("PATCH", "/api/v1/namespaces/hpa/pods/load-abc/status")]
        await m.stop()

    run(main())


def test_workload_total_is_spread_over_its_running_pods(tmp_path: Path) -> None:
    c = cluster(tmp_path, nodes=2, pods=0)
    for i in range(3):
        c.create_pod(
            {
                "namespace": "hpa",
                "name": f"load-{i}",
                "node": f"node-000{1 + i % 2}",
                "app": "load",
                "labels": {"app": "load"},
                "containers": [{"name": "app"}],
                "start_delay": 0,
            }
        )
    w = Workloads(c)
    r = w.set("hpa", "load", 300_000_000, 32 << 20)
    assert r["pods"] == 3 and r["cpu_nanocores_per_container"] == 100_000_000
    assert {p.containers[0].pattern.cpu for p in w.pods("hpa", "load")} == {100_000_000}
    c.delete_pod("hpa", "load-0")
    assert w.rebalance("hpa", "load")["cpu_nanocores_per_container"] == 150_000_000
    assert {p.containers[0].pattern.mem for p in w.pods("hpa", "load")} == {32 << 20}


def test_kubelet_reviews_are_cached_and_denials_are_403_or_401() -> None:
    api = FakeApi()
    auth = RemoteAuth(api)  # type: ignore[arg-type]

    async def main() -> None:
        assert await auth.review("good", "", (), "node-0001") == (
            200,
            "system:serviceaccount:kube-system:metrics-server",
        )
        n = len(api.calls)
        assert await auth.review("good", "", (), "node-0001") == (
            200,
            "system:serviceaccount:kube-system:metrics-server",
        )
        assert len(api.calls) == n  # cached, as the kubelet's webhook caches do
        assert (await auth.review("bad", "", (), "node-0001"))[0] == 401
        api.users["other"] = "alice"
        assert await auth.review("other", "", (), "node-0001") == (403, "alice")
        # A client certificate (verified by TLS) skips the TokenReview.
        api.calls.clear()
        assert (await auth.review("", "kubernetes-admin", ("system:masters",), "node-0002"))[
            0
        ] == 403
        assert [p for _, p, _ in api.calls] == [
            "/apis/authorization.k8s.io/v1/subjectaccessreviews"
        ]

    run(main())


def test_api_client_retries_then_reports_the_status() -> None:
    """Transient 5xx are retried a bounded number of times, then surface as ApiFailure."""
    from aiohttp import web

    from kubemetrics_sim.attach import RETRIES, ApiFailure, Kubeconfig

    async def main() -> None:
        hits = 0

        async def handler(request: web.Request) -> web.Response:
            nonlocal hits
            hits += 1
            return web.Response(status=503, text="busy")

        app = web.Application()
        app.router.add_get("/x", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        import ssl

        client = ApiClient(Kubeconfig(f"http://127.0.0.1:{port}", ssl.create_default_context(), ""))
        try:
            try:
                await client.call("GET", "/x")
            except ApiFailure as e:
                assert e.status == 503
            else:
                raise AssertionError("no ApiFailure")
            assert hits == RETRIES
        finally:
            await client.close()
            await runner.cleanup()

    run(main(), timeout=120)
