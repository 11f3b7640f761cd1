"""The simulated cluster: its objects, their usage, churn, faults and the files clients need."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .certs import Authority, key_pem, new_key, write_private
from .gofmt import rfc3339
from .model import PATTERNS, Container, Node, Pattern, Pod, mix, shash
from .rbac import Rbac, User, default_grants
from .store import DictObj, Store

log = logging.getLogger("kubemetrics_sim")

FAULTS = ("down", "slow", "http500", "garbage", "truncated", "scrape_error")
APP_NAMESPACES = ("default", "team-a", "team-b", "team-c")
DEPLOYMENTS = ("web", "api", "worker", "cache", "queue", "auth", "search", "billing")
METRICS_SA = "system:serviceaccount:kube-system:metrics-server"
AUTH_CM = ("kube-system", "extension-apiserver-authentication")


@dataclass
class Config:
    nodes: int = 3
    pods_per_node: int = 5
    state_dir: Path = Path("sim-state")
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    kubelet_port: int = 0
    refresh_min_ms: int = 10_000
    refresh_max_ms: int = 15_000
    watch_window: int = 10_000
    bookmark_interval: float = 10.0
    churn_interval: float = 0.0  # seconds between automatic churn actions; 0 = off
    pod_start_delay: float = 1.0  # Pending → Running after this long
    viewer_namespace: str = "team-a"
    metrics_backend: str = ""
    metrics_backend_ca: str = ""
    metrics_backend_insecure: bool = False
    aggregator_timeout: float = 30.0
    log_level: str = "info"
    # Attach to a real API server instead of serving one (kubeconfig, its CA cert and key).
    apiserver: str = ""
    ca_cert: str = ""
    ca_key: str = ""
    attach_timeout: float = 600.0


@dataclass
class Backend:
    """The metrics.k8s.io APIService's Service: its endpoints and how they are probed
    (`aggregator.py`). `readiness_path` empty: an endpoint is ready while its process accepts
    connections (a pod without a readiness probe)."""

    urls: tuple[str, ...]
    ca_pem: bytes | None
    insecure: bool
    service: str = "kube-system/metrics-server"
    readiness_path: str = ""
    probe_period: float = 1.0
    failure_threshold: int = 3

    @property
    def url(self) -> str:
        return self.urls[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "endpoints": list(self.urls),
            "insecure": self.insecure,
            "ca": self.ca_pem is not None,
            "service": self.service,
            "readiness_path": self.readiness_path,
            "probe_period": self.probe_period,
            "failure_threshold": self.failure_threshold,
        }


@dataclass
class Files:
    root: Path
    paths: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, name: str, data: bytes, private: bool = False) -> Path:
        p = self.root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if private:
            write_private(p, data)
        else:
            p.write_bytes(data)
        self.paths[key] = str(p.resolve())
        return p


def node_ip(index: int) -> str:
    """127.0.X.Y for node index 0.. (127.0.0.0/24 is left to the API server)."""
    x, y = divmod(index, 250)
    if x > 254:
        raise ValueError("at most 63,500 nodes fit in 127.0.1.1-127.0.255.250")
    return f"127.0.{x + 1}.{y + 1}"


class Cluster:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.store = Store(window=cfg.watch_window)
        self.rbac = Rbac()
        self.nodes: dict[str, Node] = {}
        self.pods: dict[tuple[str, str], Pod] = {}
        self.ip_nodes: dict[str, Node] = {}
        self.free_indices: list[int] = []
        self.next_index = 0
        self.next_cid = 1
        self.next_pod_ip = 1
        self.backend: Backend | None = None
        self.files = Files(cfg.state_dir)
        self.started = time.time()
        self.tokens: dict[str, str] = {}
        self.kubelet_port = cfg.kubelet_port
        self.api_port = cfg.port
        # Set by the kubelet fleet: called after a node is added, removed, downed or healed.
        self.listener_hooks: list[Callable[[Node], None]] = []
        self.on_backend_changed: list[Callable[[], None]] = []
        self.churn_task: asyncio.Task[None] | None = None
        self.pending_starts: set[asyncio.TimerHandle] = set()
        self.churn_events = 0
        self.heal_timers: dict[str, asyncio.TimerHandle] = {}  # faults set to end by themselves

    # --- certificates and files -------------------------------------------------------------
    def make_pki(self, ca: Authority | None = None) -> None:
        """``ca``: sign with an existing cluster CA (attached to a real API server)."""
        d = self.cfg.state_dir
        d.mkdir(parents=True, exist_ok=True)
        self.ca = ca or Authority.create("kubemetrics-sim-ca")
        self.fp_ca = Authority.create("kubemetrics-sim-front-proxy-ca")
        f = self.files
        f.put("ca", "ca.crt", self.ca.cert_pem)
        f.put("ca_key", "ca.key", self.ca.key_pem, private=True)
        f.put("front_proxy_ca", "front-proxy-ca.crt", self.fp_ca.cert_pem)
        cert, key = self.fp_ca.issue("front-proxy-client", client=True)
        f.put("front_proxy_client_cert", "front-proxy-client.crt", cert)
        f.put("front_proxy_client_key", "front-proxy-client.key", key, private=True)
        cert, key = self.ca.issue(
            "kube-apiserver",
            ips=(self.cfg.host,),
            dns=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            server=True,
        )
        f.put("apiserver_cert", "apiserver.crt", cert)
        f.put("apiserver_key", "apiserver.key", key, private=True)
        cert, key = self.ca.issue(
            "kubernetes-admin", organizations=("system:masters",), client=True
        )
        f.put("admin_cert", "admin.crt", cert)
        f.put("admin_key", "admin.key", key, private=True)
        # One key for every kubelet: per-node certificates, one signature each.
        self.kubelet_key = new_key()
        f.put("kubelet_key", "kubelets/kubelet.key", key_pem(self.kubelet_key), private=True)

    def kubelet_cert(self, node: Node) -> Path:
        cert, _ = self.ca.issue(
            f"{node.name}@kubelet",
            ips=(node.ip,),
            dns=(node.name,),
            server=True,
            key=self.kubelet_key,
        )
        p = self.cfg.state_dir / "kubelets" / f"{node.name}.crt"
        p.write_bytes(cert)
        return p

    def make_users(self) -> None:
        def tok(name: str) -> str:
            return f"{name}-{secrets.token_hex(16)}"

        users = [
            User("kubernetes-admin", tok("admin"), ("system:masters",)),
            User("viewer", tok("viewer"), ("viewers",)),
            User(
                METRICS_SA,
                tok("metrics-server"),
                ("system:serviceaccounts", "system:serviceaccounts:kube-system"),
            ),
            User("nobody", tok("nobody"), ()),
        ]
        for u in users:
            self.rbac.add_user(u)
        for g in default_grants(self.cfg.viewer_namespace):
            self.rbac.add_grant(g)
        self.tokens = {
            "admin": users[0].token,
            "viewer": users[1].token,
            "metrics-server": users[2].token,
            "nobody": users[3].token,
        }

    def kubeconfig(
        self,
        user: str,
        *,
        token: str = "",
        cert: str = "",
        key: str = "",
        namespace: str = "default",
    ) -> bytes:
        server = f"https://{self.cfg.host}:{self.api_port}"
        ca = base64.b64encode(self.ca.cert_pem).decode()
        creds: dict[str, str] = {}
        if token:
            creds["token"] = token
        if cert:
            creds["client-certificate-data"] = base64.b64encode(Path(cert).read_bytes()).decode()
            creds["client-key-data"] = base64.b64encode(Path(key).read_bytes()).decode()
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "sim", "cluster": {"server": server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": user, "user": creds}],
            "contexts": [
                {
                    "name": f"{user}@sim",
                    "context": {"cluster": "sim", "user": user, "namespace": namespace},
                }
            ],
            "current-context": f"{user}@sim",
        }
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2)

    def write_client_files(self) -> None:
        f = self.files
        p = f.paths
        f.put(
            "admin.kubeconfig",
            "admin.kubeconfig",
            self.kubeconfig("admin", cert=p["admin_cert"], key=p["admin_key"]),
            private=True,
        )
        f.put(
            "viewer.kubeconfig",
            "viewer.kubeconfig",
            self.kubeconfig(
                "viewer", token=self.tokens["viewer"], namespace=self.cfg.viewer_namespace
            ),
            private=True,
        )
        f.put(
            "metrics-server.kubeconfig",
            "metrics-server.kubeconfig",
            self.kubeconfig(
                "metrics-server", token=self.tokens["metrics-server"], namespace="kube-system"
            ),
            private=True,
        )
        f.put(
            "nobody.kubeconfig",
            "nobody.kubeconfig",
            self.kubeconfig("nobody", token=self.tokens["nobody"]),
            private=True,
        )
        self.write_cluster_json()

    def describe(self) -> dict[str, Any]:
        api = f"https://{self.cfg.host}:{self.api_port}"
        return {
            "apiserver": {"url": api, "host": self.cfg.host, "port": self.api_port},
            "control": {"url": f"{api}/_sim", "port": self.api_port, "token": self.tokens["admin"]},
            "kubelet_port": self.kubelet_port,
            "nodes": {n.name: {"address": n.ip, "port": n.port} for n in self.nodes.values()},
            "users": {
                "admin": {
                    "name": "kubernetes-admin",
                    "token": self.tokens["admin"],
                    "groups": ["system:masters"],
                    "kubeconfig_auth": "client-certificate",
                },
                "viewer": {
                    "name": "viewer",
                    "token": self.tokens["viewer"],
                    "groups": ["viewers"],
                    "namespace": self.cfg.viewer_namespace,
                },
                "metrics-server": {
                    "name": METRICS_SA,
                    "token": self.tokens["metrics-server"],
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system"],
                },
                "nobody": {"name": "nobody", "token": self.tokens["nobody"], "groups": []},
            },
            "files": dict(self.files.paths),
            "seed": self.cfg.seed,
            "pid": os.getpid(),
        }

    def write_cluster_json(self) -> None:
        doc = orjson.dumps(self.describe(), option=orjson.OPT_INDENT_2)
        tmp = self.cfg.state_dir / "cluster.json.tmp"
        write_private(tmp, doc)
        tmp.replace(self.cfg.state_dir / "cluster.json")
        self.files.paths["cluster.json"] = str((self.cfg.state_dir / "cluster.json").resolve())

    # --- objects ---------------------------------------------------------------------------
    def _namespace(self, name: str, initial: bool) -> None:
        if self.store.get("namespaces", "", name) is None:
            o = DictObj(
                "namespaces",
                "Namespace",
                "",
                name,
                {"spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}},
                rfc3339(self.started),
                f"ns-{mix(shash(name)):016x}",
                {"kubernetes.io/metadata.name": name},
            )
            self._store_add(o, initial)

    def _store_add(self, o: Any, initial: bool) -> None:
        if initial:
            # Bulk load: objects exist before any watch could start, so no history is kept.
            self.store.rv += 1
            o.rv = self.store.rv
            self.store.objects[o.resource][o.key] = o
            self.store._sorted[o.resource] = None
            self.store.floor = self.store.rv
        else:
            self.store.add(o)

    def auth_configmap_data(self) -> dict[str, str]:
        return {
            "client-ca-file": self.ca.cert_pem.decode(),
            "requestheader-client-ca-file": self.fp_ca.cert_pem.decode(),
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        }

    def _alloc_pod_ip(self) -> str:
        n = self.next_pod_ip
        self.next_pod_ip += 1
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def random_pattern(self, rng: random.Random) -> Pattern:
        kind = rng.choice(PATTERNS)
        cpu = rng.randrange(2, 500) * 1_000_000
        mem = rng.randrange(8, 1024) << 20
        return Pattern(
            kind=kind,
            cpu=cpu,
            mem=mem,
            cpu_amp=0 if kind == "steady" else rng.randrange(1, 400) * 1_000_000,
            mem_amp=0 if kind == "steady" else rng.randrange(1, 256) << 20,
            period_ms=rng.randrange(60, 900) * 1000,
            spike_pct=rng.randrange(5, 30),
        )

    def _container(self, name: str, pattern: Pattern, node: Node, rng: random.Random) -> Container:
        cid = self.next_cid
        self.next_cid += 1
        offset = rng.randrange(0, max(1, min(3000, node.period_ms // 2)))
        return Container(name, cid, pattern, offset)

    def make_pod(
        self,
        node: Node,
        namespace: str,
        app: str,
        rng: random.Random,
        *,
        name: str = "",
        containers: list[tuple[str, Pattern]] | None = None,
        labels: dict[str, str] | None = None,
        owner: str = "",
    ) -> Pod:
        tmpl = f"{mix(shash(namespace), shash(app)) % 16**10:010x}"
        if not name:
            while True:
                name = (
                    f"{app}-{tmpl[:10]}-{''.join(rng.choices('bcdfghjklmnpqrstvwxz2456789', k=5))}"
                )
                if (namespace, name) not in self.pods:
                    break
        if containers is None:
            containers = [(app, self.random_pattern(rng))]
            if rng.random() < 0.3:
                containers.append(("istio-proxy", self.random_pattern(rng)))
        if labels is None:
            labels = {"app": app, "pod-template-hash": tmpl[:10]}
        cs = [self._container(cn, pat, node, rng) for cn, pat in containers]
        return Pod(
            namespace,
            name,
            node.name,
            labels,
            cs,
            time.time(),
            self._alloc_pod_ip(),
            owner=owner or f"ReplicaSet/{app}-{tmpl[:10]}",
            offset_ms=rng.randrange(0, max(1, min(3000, node.period_ms // 2))),
        )

    def _new_node(self, rng: random.Random) -> Node:
        if self.free_indices:
            idx = self.free_indices.pop(0)
        else:
            idx = self.next_index
            self.next_index += 1
        width = max(4, len(str(self.cfg.nodes)))
        name = f"node-{idx + 1:0{width}d}"
        while name in self.nodes:
            idx = self.next_index
            self.next_index += 1
            name = f"node-{idx + 1:0{width}d}"
        ip = node_ip(idx)
        period = rng.randrange(self.cfg.refresh_min_ms, self.cfg.refresh_max_ms + 1)
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": f"zone-{'abc'[idx % 3]}",
            "node.kubernetes.io/instance-type": "sim.large",
        }
        n = Node(
            name,
            ip,
            self.kubelet_port,
            labels,
            time.time(),
            period,
            rng.randrange(0, period),
            rng.randrange(50, 300) * 1_000_000,
            rng.randrange(256, 1024) << 20,
        )
        n.k = n.sample_index(int(time.time() * 1000)) - 1
        n.ts = n.sample_time(n.k)
        n.index = idx
        return n

    def build(self) -> None:
        """Create the initial nodes and pods (deterministic for a seed)."""
        rng = self.rng
        for ns in ("kube-system", "kube-public", *APP_NAMESPACES):
            self._namespace(ns, True)
        cm = DictObj(
            "configmaps",
            "ConfigMap",
            *AUTH_CM,
            {"data": self.auth_configmap_data()},
            rfc3339(self.started),
            "cm-extension-apiserver-authentication",
        )
        self._store_add(cm, True)
        now_ms = int(time.time() * 1000)
        for _ in range(self.cfg.nodes):
            node = self._new_node(rng)
            self._populate(node, rng, now_ms, initial=True)

    def _populate(self, node: Node, rng: random.Random, now_ms: int, initial: bool) -> None:
        self.nodes[node.name] = node
        self.ip_nodes[node.ip] = node
        self._store_add(node, initial)
        t0 = node.sample_time(node.k)
        pods = []
        if self.cfg.pods_per_node > 0:
            pods.append(
                self.make_pod(
                    node,
                    "kube-system",
                    "kube-proxy",
                    rng,
                    name=f"kube-proxy-{node.name}",
                    labels={"k8s-app": "kube-proxy"},
                    owner="DaemonSet/kube-proxy",
                )
            )
        for _ in range(self.cfg.pods_per_node - 1):
            pods.append(
                self.make_pod(node, rng.choice(APP_NAMESPACES), rng.choice(DEPLOYMENTS), rng)
            )
        uptime = rng.randrange(3600, 5 * 86400) * 1000
        for p in pods:
            age = rng.randrange(600, 3 * 86400) * 1000
            for c in p.containers:
                c.seed_sample(t0 - c.offset_ms, min(age, uptime))
            p.created = p.started = (t0 - min(age, uptime)) / 1000
            node.pods[p.key] = p
            self.pods[p.key] = p
            self._store_add(p, initial)
        node.seed(now_ms, uptime)
        node.created = time.time() - uptime / 1000
        node.invalidate()

    # --- churn -----------------------------------------------------------------------------
    def create_pod(self, spec: dict[str, Any]) -> Pod:
        """Create a pod (Pending, then Running after pod_start_delay)."""
        rng = self.rng
        node_name = spec.get("node")
        if node_name is None:
            if not self.nodes:
                raise LookupError("no nodes to schedule on")
            node = rng.choice(list(self.nodes.values()))
        else:
            node = self.nodes.get(str(node_name))  # type: ignore[assignment]
            if node is None:
                raise LookupError(f'nodes "{node_name}" not found')
        ns = str(spec.get("namespace", "default"))
        name = str(spec.get("name", ""))
        if name and (ns, name) in self.pods:
            raise FileExistsError(f'pods "{name}" already exists')
        app = str(spec.get("app", rng.choice(DEPLOYMENTS)))
        containers = None
        if "containers" in spec:
            containers = []
            for c in spec["containers"]:
                containers.append((str(c["name"]), Pattern.from_dict(c.get("pattern", {}))))
        labels = spec.get("labels")
        self._namespace(ns, False)
        pod = self.make_pod(
            node,
            ns,
            app,
            rng,
            name=name,
            containers=containers,
            labels=dict(labels) if labels is not None else None,
        )
        pod.phase = "Pending"
        for c in pod.containers:
            c.set_start(int(time.time() * 1000))
        node.pods[pod.key] = pod
        self.pods[pod.key] = pod
        self.store.add(pod)
        delay = float(spec.get("start_delay", self.cfg.pod_start_delay))
        if delay <= 0:
            self._start_pod(pod)
        else:
            loop = asyncio.get_running_loop()
            h = loop.call_later(delay, self._start_pod, pod)
            self.pending_starts.add(h)
        return pod

    def _start_pod(self, pod: Pod) -> None:
        if self.pods.get(pod.key) is not pod or pod.phase != "Pending":
            return
        old = self.store.snapshot_old(pod)
        now = time.time()
        pod.phase = "Running"
        pod.started = now
        for c in pod.containers:
            c.set_start(int(now * 1000))
        node = self.nodes.get(pod.node)
        if node:
            node.invalidate()
        self.store.modified(pod, old)

    def delete_pod(self, namespace: str, name: str) -> Pod:
        pod = self.pods.pop((namespace, name), None)
        if pod is None:
            raise LookupError(f'pods "{name}" not found')
        node = self.nodes.get(pod.node)
        if node:
            node.pods.pop(pod.key, None)
            node.invalidate()
        self.store.delete(pod)
        return pod

    def restart_container(self, namespace: str, name: str, container: str | None) -> Pod:
        pod = self.pods.get((namespace, name))
        if pod is None:
            raise LookupError(f'pods "{name}" not found')
        targets = [c for c in pod.containers if container in (None, c.name)]
        if not targets:
            raise LookupError(f'container "{container}" not found in pod "{name}"')
        now_ms = int(time.time() * 1000)
        node = self.nodes.get(pod.node)
        if node:
            node.advance(now_ms)  # samples before the restart keep the old incarnation
        for c in targets:
            c.pending_restart_ms = now_ms
        old = self.store.snapshot_old(pod)
        # Count the restart in the object now; the kubelet's samples show it at the next refresh.
        for c in targets:
            c.restarts += 1
        self.store.modified(pod, old)
        for c in targets:
            c.restarts -= 1  # Container.step adds it back when the restart is applied
        return pod

    def add_node(self, spec: dict[str, Any] | None = None) -> Node:
        node = self._new_node(self.rng)
        self._populate(node, self.rng, int(time.time() * 1000), initial=False)
        for hook in self.listener_hooks:
            hook(node)
        self.write_cluster_json()
        return node

    def remove_node(self, name: str) -> Node:
        node = self.nodes.pop(name, None)
        if node is None:
            raise LookupError(f'nodes "{name}" not found')
        for p in list(node.pods.values()):
            self.pods.pop(p.key, None)
            self.store.delete(p)
        node.pods.clear()
        self.ip_nodes.pop(node.ip, None)
        self.store.delete(node)
        self.free_indices.append(node.index)
        for hook in self.listener_hooks:
            hook(node)
        self.write_cluster_json()
        return node

    def set_fault(self, name: str, fault: str, seconds: float = 0.0, duration: float = 0.0) -> Node:
        """`duration` > 0: the node heals by itself that many seconds later (a fault that
        outlasts the control API, e.g. across an API server outage)."""
        node = self.nodes.get(name)
        if node is None:
            raise LookupError(f'nodes "{name}" not found')
        if fault in ("heal", "", "none"):
            fault = ""
        elif fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}, want one of {', '.join(FAULTS)} or heal")
        if duration < 0:
            raise ValueError("duration must be >= 0")
        timer = self.heal_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        if fault and duration > 0:
            self.heal_timers[name] = asyncio.get_running_loop().call_later(
                duration, self._heal_by_itself, name
            )
        node.fault = fault
        node.fault_seconds = seconds
        node.invalidate()
        for hook in self.listener_hooks:
            hook(node)
        return node

    def _heal_by_itself(self, name: str) -> None:
        self.heal_timers.pop(name, None)
        if name in self.nodes:
            self.set_fault(name, "heal")

    def set_backend(self, backend: Backend | None) -> None:
        self.backend = backend
        for hook in self.on_backend_changed:
            hook()

    def churn_once(self) -> str:
        """One random churn action: replace a pod or restart a container."""
        rng = self.rng
        self.churn_events += 1
        if not self.pods:
            return "none"
        pod = (
            self.pods[rng.choice(list(self.pods))]
            if len(self.pods) < 1000
            else self._random_pod(rng)
        )
        if pod.namespace == "kube-system" or rng.random() < 0.7:
            if pod.namespace == "kube-system":
                self.restart_container(pod.namespace, pod.name, None)
                return f"restart {pod.namespace}/{pod.name}"
            self.delete_pod(pod.namespace, pod.name)
            app = pod.labels.get("app", "web")
            new = self.create_pod({"namespace": pod.namespace, "node": pod.node, "app": app})
            return f"replace {pod.namespace}/{pod.name} -> {new.name}"
        self.restart_container(pod.namespace, pod.name, None)
        return f"restart {pod.namespace}/{pod.name}"

    def _random_pod(self, rng: random.Random) -> Pod:
        node = self.nodes[rng.choice(list(self.nodes))]
        while not node.pods:
            node = self.nodes[rng.choice(list(self.nodes))]
        return node.pods[rng.choice(list(node.pods))]

    async def churn_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(LookupError):
                self.churn_once()

    def set_churn(self, interval: float) -> None:
        if self.churn_task is not None:
            self.churn_task.cancel()
            self.churn_task = None
        if interval > 0:
            self.churn_task = asyncio.get_running_loop().create_task(self.churn_loop(interval))

    # --- truth -----------------------------------------------------------------------------
    def truth(self, node_filter: str | None = None, namespace: str | None = None) -> dict[str, Any]:
        now_ms = int(time.time() * 1000)
        nodes: dict[str, Any] = {}
        pods: dict[str, Any] = {}
        for node in self.nodes.values():
            if node_filter and node.name != node_filter:
                continue
            node.advance(now_ms)
            nodes[node.name] = node.truth()
            for p in node.pods.values():
                if namespace and p.namespace != namespace:
                    continue
                if p.phase != "Running":
                    continue
                cs = {c.name: c.truth() for c in p.containers if c.has_sample}
                if not cs:
                    continue
                pods[f"{p.namespace}/{p.name}"] = {
                    "namespace": p.namespace,
                    "name": p.name,
                    "node": p.node,
                    "labels": p.labels,
                    "cpu_nanocores": sum(c["cpu_nanocores"] for c in cs.values()),
                    "memory_bytes": sum(c["memory_bytes"] for c in cs.values()),
                    "timestamp_ms": min(c["timestamp_ms"] for c in cs.values()),
                    "complete": len(cs) == len(p.containers),
                    "containers": cs,
                }
        return {"now_ms": now_ms, "resource_version": self.store.rv, "nodes": nodes, "pods": pods}
