"""The metrics.k8s.io aggregation proxy: identity headers, front-proxy certificate, errors."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kubemetrics_sim.certs import Authority
from kubemetrics_sim.launch import SimProcess


class Backend:
    """An HTTPS backend that records what the aggregator sends, in its own thread and loop."""

    def __init__(self, workdir: Path, front_proxy_ca: str, name: str = "b") -> None:
        self.ready = True  # what /readyz answers
        self.ca = Authority.create("backend-ca")
        cert, key = self.ca.issue("metrics-backend", ips=("127.0.0.1",), server=True)
        (workdir / f"{name}.crt").write_bytes(cert)
        (workdir / f"{name}.key").write_bytes(key)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(workdir / f"{name}.crt", workdir / f"{name}.key")
        # Only the front proxy may call the API; probes (no certificate) reach /readyz only.
        self.ctx.verify_mode = ssl.CERT_OPTIONAL
        self.ctx.load_verify_locations(cafile=front_proxy_ca)
        self.seen: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        if request.path == "/readyz":
            return web.Response(status=200 if self.ready else 500, text="ok")
        if not peer:
            return web.Response(status=401)
        cn = dict(x[0] for x in peer["subject"])["commonName"] if peer else ""
        self.seen.append(
            {
                "path": request.path_qs,
                "accept": request.headers.get("Accept"),
                "user": request.headers.getall("X-Remote-User", []),
                "groups": request.headers.getall("X-Remote-Group", []),
                "authorization": request.headers.get("Authorization"),
                "peer": cn,
            }
        )
        if request.path.rstrip("/") == "/apis/metrics.k8s.io/v1beta1":
            body: dict[str, Any] = {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": "metrics.k8s.io/v1beta1",
                "resources": [
                    {
                        "name": "pods",
                        "singularName": "",
                        "namespaced": True,
                        "kind": "PodMetrics",
                        "verbs": ["get", "list"],
                    },
                ],
            }
        else:
            body = {
                "kind": "PodMetricsList",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": [],
            }
        return web.json_response(body)

    def start(self) -> None:
        async def go() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            self.runner = web.AppRunner(app, access_log=None)
            await self.runner.setup()
            await web.SockSite(self.runner, self.sock, ssl_context=self.ctx).start()

        self.thread.start()
        asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess(tmp_path_factory.mktemp("sim"), nodes=2, pods_per_node=3, seed=9) as s:
        yield s


@pytest.fixture(scope="module")
def backend(sim: SimProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    b = Backend(tmp_path_factory.mktemp("backend"), sim.file("front_proxy_ca"))
    b.start()
    sim.set_backend(b.url, ca_pem=b.ca.cert_pem.decode())
    try:
        yield b
    finally:
        b.stop()


def test_proxied_request_carries_identity_not_credentials(
    sim: SimProcess, backend: Backend
) -> None:
    backend.seen.clear()
    accept = "application/vnd.kubernetes.protobuf, */*"
    status, _, body = sim.request(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/team-a/pods?labelSelector=app%3Dweb",
        token=sim.token("viewer"),
        headers={"Accept": accept, "X-Remote-User": "system:admin", "X-Remote-Group": "evil"},
    )
    assert status == 200, body
    assert json.loads(body)["kind"] == "PodMetricsList"
    [seen] = backend.seen
    assert seen == {
        "path": "/apis/metrics.k8s.io/v1beta1/namespaces/team-a/pods?labelSelector=app%3Dweb",
        "accept": accept,
        "user": ["viewer"],
        "groups": ["viewers", "system:authenticated"],
        "authorization": None,
        "peer": "front-proxy-client",
    }


def test_apiserver_authorizes_before_proxying(sim: SimProcess, backend: Backend) -> None:
    backend.seen.clear()
    status, _, body = sim.request(
        "GET", "/apis/metrics.k8s.io/v1beta1/pods", token=sim.token("viewer")
    )
    assert status == 403
    assert json.loads(body)["message"].startswith(
        'pods.metrics.k8s.io is forbidden: User "viewer" cannot list resource "pods"'
    )
    status, _, _ = sim.request("GET", "/apis/metrics.k8s.io/v1beta1/pods", token="bogus")
    assert status == 401
    assert backend.seen == []


def test_group_discovery_prefers_v1(sim: SimProcess, backend: Backend) -> None:
    groups = {g["name"]: g for g in sim.api("/apis")["groups"]}
    mg = groups["metrics.k8s.io"]
    assert [v["version"] for v in mg["versions"]] == ["v1", "v1beta1"]
    assert mg["preferredVersion"]["version"] == "v1"
    assert sim.api("/apis/metrics.k8s.io")["preferredVersion"]["groupVersion"] == (
        "metrics.k8s.io/v1"
    )


def test_kubectl_through_the_aggregator(sim: SimProcess, backend: Backend) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    base = [kubectl, "--cache-dir", str(sim.state_dir / "kc-agg")]
    r = subprocess.run(
        [*base, "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/team-a/pods"],
        env=sim.env("viewer"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["kind"] == "PodMetricsList"
    r = subprocess.run(
        [*base, "auth", "can-i", "list", "pods.metrics.k8s.io", "-n", "team-a"],
        env=sim.env("viewer"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.stdout.strip() == "yes", r.stderr


def test_backend_certificate_is_verified(sim: SimProcess, backend: Backend) -> None:
    try:
        # The cluster CA did not sign the backend's certificate: no connection, 503.
        sim.set_backend(backend.url)
        status, _, body = sim.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
        st = json.loads(body)
        assert status == 503 and st["kind"] == "Status" and st["reason"] == "ServiceUnavailable"
        assert "certificate" in st["message"].lower()
        sim.set_backend(backend.url, insecure=True)
        assert sim.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")[0] == 200
    finally:
        sim.set_backend(backend.url, ca_pem=backend.ca.cert_pem.decode())


def test_backend_not_answering_is_503(sim: SimProcess, backend: Backend) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    try:
        sim.set_backend(f"https://127.0.0.1:{dead}", insecure=True)
        status, _, body = sim.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
        assert status == 503
        assert json.loads(body)["code"] == 503
    finally:
        sim.set_backend(backend.url, ca_pem=backend.ca.cert_pem.decode())


def test_without_backend_the_group_is_gone(sim: SimProcess, backend: Backend) -> None:
    try:
        sim.clear_backend()
        assert "metrics.k8s.io" not in {g["name"] for g in sim.api("/apis")["groups"]}
        assert sim.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")[0] == 404
    finally:
        sim.set_backend(backend.url, ca_pem=backend.ca.cert_pem.decode())


# --- several endpoints: EndpointSlices, probes, spreading ---------------------------------------


def _slices(sim: SimProcess) -> list[dict[str, Any]]:
    path = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
    items = sim.api(f"{path}?labelSelector=kubernetes.io%2Fservice-name%3Dmetrics-server")["items"]
    return list(items)


def _ready_ports(sim: SimProcess) -> set[int]:
    out = set()
    for s in _slices(sim):
        for e in s["endpoints"]:
            if e["conditions"]["ready"]:
                out.add(s["ports"][0]["port"])
    return out


def _until(check: Any, timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_requests_spread_over_endpoints_and_a_dead_one_is_dropped(
    sim: SimProcess, backend: Backend, tmp_path: Path
) -> None:
    others = [Backend(tmp_path, sim.file("front_proxy_ca"), name=f"b{i}") for i in (1, 2)]
    for b in others:
        b.start()
    bundle = "".join(b.ca.cert_pem.decode() for b in (backend, *others))
    urls = [b.url for b in (backend, *others)]
    try:
        sim.set_backend(urls, ca_pem=bundle, readiness_path="/readyz", probe_period=0.2)
        ports = {b.port for b in (backend, *others)}
        _until(lambda: _ready_ports(sim) == ports)
        # One slice per port, as the EndpointSlice controller groups endpoints.
        assert {s["ports"][0]["port"] for s in _slices(sim)} == ports
        for b in (backend, *others):
            b.seen.clear()
        for _ in range(60):
            status, _, _ = sim.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
            assert status == 200
        counts = [len(b.seen) for b in (backend, *others)]
        assert sum(counts) == 60 and min(counts) > 0, counts  # P(an endpoint idle) ~ 3e-11

        # A backend that stops answering its readiness probe leaves the slices and gets nothing.
        others[0].ready = False
        _until(lambda: others[0].port not in _ready_ports(sim))
        # Its process dying drops the other at once (the first failed probe).
        others[1].stop()
        _until(lambda: _ready_ports(sim) == {backend.port})
        states = {e["url"]: e for e in (sim.aggregator() or {})["endpoint_states"]}
        assert states[others[0].url]["failures"] >= 3  # the failure threshold was waited for
        for b in (backend, *others):
            b.seen.clear()
        for _ in range(20):
            assert sim.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")[0] == 200
        assert (len(backend.seen), len(others[0].seen)) == (20, 0)

        # Readiness comes back: so does traffic; a removed endpoint leaves the slices.
        others[0].ready = True
        _until(lambda: _ready_ports(sim) == {backend.port, others[0].port})
        sim.remove_endpoint(others[0].url)
        assert _ready_ports(sim) == {backend.port}
        sim.add_endpoint(others[0].url)
        _until(lambda: _ready_ports(sim) == {backend.port, others[0].port})
    finally:
        others[0].stop()
        sim.set_backend(backend.url, ca_pem=backend.ca.cert_pem.decode())


def test_no_ready_endpoint_is_503(sim: SimProcess, backend: Backend) -> None:
    try:
        backend.ready = False
        sim.set_backend(
            backend.url,
            ca_pem=backend.ca.cert_pem.decode(),
            readiness_path="/readyz",
            probe_period=0.2,
        )
        _until(lambda: not _ready_ports(sim))
        status, _, body = sim.request("GET", "/apis/metrics.k8s.io/v1beta1/nodes")
        st = json.loads(body)
        assert status == 503 and "no endpoints available" in st["message"], st
    finally:
        backend.ready = True
        sim.set_backend(backend.url, ca_pem=backend.ca.cert_pem.decode())
