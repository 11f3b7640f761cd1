"""The peer exchange's unit costs at 1,000 nodes × 30 pods (`--sharding=lease`).

Against a same-run baseline, the work a replica would do to get the same points itself: parse
and store the kubelets' text (`Store.ingest` of both samples). Measured: encoding a replica's
own points (`export_points`), and a peer's decoding and merging them (`import_points`) into an
empty store and into one that already holds them (the steady state: every cycle replaces what
the last one brought). The body's size per container, and against the kubelets' text gzipped
(what scraping would move), go into extra_info. These feed the capacity model in
docs/PERFORMANCE.md.
"""

from __future__ import annotations

import gzip
import random
from typing import Any

import pytest

from kubemetrics import _native
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text

NODES = 1_000
PODS = 30
RES_S = 15.0
T0 = 1_735_032_800_000
ALNUM = "bcdfghjklmnpqrstvwxz2456789"
APPS = ("api", "web", "worker", "cache", "gateway", "indexer", "scheduler", "exporter")
NAMESPACES = ("kube-system", "monitoring", "payments-prod", "checkout", "default", "ingress")


def _bodies() -> list[tuple[str, bytes, bytes]]:
    """(node, first sample, second sample 10 s later); realistic names, ~1.3 containers a pod."""
    rng = random.Random(7)
    out = []
    for i in range(NODES):
        pods = []
        for _ in range(PODS):
            app = rng.choice(APPS)
            pod = f"{app}-{''.join(rng.choices(ALNUM, k=10))}-{''.join(rng.choices(ALNUM, k=5))}"
            names = [app] + (["istio-proxy"] if rng.random() < 0.3 else [])
            ns = rng.choice(NAMESPACES)
            for name in names:
                pods.append((ns, pod, name, rng.uniform(10, 90_000), rng.uniform(2e7, 2e9)))
        samples = []
        for k in (0, 1):
            t = T0 + 10_000 * k + i % 997
            cs = [
                ContainerSample(ns, pod, name, cpu + k * rng.uniform(0.01, 5), mem, 1.7e9, t - j)
                for j, (ns, pod, name, cpu, mem) in enumerate(pods)
            ]
            samples.append(kubelet_text(NodeSample(1e6 + i + 8.0 * k, 3e10, t), cs))
        out.append((f"node-{i:04d}", samples[0], samples[1]))
    return out


@pytest.fixture(scope="module")
def bodies() -> list[tuple[str, bytes, bytes]]:
    return _bodies()


def _ingested(bodies: list[tuple[str, bytes, bytes]]) -> _native.Store:
    s = _native.Store(RES_S)
    for node, a, b in bodies:
        s.ingest(node, a, T0)
        s.ingest(node, b, T0 + 10_000)
    return s


NOW = T0 + 12_000


def test_baseline_scrape_ingest(benchmark: Any, bodies: list[tuple[str, bytes, bytes]]) -> None:
    """What a replica pays to get these points from the kubelets (parse + store, two samples)."""
    benchmark(_ingested, bodies)


def test_export_points(benchmark: Any, bodies: list[tuple[str, bytes, bytes]]) -> None:
    s = _ingested(bodies)
    body = benchmark(s.export_points, NOW, [])
    containers = s.points()[1]
    text = sum(len(b) for _, _, b in bodies)
    text_gz = sum(len(gzip.compress(b, 1)) for _, _, b in bodies)
    benchmark.extra_info.update(
        {
            "nodes": NODES,
            "containers": containers,
            "body_bytes": len(body),
            "bytes_per_container": round(len(body) / containers, 1),
            "kubelet_text_bytes": text,
            "kubelet_text_gzip_bytes": text_gz,
            "body_vs_kubelet_gzip": round(len(body) / text_gz, 3),
        }
    )


def test_import_points_into_an_empty_store(
    benchmark: Any, bodies: list[tuple[str, bytes, bytes]]
) -> None:
    body = _ingested(bodies).export_points(NOW, [])

    def run() -> None:
        nodes, _ = _native.Store(RES_S).import_points(body, NOW, 1 << 30)
        assert len(nodes) == NODES

    benchmark(run)


def test_import_points_steady_state(benchmark: Any, bodies: list[tuple[str, bytes, bytes]]) -> None:
    """Every cycle's import merges into what the last one brought."""
    body = _ingested(bodies).export_points(NOW, [])
    peer = _native.Store(RES_S)
    peer.import_points(body, NOW, 1 << 30)
    benchmark(peer.import_points, body, NOW, 1 << 30)
    snap = peer.snapshot(NOW)
    assert len(snap.nodes["name"]) == NODES
