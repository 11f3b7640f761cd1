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

    def __init__(self, workdir: Path, front_proxy_ca: str) -> None:
        self.ca = Authority.create("backend-ca")
        cert, key = self.ca.issue("metrics-backend", ips=("127.0.0.1",), server=True)
        (workdir / "b.crt").write_bytes(cert)
        (workdir / "b.key").write_bytes(key)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(workdir / "b.crt", workdir / "b.key")
        self.ctx.verify_mode = ssl.CERT_REQUIRED  # only the front proxy may call
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
