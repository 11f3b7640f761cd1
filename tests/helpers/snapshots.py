"""Snapshots built the way the server builds them: a real Store fed kubelet text twice, one
window apart, and an Inventory holding every pod and node (for the encoder and selector
tests)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kubemetrics import _native
from kubemetrics_sim import payload
from kubemetrics_sim.payload import ContainerSample, NodeSample

T0_MS = 1_735_032_833_000  # 2024-12-24T09:33:53Z
WINDOW_MS = 15_012


@dataclass
class Container:
    name: str
    cpu_seconds: float  # cumulative at the first scrape; grows by cpu_rate * window
    cpu_rate: float  # cores
    memory: int


@dataclass
class Pod:
    namespace: str
    name: str
    containers: list[Container]
    labels: dict[str, str] = field(default_factory=dict)


def kubelet_text(pods: Iterable[Pod], node_cpu: float, node_mem: int, ts_ms: int) -> bytes:
    """A /metrics/resource body like the kubelet's (start times well before ts)."""
    containers = [
        ContainerSample(p.namespace, p.name, c.name, c.cpu_seconds, c.memory, 1.7e9, ts_ms)
        for p in pods
        for c in p.containers
    ]
    return payload.kubelet_text(NodeSample(node_cpu, node_mem, ts_ms), containers)


def build(
    cluster: dict[str, list[Pod]], node_mem: int = 2048 * 1024
) -> tuple[_native.Snapshot, _native.Inventory]:
    """Two scrapes of every node, WINDOW_MS apart; an inventory holding every pod and node.
    The snapshot's view is built on first use (`Snapshot.view`), with the inventory as it
    is then."""
    store, inv = build_store(cluster, node_mem)
    return store.snapshot(T0_MS + WINDOW_MS + 1000), inv


def build_store(
    cluster: dict[str, list[Pod]], node_mem: int = 2048 * 1024
) -> tuple[_native.Store, _native.Inventory]:
    """`build`'s store and inventory, for tests that take more than one snapshot."""
    store = _native.Store(15.0)
    inv = _native.Inventory()
    for i, (node, pods) in enumerate(sorted(cluster.items())):
        t1 = T0_MS + WINDOW_MS
        store.ingest(node, kubelet_text(pods, 1000.0, node_mem + i, T0_MS), T0_MS)
        later = [
            Pod(
                p.namespace,
                p.name,
                [
                    Container(c.name, c.cpu_seconds + c.cpu_rate * WINDOW_MS / 1000, 0, c.memory)
                    for c in p.containers
                ],
            )
            for p in pods
        ]
        store.ingest(node, kubelet_text(later, 1000.0 + 0.25 * (i + 1), node_mem + i, t1), t1)
        inv.set_node(node, {"node": node, "kubernetes.io/role": "worker"})
        for p in pods:
            inv.set_pod(p.namespace, p.name, p.labels)
    return store, inv


def sample_cluster() -> dict[str, list[Pod]]:
    return {
        "node-b": [
            Pod("kube-system", "coredns", [Container("coredns", 12.4, 0.0015, 18_399_232)]),
            Pod(
                "payments",
                "checkout",
                [
                    Container("app", 5000.0, 0.5, 3 * 1024 * 1024),
                    Container("istio-proxy", 300.0, 0.00002, 1536),
                ],
                {"app": "checkout", "tier": "web"},
            ),
        ],
        "node-a": [
            Pod("default", "web-1", [Container("nginx", 1.0, 1.0, 1000)], {"app": "web"}),
            Pod("default", "idle", [Container("sleep", 3.0, 0.0, 512)]),
        ],
    }
