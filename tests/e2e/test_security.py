"""Delegated security end to end: the simulator's API server (TokenReview, SubjectAccessReview,
RBAC, the authentication ConfigMap, the aggregator with its front-proxy certificate) and a real
`python -m kubemetrics`, reached through the aggregator with real `kubectl` and directly over
HTTPS with tokens, client certificates and forged identity headers.

This module starts its own simulator and server (it changes RBAC and the ConfigMap).
"""

from __future__ import annotations

import http.client
import json
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubemetrics_sim.certs import Authority
from kubemetrics_sim.launch import ServerProcess, SimProcess
from tests.helpers.e2e import KUBECTL, REFRESH_MS, tail

GROUP = "/apis/metrics.k8s.io"
NS = "team-a"  # the simulator's viewer may read pods (and pod metrics) here only


@dataclass
class Env:
    sim: SimProcess
    server: ServerProcess
    root: Path
    pod: str  # a pod in NS that is being served

    def direct(
        self,
        path: str,
        *,
        token: str | None = None,
        cert: tuple[str, str] | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> tuple[int, Any]:
        """GET straight to kubemetrics (not through the aggregator)."""
        ctx = ssl.create_default_context(cafile=str(self.server.cert_file))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        c = http.client.HTTPSConnection(self.server.host, self.server.port, context=ctx, timeout=30)
        try:
            c.putrequest("GET", path)
            for k, v in headers or []:
                c.putheader(k, v)
            if token is not None:
                c.putheader("Authorization", f"Bearer {token}")
            c.endheaders()
            r = c.getresponse()
            body = r.read()
        finally:
            c.close()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body.decode(errors="replace")

    def kubectl(self, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, "--cache-dir", str(self.root / f"kubectl-cache-{user}"), *args],
            env=self.sim.env(user),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def admin_cert(self) -> tuple[str, str]:
        return self.sim.file("admin_cert"), self.sim.file("admin_key")

    def proxy_cert(self) -> tuple[str, str]:
        return self.sim.file("front_proxy_client_cert"), self.sim.file("front_proxy_client_key")

    def add_user(self, groups: tuple[str, ...] = ()) -> tuple[str, str]:
        name = f"user-{secrets.token_hex(4)}"
        token = f"{name}-{secrets.token_hex(8)}"
        self.sim.control("POST", "rbac/users", {"name": name, "token": token, "groups": groups})
        return name, token


def _start_server(sim: SimProcess, workdir: Path, *extra: str) -> ServerProcess:
    kubeconfig = sim.kubeconfig("metrics-server")
    return ServerProcess(
        workdir,
        [
            f"--kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            f"--cert-dir={workdir / 'certs'}",
            "--metric-resolution=2s",
            "--kubelet-preferred-address-types=InternalIP",
            "--kubelet-use-node-status-port",
            # no --kubelet-certificate-authority: kubelets are verified with the cluster CA
            *extra,
        ],
    ).start()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("security")
    sim = SimProcess(root / "sim", nodes=2, pods_per_node=3, seed=5, refresh_ms=REFRESH_MS).start()
    server: ServerProcess | None = None
    try:
        pod = sim.create_pod(namespace=NS, name="web-0")["name"]
        server = _start_server(sim, root / "server")
        sim.set_backend(f"https://{server.host}:{server.port}", ca_pem=server.cert_file.read_text())
        e = Env(sim, server, root, pod)
        deadline = time.monotonic() + 60
        while True:
            status, body = e.direct(f"{GROUP}/v1beta1/namespaces/{NS}/pods", cert=e.admin_cert())
            if status == 200 and any(i["metadata"]["name"] == pod for i in body["items"]):
                break
            assert time.monotonic() < deadline, f"{status} {body}\n{tail(server.log())}"
            time.sleep(0.3)
        yield e
    finally:
        if server is not None:
            server.stop()
        sim.stop()


def _names(body: dict[str, Any]) -> set[str]:
    return {i["metadata"]["name"] for i in body["items"]}


# --- through the aggregator, with kubectl --------------------------------------------------------


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_kubectl_admin_reads_everything_and_viewer_only_its_namespace(env: Env) -> None:
    top_nodes = env.kubectl("admin", "top", "nodes", "--no-headers")
    assert top_nodes.returncode == 0, top_nodes.stderr
    assert {ln.split()[0] for ln in top_nodes.stdout.splitlines()} == set(env.sim.info["nodes"])
    top_all = env.kubectl("admin", "top", "pods", "-A", "--no-headers")
    assert top_all.returncode == 0, top_all.stderr
    assert env.pod in top_all.stdout

    # The aggregator forwards the viewer over the front-proxy certificate; kubemetrics asks
    # SubjectAccessReview for the viewer and serves the namespace.
    mine = env.kubectl("viewer", "top", "pods", "-n", NS, "--no-headers")
    assert mine.returncode == 0, mine.stderr
    assert env.pod in mine.stdout
    for args in (("top", "pods", "-n", "kube-system"), ("top", "nodes")):
        r = env.kubectl("viewer", *args)
        assert r.returncode != 0 and "forbidden" in r.stderr.lower(), (args, r.stdout, r.stderr)
    r = env.kubectl("nobody", "top", "pods", "-n", NS)
    assert r.returncode != 0 and "forbidden" in r.stderr.lower(), r.stderr


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_kubectl_straight_to_kubemetrics_with_a_bearer_token(env: Env) -> None:
    """kubectl pointed at kubemetrics itself: the token goes through TokenReview."""
    kubeconfig = env.root / "direct-viewer.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "km",
                        "cluster": {
                            "server": f"https://{env.server.host}:{env.server.port}",
                            "certificate-authority": str(env.server.cert_file),
                        },
                    }
                ],
                "users": [{"name": "viewer", "user": {"token": env.sim.token("viewer")}}],
                "contexts": [{"name": "km", "context": {"cluster": "km", "user": "viewer"}}],
                "current-context": "km",
            }
        )
    )
    assert KUBECTL is not None

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [KUBECTL, f"--kubeconfig={kubeconfig}", "--cache-dir", str(env.root / "kc"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    ok = kubectl("get", "--raw", f"{GROUP}/v1beta1/namespaces/{NS}/pods")
    assert ok.returncode == 0, ok.stderr
    assert env.pod in _names(json.loads(ok.stdout))
    denied = kubectl("get", "--raw", f"{GROUP}/v1beta1/nodes")
    assert denied.returncode != 0
    assert 'User \\"viewer\\" cannot list resource \\"nodes\\"' in denied.stderr or (
        'User "viewer" cannot list resource "nodes"' in denied.stderr
    ), denied.stderr


# --- straight to kubemetrics ---------------------------------------------------------------------


def test_bearer_tokens_are_reviewed_and_authorized(env: Env) -> None:
    viewer = env.sim.token("viewer")
    status, body = env.direct(f"{GROUP}/v1beta1/namespaces/{NS}/pods", token=viewer)
    assert status == 200 and env.pod in _names(body)
    status, body = env.direct(f"{GROUP}/v1/namespaces/{NS}/pods/{env.pod}", token=viewer)
    assert status == 200 and body["metadata"]["name"] == env.pod
    for path, msg in (
        (
            f"{GROUP}/v1beta1/namespaces/kube-system/pods",
            'pods.metrics.k8s.io is forbidden: User "viewer" cannot list resource "pods" in API '
            'group "metrics.k8s.io" in the namespace "kube-system"',
        ),
        (
            f"{GROUP}/v1beta1/nodes",
            'nodes.metrics.k8s.io is forbidden: User "viewer" cannot list resource "nodes" in API '
            'group "metrics.k8s.io" at the cluster scope',
        ),
    ):
        status, body = env.direct(path, token=viewer)
        assert (status, body["reason"], body["message"]) == (403, "Forbidden", msg)
    # an authenticated user without rights
    status, body = env.direct(
        f"{GROUP}/v1beta1/namespaces/{NS}/pods", token=env.sim.token("nobody")
    )
    assert status == 403 and 'User "nobody"' in body["message"]
    # a token TokenReview rejects is 401, not anonymous
    status, body = env.direct(f"{GROUP}/v1beta1/nodes", token="not-a-token")
    assert (status, body["reason"]) == (401, "Unauthorized")


def test_forged_identity_headers_without_the_front_proxy_certificate(env: Env) -> None:
    forged = [("X-Remote-User", "kubernetes-admin"), ("X-Remote-Group", "system:masters")]
    path = f"{GROUP}/v1beta1/nodes"
    status, body = env.direct(path, headers=forged)
    assert status == 403 and 'User "system:anonymous"' in body["message"]
    # with someone's bearer token, that someone (not the header) is the user
    status, body = env.direct(path, headers=forged, token=env.sim.token("viewer"))
    assert status == 403 and 'User "viewer"' in body["message"]
    # with a client certificate from the client CA, the certificate's CN is the user
    status, body = env.direct(path, headers=forged, cert=env.admin_cert())
    assert status == 200  # kubernetes-admin is in system:masters by its certificate's O


def test_front_proxy_identity_and_the_availability_probe(env: Env) -> None:
    proxy = env.proxy_cert()
    before = env.sim.reviews()
    status, body = env.direct(
        f"{GROUP}/v1beta1",
        cert=proxy,
        headers=[("X-Remote-User", "system:kube-aggregator"), ("X-Remote-Group", "system:masters")],
    )
    assert status == 200 and body["kind"] == "APIResourceList"
    assert env.sim.reviews().get("subjectaccessreviews", 0) == before.get("subjectaccessreviews", 0)
    status, body = env.direct(
        f"{GROUP}/v1beta1/namespaces/{NS}/pods",
        cert=proxy,
        headers=[("X-Remote-User", "viewer"), ("X-Remote-Group", "viewers")],
    )
    assert status == 200 and env.pod in _names(body)
    status, body = env.direct(
        f"{GROUP}/v1beta1/nodes",
        cert=proxy,
        headers=[("X-Remote-User", "viewer"), ("X-Remote-Group", "viewers")],
    )
    assert status == 403 and 'User "viewer"' in body["message"]


def _refused(env: Env, cert: tuple[str, str]) -> bool:
    try:
        env.direct("/livez", cert=cert)
    except (TimeoutError, ssl.SSLError, ConnectionError, http.client.HTTPException):
        return True
    return False


def test_a_certificate_from_an_untrusted_ca_is_refused(env: Env, tmp_path: Path) -> None:
    stranger = Authority.create("stranger-ca")
    cert, key = stranger.issue("front-proxy-client", organizations=("system:masters",), client=True)
    (tmp_path / "s.crt").write_bytes(cert)
    (tmp_path / "s.key").write_bytes(key)
    assert _refused(env, (str(tmp_path / "s.crt"), str(tmp_path / "s.key")))


def test_probes_are_open_and_metrics_needs_authorization(env: Env) -> None:
    for path in ("/livez", "/readyz", "/healthz"):
        status, body = env.direct(path)
        assert (status, body) == (200, "ok"), path
    status, body = env.direct("/metrics")
    assert status == 403
    assert body["message"] == 'forbidden: User "system:anonymous" cannot get path "/metrics"'
    status, body = env.direct("/metrics", token=env.sim.token("viewer"))
    assert status == 403 and 'User "viewer" cannot get path "/metrics"' in body["message"]
    status, body = env.direct("/metrics", cert=env.admin_cert())
    assert status == 200 and "metrics_server_kubelet_request_total" in body
    # a user granted the non-resource URL (as a Prometheus scraper would be)
    name, token = env.add_user()
    env.sim.control(
        "POST",
        "rbac/grants",
        {
            "name": f"scrape-{name}",
            "users": [name],
            "verbs": ["get"],
            "non_resource_urls": ["/metrics"],
        },
    )
    status, body = env.direct("/metrics", token=token)
    assert status == 200 and "metrics_server_storage_points" in body


def test_reviews_are_cached_within_their_ttl(env: Env) -> None:
    _, token = env.add_user(("viewers",))
    path = f"{GROUP}/v1beta1/namespaces/{NS}/pods"
    before = env.sim.reviews()
    assert env.direct(path, token=token)[0] == 200
    after_first = env.sim.reviews()
    assert after_first.get("tokenreviews", 0) == before.get("tokenreviews", 0) + 1
    sar = after_first.get("subjectaccessreviews", 0)
    assert sar == before.get("subjectaccessreviews", 0) + 1
    for _ in range(3):
        assert env.direct(path, token=token)[0] == 200
    assert env.sim.reviews() == after_first  # answered from the caches (10 s TTL)
    # a denied answer is cached as well
    assert env.direct(f"{GROUP}/v1beta1/nodes", token=token)[0] == 403
    once = env.sim.reviews()
    assert env.direct(f"{GROUP}/v1beta1/nodes", token=token)[0] == 403
    assert env.sim.reviews() == once


def test_a_ca_rotated_in_the_configmap_is_honoured(env: Env, tmp_path: Path) -> None:
    original = dict(env.sim.auth_configmap()["data"])
    new_ca = Authority.create("front-proxy-ca-2")

    def pair(cn: str) -> tuple[str, str]:
        cert, key = new_ca.issue(cn, client=True)
        (tmp_path / f"{cn}.crt").write_bytes(cert)
        (tmp_path / f"{cn}.key").write_bytes(key)
        return str(tmp_path / f"{cn}.crt"), str(tmp_path / f"{cn}.key")

    proxy2, intruder = pair("front-proxy-client"), pair("intruder")
    who = [("X-Remote-User", "viewer"), ("X-Remote-Group", "viewers")]
    path = f"{GROUP}/v1beta1/namespaces/{NS}/pods"
    assert _refused(env, proxy2)  # not trusted yet
    env.sim.set_auth_configmap(
        {**original, "requestheader-client-ca-file": new_ca.cert_pem.decode()}
    )
    try:
        deadline = time.monotonic() + 30
        while _refused(env, proxy2):
            assert time.monotonic() < deadline, tail(env.server.log())
            time.sleep(0.2)
        status, body = env.direct(path, cert=proxy2, headers=who)
        assert status == 200 and env.pod in _names(body)
        # the same CA, but a CN that is not among the allowed names
        status, body = env.direct(path, cert=intruder, headers=[("X-Remote-User", "admin")])
        assert (status, body["reason"]) == (401, "Unauthorized")
        # the old front-proxy CA is no longer trusted
        assert _refused(env, env.proxy_cert())
        assert "Authentication configuration changed" in env.server.log()
    finally:
        env.sim.set_auth_configmap(original)
    deadline = time.monotonic() + 30
    while _refused(env, env.proxy_cert()):
        assert time.monotonic() < deadline, tail(env.server.log())
        time.sleep(0.2)
    assert env.sim.request("GET", path)[0] == 200  # the aggregator gets through again


def test_startup_stops_when_the_configmap_cannot_be_read(env: Env, tmp_path: Path) -> None:
    nobody = env.sim.kubeconfig("nobody")
    server = ServerProcess(
        tmp_path / "refused",
        [
            f"--kubeconfig={env.sim.kubeconfig('metrics-server')}",
            f"--authentication-kubeconfig={nobody}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            f"--cert-dir={tmp_path / 'certs'}",
        ],
    )
    with pytest.raises(RuntimeError, match="exited with 1"):
        server.start(timeout=60)
    log = server.log()
    assert (
        "kubectl create rolebinding -n kube-system ROLEBINDING_NAME "
        "--role=extension-apiserver-authentication-reader --serviceaccount=YOUR_NS:YOUR_SA"
    ) in log, log

    tolerant = _start_server(
        env.sim,
        tmp_path / "tolerant",
        f"--authentication-kubeconfig={nobody}",
        "--authentication-tolerate-lookup-failure",
    )
    try:
        assert "Continuing without authentication configuration" in tolerant.log()
        assert tolerant.get("/livez")[0] == 200
    finally:
        assert tolerant.stop() == 0
