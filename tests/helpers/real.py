"""The real-cluster tier: a real control plane, the simulator attached to it, and the servers.

`RealCluster.start()` runs etcd + kube-apiserver + kube-controller-manager from peers/bin
(`kubemetrics_sim.realcluster`), attaches the simulator (`kubemetrics-sim --apiserver`), applies
`deploy/base` (ServiceAccount, RBAC, both APIServices; the Deployment is replaced by a local
process and the Service by an ExternalName to localhost, since Endpoints may not point at
loopback), and gives the server a kubeconfig with a token of its ServiceAccount.

`backend()` runs kubemetrics or upstream metrics-server as a local process (the one launcher,
`kubemetrics_sim.launch.ServerProcess`) with the manifest's arguments plus what a pod gets from
its environment (kubeconfig, bind address, a free port).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubemetrics_sim.certs import Authority
from kubemetrics_sim.launch import ServerProcess, SimProcess
from kubemetrics_sim.realcluster import (
    CONTROL_PLANE_BINARIES,
    REPO,
    ControlPlane,
    free_port,
    missing_peers,
    peer_binary,
)
from tests.helpers.e2e import pod_mismatch

DEPLOY_BASE = REPO / "deploy" / "base"
GROUP = "/apis/metrics.k8s.io"
# kubectl 1.27-1.33 as installed on the machines (kubectl 1.37 is built into peers/bin).
INSTALLED_KUBECTLS = {
    f"1.{m}": f"/usr/lib/google-cloud-sdk/bin/kubectl.1.{m}" for m in range(27, 34)
}


def require_peers(*extra: str) -> None:
    """Skip, saying what to run, when the peers are not built."""
    import pytest

    missing = missing_peers((*CONTROL_PLANE_BINARIES, *extra))
    if missing:
        pytest.skip(
            f"peers not built ({', '.join(missing)} missing in peers/bin): run `make peers`"
        )


def manifest_args() -> list[str]:
    """The container args of deploy/base's Deployment."""
    for doc in yaml.safe_load_all((DEPLOY_BASE / "deployment.yaml").read_text()):
        if doc and doc.get("kind") == "Deployment":
            return list(doc["spec"]["template"]["spec"]["containers"][0]["args"])
    raise AssertionError("no Deployment in deploy/base/deployment.yaml")


# --- the servers ---------------------------------------------------------------------------------


def backend_args(workdir: Path, port: int, kubeconfig: Path, *extra: str) -> list[str]:
    """deploy/base's arguments, plus what a pod gets from its environment: in-cluster
    credentials become a kubeconfig, the pod IP becomes loopback, the port a free one."""
    args = []
    for a in manifest_args():
        if a.startswith("--secure-port="):
            a = f"--secure-port={port}"
        elif a.startswith("--cert-dir="):
            a = f"--cert-dir={workdir / 'certs'}"
        args.append(a)
    return [
        *args,
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        *extra,
    ]


def backend(name: str, workdir: Path, kubeconfig: Path, *extra: str) -> ServerProcess:
    """kubemetrics or upstream ("upstream": peers/bin/metrics-server), started, same flags."""
    command = (str(peer_binary("metrics-server")),) if name == "upstream" else ()
    s = ServerProcess(
        workdir,
        backend_args(workdir, free_port(), kubeconfig, *extra),
        new_session=True,
        command=command,
        name=name,
    )
    return s.start()


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --- the cluster ---------------------------------------------------------------------------------


@dataclass
class RealCluster:
    root: Path
    cp: ControlPlane
    sim: SimProcess
    server_kubeconfig: Path
    backends: dict[str, ServerProcess] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        root: Path,
        *,
        nodes: int,
        pods_per_node: int,
        seed: int = 7,
        refresh_ms: tuple[int, int] = (10_000, 15_000),
        kcm_args: Sequence[str] = (),
        controller_manager: bool = True,
        sim_timeout: float = 300.0,
    ) -> RealCluster:
        cp = ControlPlane(root / "cp", controller_manager=controller_manager, kcm_args=kcm_args)
        cp.start()
        sim: SimProcess | None = None
        try:
            sim = SimProcess(
                root / "sim",
                nodes=nodes,
                pods_per_node=pods_per_node,
                seed=seed,
                refresh_ms=refresh_ms,
                extra_args=(
                    f"--apiserver={cp.admin_kubeconfig}",
                    f"--ca-cert={cp.files['ca']}",
                    f"--ca-key={cp.files['ca_key']}",
                    f"--attach-timeout={sim_timeout}",
                ),
                ready_timeout=sim_timeout + 60,
            ).start()
            apply_base(cp)
            token = cp.kubectl(
                "-n", "kube-system", "create", "token", "metrics-server", "--duration=6h"
            ).stdout.strip()
            kc = cp.write_kubeconfig("metrics-server", "metrics-server", token=token)
            return cls(root, cp, sim, kc)
        except BaseException:
            if sim is not None:
                sim.stop()
            cp.stop()
            raise

    def stop(self) -> None:
        for b in self.backends.values():
            b.stop()
        self.sim.stop()
        self.cp.stop()

    def backend(self, name: str, *extra: str) -> ServerProcess:
        b = backend(name, self.root / name, self.server_kubeconfig, *extra)
        self.backends[name] = b
        return b

    def route(self, version: str, backend: ServerProcess) -> None:
        """Point the APIService of `version` at `backend` (port of the ExternalName Service)."""
        patch = {"spec": {"service": {"port": backend.port}}}
        self.cp.kubectl(
            "patch",
            "apiservice",
            f"{version}.metrics.k8s.io",
            "--type=merge",
            "-p",
            json.dumps(patch),
        )

    # -- through the real aggregator, as the cluster admin --
    def get(self, path: str, accept: str = "application/json") -> tuple[int, bytes]:
        req = urllib.request.Request(self.cp.url + path, headers={"Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.cp.admin_ssl_context()) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get_json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, f"GET {path}: {status} {body[:400]!r}"
        return json.loads(body)

    # -- straight to one backend, as the aggregator sends it (front-proxy certificate) --
    def direct(self, backend: ServerProcess, path: str, accept: str = "application/json") -> Any:
        ctx = insecure_context()
        ctx.load_cert_chain(
            str(self.cp.files["front_proxy_client_cert"]),
            str(self.cp.files["front_proxy_client_key"]),
        )
        req = urllib.request.Request(
            f"https://127.0.0.1:{backend.port}{path}",
            headers={
                "Accept": accept,
                "X-Remote-User": "kubernetes-admin",
                "X-Remote-Group": "system:masters",
            },
        )
        with urllib.request.urlopen(req, timeout=60, context=ctx) as r:
            return json.loads(r.read())

    def wait_served(
        self, version: str, timeout: float = 120.0, nodes: set[str] | None = None
    ) -> None:
        """Until every simulated node and some pods are served through the aggregator."""
        want = nodes if nodes is not None else set(self.sim.info["nodes"])
        deadline = time.monotonic() + timeout
        got: set[str] = set()
        last = ""
        while time.monotonic() < deadline:
            status, body = self.get(f"{GROUP}/{version}/nodes")
            if status == 200:
                got = {i["metadata"]["name"] for i in json.loads(body)["items"]}
                if want <= got:
                    s2, b2 = self.get(f"{GROUP}/{version}/pods")
                    if s2 == 200 and json.loads(b2)["items"]:
                        return
            else:
                last = f"{status} {body[:200]!r}"
            time.sleep(1.0)
        logs = "\n".join(f"--- {b.name}\n{b.log_tail()}" for b in self.backends.values())
        raise AssertionError(
            f"{version}: served nodes {sorted(got)}, want {sorted(want)} after {timeout}s "
            f"({last})\n{logs}"
        )

    def user_kubeconfig(self, user: str, groups: tuple[str, ...] = ()) -> Path:
        """A client-certificate user of the real cluster (CN user, O groups)."""
        ca = Authority.load(self.cp.files["ca"].read_bytes(), self.cp.files["ca_key"].read_bytes())
        cert, key = ca.issue(user, organizations=groups, client=True)
        return self.cp.write_kubeconfig(f"user-{user}", user, cert=cert, key=key)


def apply_base(cp: ControlPlane) -> None:
    """deploy/base as rendered by kubectl's kustomize, without the Deployment (the server runs as
    a local process) and with the Service as an ExternalName to localhost."""
    rendered = cp.kubectl("kustomize", str(DEPLOY_BASE)).stdout
    docs = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc["kind"] == "Deployment":
            continue
        if doc["kind"] == "Service":
            doc["spec"] = {
                "type": "ExternalName",
                "externalName": "localhost",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
            }
        docs.append(doc)
    cp.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs).encode())


def pod_truth_mismatch(item: dict[str, Any], truth: dict[str, Any]) -> str | None:
    """tests.helpers.e2e.pod_mismatch for either server: upstream lists a pod's containers in Go map
    order (random), kubemetrics sorted by name, which that helper checks."""
    if item["containers"] != sorted(item["containers"], key=lambda c: c["name"]):
        item = {**item, "containers": sorted(item["containers"], key=lambda c: c["name"])}
    return pod_mismatch(item, truth)


def eventually(check: Callable[[], str | None], timeout: float, pause: float = 1.0) -> None:
    """Until check() returns None (success); fail with its last answer."""
    deadline = time.monotonic() + timeout
    last: str | None = "never checked"
    while time.monotonic() < deadline:
        last = check()
        if last is None:
            return
        time.sleep(pause)
    raise AssertionError(f"after {timeout:.0f}s: {last}")
