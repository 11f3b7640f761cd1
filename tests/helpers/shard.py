"""Sharded replicas end to end: one simulator, several `--sharding=lease` servers behind its
aggregator (one Service endpoint each, probed on /readyz), and what the kubelets saw.

`Sharded.start(root, replicas=3)` starts the simulator with the Lease grant the
high-availability overlay's Role gives, then the replicas (all at once), registers them as the
aggregator's endpoints and waits until every replica serves every node. Every kubelet counts
the requests it served per User-Agent, and a sharded replica's agent names it
(`kubemetrics (shard NAME)`), so `scrapes_during()` tells who scraped which kubelet how often.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubemetrics.shard.assign import Rendezvous
from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args
from tests.helpers.e2e import GROUP, KUBECTL, REFRESH_MS, RESOLUTION, node_mismatch, pod_mismatch

LEASE_DURATION = 3.0  # the shortest allowed: renewed every second
RESOLUTION_S = 2.0
assert RESOLUTION == "2s"
SA = "system:serviceaccount:kube-system:metrics-server"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"


def agent(name: str) -> str:
    return f"kubemetrics (shard {name})"


def grant_leases(sim: SimProcess) -> None:
    """What the high-availability overlay's Role grants the ServiceAccount, in its namespace."""
    sim.control(
        "POST",
        "rbac/grants",
        {
            "name": "metrics-server:shard-leases",
            "users": [SA],
            "verbs": ["get", "list", "watch", "create", "update", "delete"],
            "api_groups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "namespaces": ["kube-system"],
        },
    )


def shard_args(name: str, lease_duration: float = LEASE_DURATION) -> list[str]:
    """A replica's sharding flags on loopback (the downward API's values as flags)."""
    return [
        "--sharding=lease",
        f"--shard-pod-name={name}",
        "--shard-pod-namespace=kube-system",
        "--shard-pod-ip=127.0.0.1",
        f"--shard-lease-duration={lease_duration:g}s",
    ]


@dataclass
class Sharded:
    sim: SimProcess
    root: Path
    lease_duration: float = LEASE_DURATION
    replicas: dict[str, ServerProcess] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        root: Path,
        *,
        nodes: int,
        pods_per_node: int = 3,
        replicas: int = 3,
        seed: int = 7,
        lease_duration: float = LEASE_DURATION,
    ) -> Sharded:
        sim = SimProcess(
            root / "sim", nodes=nodes, pods_per_node=pods_per_node, seed=seed, refresh_ms=REFRESH_MS
        ).start()
        c = cls(sim, root, lease_duration)
        try:
            grant_leases(sim)
            c.add(*(f"ms-{i}" for i in range(replicas)))
            c.wait_all_serve(set(sim.info["nodes"]), timeout=60)
        except BaseException:
            c.stop()
            raise
        return c

    # --- replicas ------------------------------------------------------------------------------
    def server(self, name: str) -> ServerProcess:
        workdir = self.root / name
        s = ServerProcess(
            workdir,
            server_args(
                self.sim, workdir, *shard_args(name, self.lease_duration), resolution=RESOLUTION
            ),
            name=name,
        )
        # Direct requests authenticate as the cluster admin (client CA = the cluster CA).
        s.client_cert = (self.sim.file("admin_cert"), self.sim.file("admin_key"))
        return s

    def add(self, *names: str) -> None:
        """Start replicas at the same moment, then make them the Service's endpoints."""
        servers = [self.server(n) for n in names]
        with ThreadPoolExecutor(len(servers)) as pool:
            started = list(pool.map(lambda s: s.start(), servers))
        for s in started:
            self.replicas[s.name] = s
        self.register()

    def register(self) -> None:
        live = [s for s in self.replicas.values() if s.running]
        if not live:
            return
        self.sim.set_backend(
            [s.url for s in live],
            ca_pem="".join(s.cert_file.read_text() for s in live),
            readiness_path="/readyz",
            probe_period=0.5,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> float:
        """Send `sig` to a replica; returns the time (monotonic) it was sent."""
        s = self.replicas[name]
        assert s.proc is not None
        t = time.monotonic()
        s.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            s.proc.wait(10)
        return t

    def stop(self) -> None:
        for s in self.replicas.values():
            s.stop()
        self.sim.stop()

    def __enter__(self) -> Sharded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def live(self) -> list[str]:
        return sorted(n for n, s in self.replicas.items() if s.running)

    # --- what they serve -----------------------------------------------------------------------
    def items(self, name: str, kind: str) -> list[dict[str, Any]]:
        status, _, body = self.replicas[name].get(f"{GROUP}/v1/{kind}")
        assert status == 200, (name, status, body[:300])
        return list(json.loads(body)["items"])

    def served_nodes(self, name: str) -> set[str]:
        return {i["metadata"]["name"] for i in self.items(name, "nodes")}

    def served_pods(self, name: str) -> set[str]:
        return {
            f"{i['metadata']['namespace']}/{i['metadata']['name']}"
            for i in self.items(name, "pods")
        }

    def wait_all_serve(self, nodes: set[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        missing: dict[str, set[str]] = {}
        while time.monotonic() < deadline:
            missing = {n: nodes - self.served_nodes(n) for n in self.live}
            if not any(missing.values()):
                return
            time.sleep(0.25)
        raise AssertionError(f"not served after {timeout}s: {missing}\n{self.logs()}")

    def values_problem(self, name: str) -> str | None:
        """Every node and pod the truth has, served by `name` with true values, or what not."""
        truth = self.sim.truth()
        nodes, pods = self.items(name, "nodes"), self.items(name, "pods")
        got_pods = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods}
        problems = []
        if {i["metadata"]["name"] for i in nodes} != set(truth["nodes"]):
            problems.append(f"{name}: nodes {len(nodes)} != {len(truth['nodes'])}")
        if got_pods != set(truth["pods"]):
            problems.append(f"{name}: pods differ: {sorted(got_pods ^ set(truth['pods']))}")
        problems += [node_mismatch(i, truth["nodes"][i["metadata"]["name"]]) or "" for i in nodes]
        for p in pods:
            key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            if key in truth["pods"]:
                problems.append(pod_mismatch(p, truth["pods"][key]) or "")
        return "\n".join(x for x in problems if x) or None

    # --- what the kubelets saw -----------------------------------------------------------------
    def scrapes_during(self, seconds: float) -> dict[str, dict[str, int]]:
        """node → agent → kubelet requests served in the next `seconds`."""
        before = self.sim.kubelet_requests()
        time.sleep(seconds)
        after = self.sim.kubelet_requests()
        out: dict[str, dict[str, int]] = {}
        for node, agents in after.items():
            old = before.get(node, {})
            diff = {a: n - old.get(a, 0) for a, n in agents.items() if n - old.get(a, 0)}
            out[node] = diff
        return out

    def owners(self, members: Iterable[str]) -> dict[str, str]:
        """node → the member rendezvous hashing makes its owner (what replicas must agree on)."""
        nodes = sorted(self.sim.info["nodes"])
        names = sorted(members)
        owners = Rendezvous().owners(nodes, names).tolist()
        return {n: names[o] for n, o in zip(nodes, owners, strict=True)}

    def until(self, check: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll until `check()`; the seconds it took."""
        t0 = time.monotonic()
        while not check():
            assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout}s\n{self.logs()}"
            time.sleep(0.1)
        return time.monotonic() - t0

    def metric(self, name: str, line_start: str) -> float:
        body = self.replicas[name].get("/metrics")[2].decode()
        for line in body.splitlines():
            if line.startswith(line_start + " "):
                return float(line.split()[-1])
        raise AssertionError(f"{line_start} not in {name}'s /metrics")

    def kubectl(self, *args: str) -> str:
        import subprocess

        assert KUBECTL is not None
        r = subprocess.run(
            [KUBECTL, "--cache-dir", str(self.root / "kubectl-cache"), *args],
            env=self.sim.env("admin"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, f"kubectl {' '.join(args)}: {r.stderr}"
        return r.stdout

    def logs(self, n: int = 12) -> str:
        return "\n".join(f"--- {k}\n{s.log_tail(n)}" for k, s in self.replicas.items())
