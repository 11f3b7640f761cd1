"""Store benchmarks: ingest + compute for 1,000 nodes × 30 pods (SPEC §3).

Measured against a same-run baseline, a straightforward pure-Python dict store
implementing the same rules over values that are *already parsed* (so the
baseline skips the parsing our path includes: the ratio is conservative).
Both produce the same snapshot; the first benchmark checks that.

Benchmark names are stable so `make bench-save` / `make bench-compare` keep a
comparable history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from kubemetrics import Store
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text

NODES = 1_000
PODS = 30
NAMESPACES = 20
RES_MS = 15_000
T0 = 1_735_032_800_000
START = 1_735_000_000.0

# (namespace, pod, container, cpu s, memory B, start s, ts ms)
Row = tuple[str, str, str, float, float, float, int]

_medians: dict[str, float] = {}


@dataclass
class Cluster:
    names: list[str]
    # Two scrapes 10 s apart, as bytes and as already-parsed rows.
    payloads: list[list[bytes]]
    nodes: list[list[tuple[float, float, int]]]
    rows: list[list[list[Row]]]


def _node_payload(node: tuple[float, float, int], rows: list[Row]) -> bytes:
    """One kubelet body in the current format (the simulator's writer), sorted as the kubelet
    sorts."""
    ordered = sorted(rows, key=lambda r: (r[2], r[0], r[1]))
    return kubelet_text(
        NodeSample(*node), [ContainerSample(*r) for r in ordered], scrape_error=False
    )


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    names = [f"node-{i:04d}" for i in range(NODES)]
    payloads: list[list[bytes]] = [[], []]
    nodes: list[list[tuple[float, float, int]]] = [[], []]
    rows: list[list[list[Row]]] = [[], []]
    for i in range(NODES):
        for k in (0, 1):
            t = T0 + 10_000 * k + i % 997
            node = (350_000.0 + i + 7.5 * k, 6.8e9 + i * 4096, t)
            r: list[Row] = []
            for j in range(PODS):
                ns = f"team-{(i * PODS + j) % NAMESPACES:02d}"
                pod = f"app-{i:04d}-{j:02d}-7c9d8f6b5-x2k9p"
                cpu = 100.0 + 3.25 * j + i / 1000 + 0.5 * k * (1 + j % 4)
                mem = float(50_000_000 + 4096 * j + i)
                r.append((ns, pod, "app", cpu, mem, START + j, t - j * 7))
            payloads[k].append(_node_payload(node, r))
            nodes[k].append(node)
            rows[k].append(r)
    return Cluster(names, payloads, nodes, rows)


# --- the baseline: the same rules in plain Python dicts ----------------------------------------


class PyStore:
    """A straightforward pure-Python store with SPEC §3's rules (the baseline)."""

    def __init__(self, resolution_ms: int) -> None:
        self.res = resolution_ms
        # node -> (scraped, last, prev, {(ns, pod, c): (last, prev)}); points are (ts, cpu_ns, mem)
        self.nodes: dict[
            str, tuple[int, Any, Any, dict[tuple[str, str, str], tuple[Any, Any]]]
        ] = {}

    @staticmethod
    def _prev(last: Any, prev: Any, ts: int) -> Any:
        if last is None:
            return None
        if ts > last[0]:
            return last
        return prev if prev is not None and prev[0] < ts else None

    def ingest(self, node: str, n: tuple[float, float, int], rows: list[Row], t: int) -> None:
        _, last, prev, old = self.nodes.get(node, (t, None, None, {}))
        cpu, mem = int(n[0] * 1e9), int(n[1])
        if cpu and mem:
            point = (n[2] or t, cpu, mem)
            last, prev = point, self._prev(last, prev, point[0])
        else:
            last = prev = None
        pods: dict[tuple[str, str], list[Row]] = {}
        for r in rows:
            pods.setdefault((r[0], r[1]), []).append(r)
        new: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        for group in pods.values():
            if any(int(r[3] * 1e9) == 0 or int(r[4]) == 0 for r in group):
                continue
            for ns, pod, c, cpu_s, mem_b, start_s, ts in group:
                ts = ts or t
                start = round(start_s * 1000)
                p = (ts, int(cpu_s * 1e9), int(mem_b))
                if 10_000 <= ts - start < self.res:
                    pv = (start, 0, 0)
                else:
                    o = old.get((ns, pod, c))
                    pv = None if o is None or start >= o[0][0] else self._prev(o[0], o[1], ts)
                new[(ns, pod, c)] = (p, pv)
        self.nodes[node] = (t, last, prev, new)

    def snapshot(self, now: int) -> tuple[list[Any], list[Any]]:
        out_nodes: list[Any] = []
        out_pods: dict[tuple[str, str], Any] = {}
        for node in sorted(self.nodes):
            scraped, last, prev, containers = self.nodes[node]
            if now - scraped > 2 * self.res:
                continue
            if last and prev and last[1] >= prev[1]:
                out_nodes.append((node, (last[1] - prev[1]) * 1000 // (last[0] - prev[0]), last[2]))
            pods: dict[tuple[str, str], list[Any]] = {}
            for (ns, pod, c), (p, pv) in containers.items():
                pods.setdefault((ns, pod), []).append((c, p, pv))
            for key, cs in pods.items():
                if any(pv is None or p[1] < pv[1] for _, p, pv in cs):
                    continue
                cs.sort()
                first = min(cs, key=lambda x: x[1][0])
                usage = [(c, (p[1] - pv[1]) * 1000 // (p[0] - pv[0]), p[2]) for c, p, pv in cs]
                if key not in out_pods or out_pods[key][1] < first[1][0]:
                    out_pods[key] = (node, first[1][0], first[1][0] - first[2][0], usage)
        return out_nodes, sorted(out_pods.items())


# --- benchmarks ----------------------------------------------------------------------------------


def _ours(cluster: Cluster) -> tuple[Store, Callable[[], Any]]:
    store = Store(RES_MS / 1000)
    for k in (0, 1):
        for name, body in zip(cluster.names, cluster.payloads[k], strict=True):
            store.ingest(name, body, T0 + 10_000 * k)
    now = T0 + 10_000

    def cycle() -> Any:
        # One scrape cycle: every node's body (the kubelet had not refreshed:
        # the same samples, which keeps the pair) and one snapshot.
        for name, body in zip(cluster.names, cluster.payloads[1], strict=True):
            store.ingest(name, body, now)
        return store.snapshot(now)

    return store, cycle


def _python(cluster: Cluster) -> tuple[PyStore, Callable[[], Any]]:
    store = PyStore(RES_MS)
    for k in (0, 1):
        for name, n, r in zip(cluster.names, cluster.nodes[k], cluster.rows[k], strict=True):
            store.ingest(name, n, r, T0 + 10_000 * k)
    now = T0 + 10_000

    def cycle() -> Any:
        for name, n, r in zip(cluster.names, cluster.nodes[1], cluster.rows[1], strict=True):
            store.ingest(name, n, r, now)
        return store.snapshot(now)

    return store, cycle


def _record(benchmark: Any, name: str, baseline: str | None = None) -> None:
    median = float(benchmark.stats.stats.median)
    _medians[name] = median
    benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
    if baseline and baseline in _medians:
        ratio = _medians[baseline] / median
        benchmark.extra_info[f"speedup_vs_{baseline}"] = round(ratio, 1)
        print(f"\n{name}: {median * 1e3:.2f} ms, {ratio:.1f}x faster than {baseline}")


def test_store_python_baseline_1000x30(benchmark: Any, cluster: Cluster) -> None:
    _, cycle = _python(cluster)
    nodes, pods = benchmark.pedantic(cycle, rounds=5, iterations=1, warmup_rounds=1)
    assert len(nodes) == NODES
    assert len(pods) == NODES * PODS
    _record(benchmark, "python_baseline")


def test_store_ingest_snapshot_1000x30(benchmark: Any, cluster: Cluster) -> None:
    _, cycle = _ours(cluster)
    snap = benchmark.pedantic(cycle, rounds=30, iterations=1, warmup_rounds=2)
    # Same answer as the baseline, value for value.
    _, py_cycle = _python(cluster)
    py_nodes, py_pods = py_cycle()
    assert snap.nodes["name"].tolist() == [n[0] for n in py_nodes]
    assert snap.nodes["cpu_nanocores"].tolist() == [n[1] for n in py_nodes]
    assert snap.pods["name"].tolist() == [k[1] for k, _ in py_pods]
    assert snap.pods["window_ms"].tolist() == [v[2] for _, v in py_pods]
    assert snap.containers["cpu_nanocores"].tolist() == [u[1] for _, v in py_pods for u in v[3]]
    _record(benchmark, "ingest_snapshot", "python_baseline")


def test_store_python_snapshot_only_1000x30(benchmark: Any, cluster: Cluster) -> None:
    store, _ = _python(cluster)
    benchmark.pedantic(store.snapshot, args=(T0 + 10_000,), rounds=5, iterations=1, warmup_rounds=1)
    _record(benchmark, "python_snapshot_only")


def test_store_snapshot_only_1000x30(benchmark: Any, cluster: Cluster) -> None:
    store, _ = _ours(cluster)
    snap = benchmark.pedantic(
        store.snapshot, args=(T0 + 10_000,), rounds=50, iterations=1, warmup_rounds=2
    )
    assert snap.pods["name"].size == NODES * PODS
    _record(benchmark, "snapshot_only", "python_snapshot_only")


def test_store_ingest_only_1000x30(benchmark: Any, cluster: Cluster) -> None:
    store, _ = _ours(cluster)
    now = T0 + 10_000

    def ingest_all() -> None:
        for name, body in zip(cluster.names, cluster.payloads[1], strict=True):
            store.ingest(name, body, now)

    benchmark.pedantic(ingest_all, rounds=30, iterations=1, warmup_rounds=2)
    assert store.points() == (NODES, NODES * PODS)
    _record(benchmark, "ingest_only")
