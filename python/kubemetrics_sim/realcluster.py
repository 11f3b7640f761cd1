"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

The binaries come from ``peers/bin`` (``make peers``). Everything listens on 127.0.0.1 on free
ports, keeps its data in one temporary directory and is stopped by PID. The API server runs
with the aggregation layer (front-proxy CA and client certificate), RBAC only, and the
controller manager with per-controller ServiceAccount credentials, as kubeadm sets them up, so
that the HPA reads ``metrics.k8s.io`` with its own identity through real RBAC.

Nodes and pods come from the simulator attached with ``kubemetrics-sim --apiserver``: there is
no scheduler and no kubelet here, and the node lifecycle controller is off because nothing
renews node Leases (the simulator keeps node status Ready instead).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from cryptography.hazmat.primitives import serialization

from .certs import Authority, key_pem, new_key, write_private

REPO = Path(__file__).resolve().parents[2]
PEERS_BIN = Path(os.environ.get("KUBEMETRICS_PEERS_BIN", REPO / "peers" / "bin"))
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")

# What the tier and the benchmark need from kube-controller-manager: Deployments and the HPA,
# the RBAC role aggregation behind `view`/`edit`/`admin`, ServiceAccounts and their tokens,
# namespaces and garbage collection. Controllers that assume kubelets or a cloud stay off.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "horizontal-pod-autoscaler-controller",
    "garbage-collector-controller",
    "clusterrole-aggregation-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "namespace-controller",
)


class PeersMissing(RuntimeError):
    """The peer binaries are not built (run `make peers`)."""


def peer_binary(name: str) -> Path:
    p = PEERS_BIN / name
    if not os.access(p, os.X_OK):
        raise PeersMissing(f"{p} is not built: run `make peers`")
    return p


def missing_peers(names: Sequence[str] = CONTROL_PLANE_BINARIES) -> list[str]:
    return [n for n in names if not os.access(PEERS_BIN / n, os.X_OK)]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def kubeconfig(
    server: str, ca_pem: bytes, user: str, *, token: str = "", cert: bytes = b"", key: bytes = b""
) -> bytes:
    creds: dict[str, str] = {}
    if token:
        creds["token"] = token
    if cert:
        creds["client-certificate-data"] = base64.b64encode(cert).decode()
        creds["client-key-data"] = base64.b64encode(key).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "real",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": user, "context": {"cluster": "real", "user": user}}],
        "current-context": user,
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, n: int = 30) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


@dataclass
class ControlPlane:
    """Start with ``start()`` (or as a context manager); ``stop()`` ends every process by PID."""

    workdir: Path
    controller_manager: bool = True
    kcm_args: Sequence[str] = ()
    apiserver_args: Sequence[str] = ()
    ready_timeout: float = 180.0
    host: str = "127.0.0.1"
    procs: list[Proc] = field(default_factory=list)
    api_port: int = 0
    files: dict[str, Path] = field(default_factory=dict)

    # --- files -----------------------------------------------------------------------------
    def _put(self, key: str, name: str, data: bytes, private: bool = False) -> Path:
        p = self.workdir / "pki" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if private:
            write_private(p, data)
        else:
            p.write_bytes(data)
        self.files[key] = p
        return p

    def make_pki(self) -> None:
        ca = Authority.create("kubemetrics-real-ca")
        fp = Authority.create("kubemetrics-real-front-proxy-ca")
        self.ca = ca
        self._put("ca", "ca.crt", ca.cert_pem)
        self._put("ca_key", "ca.key", ca.key_pem, private=True)
        self._put("front_proxy_ca", "front-proxy-ca.crt", fp.cert_pem)
        cert, key = fp.issue("front-proxy-client", client=True)
        self._put("front_proxy_client_cert", "front-proxy-client.crt", cert)
        self._put("front_proxy_client_key", "front-proxy-client.key", key, private=True)
        cert, key = ca.issue(
            "kube-apiserver",
            ips=(self.host, "10.96.0.1"),
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            server=True,
        )
        self._put("apiserver_cert", "apiserver.crt", cert)
        self._put("apiserver_key", "apiserver.key", key, private=True)
        sa = new_key()
        self._put("sa_key", "sa.key", key_pem(sa), private=True)
        pub = sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self._put("sa_pub", "sa.pub", pub)
        cert, key = ca.issue("kubernetes-admin", organizations=("system:masters",), client=True)
        self._put("admin_cert", "admin.crt", cert)
        self._put("admin_key", "admin.key", key, private=True)
        self.admin_cert, self.admin_key = cert, key
        cert, key = ca.issue("system:kube-controller-manager", client=True)
        self._put("kcm_cert", "kcm.crt", cert)
        self._put("kcm_key", "kcm.key", key, private=True)
        self.kcm_cert, self.kcm_key = cert, key

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.api_port}"

    def write_kubeconfig(
        self, name: str, user: str, *, token: str = "", cert: bytes = b"", key: bytes = b""
    ) -> Path:
        p = self.workdir / f"{name}.kubeconfig"
        write_private(
            p, kubeconfig(self.url, self.ca.cert_pem, user, token=token, cert=cert, key=key)
        )
        return p

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    # --- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> Proc:
        log = self.workdir / f"{name}.log"
        f = log.open("wb")
        try:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            f.close()
        p = Proc(name, popen, log)
        self.procs.append(p)
        return p

    def _wait(self, proc: Proc, url: str, ctx: ssl.SSLContext | None) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last = ""
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            time.sleep(0.5)
        raise RuntimeError(
            f"{proc.name} not ready at {url} after {self.ready_timeout:.0f}s ({last}):\n"
            f"{proc.tail()}"
        )

    def admin_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.files["ca"]))
        ctx.load_cert_chain(str(self.files["admin_cert"]), str(self.files["admin_key"]))
        return ctx

    def start(self) -> ControlPlane:
        for b in CONTROL_PLANE_BINARIES:
            peer_binary(b)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.make_pki()
        try:
            self._start_etcd()
            self._start_apiserver()
            if self.controller_manager:
                self._start_kcm()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_etcd(self) -> None:
        client, peer = free_port(self.host), free_port(self.host)
        self.etcd_url = f"http://{self.host}:{client}"
        p = self._spawn(
            "etcd",
            [
                str(peer_binary("etcd")),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls=http://{self.host}:{peer}",
                f"--initial-advertise-peer-urls=http://{self.host}:{peer}",
                f"--initial-cluster=default=http://{self.host}:{peer}",
                "--log-level=warn",
                # Throwaway data on a shared machine: an fsync per write only adds latency.
                "--unsafe-no-fsync",
                "--quota-backend-bytes=8589934592",
            ],
        )
        self._wait(p, f"{self.etcd_url}/health", None)

    def _start_apiserver(self) -> None:
        f = self.files
        self.api_port = free_port(self.host)
        p = self._spawn(
            "kube-apiserver",
            [
                str(peer_binary("kube-apiserver")),
                f"--etcd-servers={self.etcd_url}",
                f"--bind-address={self.host}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={f['apiserver_cert']}",
                f"--tls-private-key-file={f['apiserver_key']}",
                f"--client-ca-file={f['ca']}",
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.96.0.0/16",
                # The `kubernetes` Service would point at 127.0.0.1, which Endpoints reject.
                "--endpoint-reconciler-type=none",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={f['sa_pub']}",
                f"--service-account-signing-key-file={f['sa_key']}",
                # The aggregation layer, as kubeadm configures it.
                f"--requestheader-client-ca-file={f['front_proxy_ca']}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={f['front_proxy_client_cert']}",
                f"--proxy-client-key-file={f['front_proxy_client_key']}",
                "--profiling=false",
                "--v=1",
                *self.apiserver_args,
            ],
        )
        self._wait(p, f"{self.url}/readyz", self.admin_ssl_context())
        self.write_kubeconfig("admin", "kubernetes-admin", cert=self.admin_cert, key=self.admin_key)

    def _start_kcm(self) -> None:
        kc = self.write_kubeconfig(
            "kube-controller-manager",
            "system:kube-controller-manager",
            cert=self.kcm_cert,
            key=self.kcm_key,
        )
        port = free_port(self.host)
        p = self._spawn(
            "kube-controller-manager",
            [
                str(peer_binary("kube-controller-manager")),
                f"--kubeconfig={kc}",
                f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                f"--bind-address={self.host}",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={self.files['sa_key']}",
                f"--root-ca-file={self.files['ca']}",
                f"--controllers={','.join(CONTROLLERS)}",
                "--profiling=false",
                "--v=1",
                *self.kcm_args,
            ],
        )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # its self-signed serving certificate
        self._wait(p, f"https://{self.host}:{port}/healthz", ctx)

    def stop(self) -> None:
        """SIGTERM every process (newest first), SIGKILL what is left after a grace period."""
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.popen.pid, signal.SIGKILL)
                p.popen.wait(timeout=15)
        self.procs.clear()
        shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- kubectl ---------------------------------------------------------------------------
    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        binary: str | Path | None = None,
        input: bytes | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl (default: the 1.37 one from peers/bin) against this cluster."""
        argv = [
            str(binary or peer_binary("kubectl")),
            f"--kubeconfig={kubeconfig or self.admin_kubeconfig}",
            f"--cache-dir={self.workdir / 'kubectl-cache'}",
            *args,
        ]
        r = subprocess.run(
            argv,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "KUBECONFIG": ""},
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:1] + list(args))} failed: {r.stderr.strip()}")
        return r
