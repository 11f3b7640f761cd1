"""Realistic kubelet `/metrics/resource` payloads for the parser benchmarks: random but
deterministic (per seed) names and values, written by the simulator's kubelet-text writer
(`kubemetrics_sim.payload`)."""

from __future__ import annotations

import random

from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text, pod_sums

NAMESPACES = (
    "kube-system",
    "monitoring",
    "payments-prod",
    "checkout",
    "search-staging",
    "ingress-nginx",
    "default",
)
APPS = ("api", "web", "worker", "cache", "gateway", "indexer", "scheduler", "exporter")
SIDECARS = ("istio-proxy", "log-shipper", "config-reloader")
ALNUM = "bcdfghjklmnpqrstvwxz2456789"


def kubelet_payload(pods: int, seed: int = 1) -> bytes:
    """One node's payload with `pods` pods (1-3 containers each, ~1.3 on average)."""
    rng = random.Random(seed)
    now_ms = 1_748_001_337_000
    containers: list[ContainerSample] = []
    for _ in range(pods):
        ns = rng.choice(NAMESPACES)
        app = rng.choice(APPS)
        rs = "".join(rng.choice(ALNUM) for _ in range(10))
        pod = f"{app}-{rs}-{''.join(rng.choice(ALNUM) for _ in range(5))}"
        names = [app]
        if rng.random() < 0.3:
            names.append(rng.choice(SIDECARS))
        if rng.random() < 0.05:
            names.append("debug")
        for name in names:
            cpu = round(rng.uniform(0.01, 50_000), 9)
            mem = float(rng.randrange(4_000_000, 4_000_000_000, 4096))
            start = 1_747_900_000 + rng.random() * 100_000
            ts = now_ms - rng.randrange(0, 15_000)
            containers.append(ContainerSample(ns, pod, name, cpu, mem, start, ts))
    containers.sort(key=lambda c: (c.container, c.namespace, c.pod))  # as the kubelet sorts
    node = NodeSample(
        sum(float(c.cpu_seconds or 0) for c in containers) * 1.1,
        sum(float(c.memory_bytes or 0) for c in containers) + 2e9,
        now_ms,
    )
    return kubelet_text(node, containers, pods=pod_sums(containers), swap=True, scrape_error=False)


def lines_payload(lines: int, seed: int = 2) -> bytes:
    """Exactly `lines` lines of kubelet text (a big node's payload, cut at a line end)."""
    pods = lines // 8 + 10
    data = kubelet_payload(pods, seed)
    cut = data.split(b"\n")[:lines]
    assert len(cut) == lines, "generator produced too few lines"
    return b"\n".join(cut) + b"\n"
