"""Sharded replicas against a real kube-apiserver: real Leases, real RBAC, real TokenReview and
SubjectAccessReview between peers.

Two replicas run with --sharding=lease and the high-availability overlay's Lease Role (applied
from deploy/ as it ships); each kubelet is scraped by one of them, each serves every node and
pod with true values, and SIGTERM hands a replica's nodes to the other.
"""

from __future__ import annotations

import json
import signal
import time

from kubemetrics_sim.launch import ServerProcess
from tests.helpers.e2e import node_mismatch
from tests.helpers.real import GROUP, REPO, RealCluster, eventually, pod_truth_mismatch
from tests.helpers.shard import agent, shard_args

LEASES_RBAC = REPO / "deploy" / "components" / "high-availability" / "leases-rbac.yaml"
RESOLUTION = 5.0
NAMES = ("shard-a", "shard-b")


def problems(real: RealCluster, replica: ServerProcess) -> str | None:
    truth = real.sim.truth()
    nodes = real.direct(replica, f"{GROUP}/v1/nodes")["items"]
    pods = real.direct(replica, f"{GROUP}/v1/pods")["items"]
    if {i["metadata"]["name"] for i in nodes} != set(truth["nodes"]):
        return f"{replica.name}: nodes {sorted(i['metadata']['name'] for i in nodes)}"
    keys = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in pods}
    if keys != set(truth["pods"]):
        return f"{replica.name}: pods differ by {sorted(keys ^ set(truth['pods']))}"
    out = [node_mismatch(i, truth["nodes"][i["metadata"]["name"]]) for i in nodes]
    out += [
        pod_truth_mismatch(
            p, truth["pods"][f"{p['metadata']['namespace']}/{p['metadata']['name']}"]
        )
        for p in pods
    ]
    return "\n".join(x for x in out if x) or None


def leases(real: RealCluster) -> dict[str, dict[str, object]]:
    out = real.cp.kubectl(
        "-n", "kube-system", "get", "leases", "-l", "kubemetrics.io/shard-group=kubemetrics",
        "-o", "json",
    ).stdout  # fmt: skip
    return {i["metadata"]["name"]: i for i in json.loads(out)["items"]}


def test_two_sharded_replicas_over_real_leases(real: RealCluster) -> None:
    real.cp.kubectl("apply", "-f", str(LEASES_RBAC))
    replicas = [
        real.backend(name, *shard_args(name), f"--metric-resolution={RESOLUTION:g}s")
        for name in NAMES
    ]
    try:
        # Both Leases, each naming where its replica listens.
        eventually(lambda: None if set(leases(real)) == set(NAMES) else str(leases(real)), 30)
        for name, replica in zip(NAMES, replicas, strict=True):
            lease = leases(real)[name]
            meta, spec = lease["metadata"], lease["spec"]
            assert isinstance(meta, dict) and isinstance(spec, dict)
            assert spec["holderIdentity"] == name and spec["leaseDurationSeconds"] == 3
            assert meta["annotations"]["kubemetrics.io/peer-address"] == f"127.0.0.1:{replica.port}"

        # Each serves everything, with the truth's values (half of it fetched from its peer,
        # authenticated by the real TokenReview and authorized by real RBAC as nodes/metrics).
        for r in replicas:
            eventually(lambda r=r: problems(real, r), timeout=90)  # type: ignore[misc]

        # Each kubelet was scraped by one of the two, not both.
        before = real.sim.kubelet_requests()
        time.sleep(2 * RESOLUTION)
        after = real.sim.kubelet_requests()
        shard_agents = {agent(n) for n in NAMES}
        for node, agents in after.items():
            scraped = {
                a for a, n in agents.items() if a in shard_agents and n > before[node].get(a, 0)
            }
            assert len(scraped) == 1, (node, agents, before[node])

        # SIGTERM: the Lease goes first; the survivor takes every node.
        t0 = time.monotonic()
        assert replicas[1].proc is not None
        replicas[1].proc.send_signal(signal.SIGTERM)
        eventually(lambda: None if set(leases(real)) == {"shard-a"} else "Lease still there", 5)
        assert time.monotonic() - t0 < 3.0
        assert replicas[1].proc.wait(30) == 0
        base = real.sim.kubelet_requests()

        def all_scraped_by_a() -> str | None:
            now = real.sim.kubelet_requests()
            left = [
                n
                for n in now
                if now[n].get(agent("shard-a"), 0) <= base[n].get(agent("shard-a"), 0)
            ]
            return f"not yet scraped by shard-a: {left}" if left else None

        eventually(all_scraped_by_a, timeout=RESOLUTION + 5)
        eventually(lambda: problems(real, replicas[0]), timeout=30)
    finally:
        for name in NAMES:
            b = real.backends.pop(name, None)
            if b is not None:
                b.stop()
