"""Encoding benchmarks: metrics.k8s.io responses for 150,000 pods (issue 4, item 9).

The snapshot is real: generated kubelet payloads for 5,000 nodes × 30 pods, ingested twice
into the Store. The same-run baseline builds the same PodMetricsList as Python dicts from the
snapshot's columns and serialises it with orjson (what a straightforward Python server would
do); each of our benchmarks reports its speedup over it. Goals: ≤ 100 ms JSON, ≤ 50 ms
protobuf for the 150k list.

Also: an HPA-shaped query (one namespace, a label selector, 100 of 150,000 pods) end to end
(select + encode protobuf), and the selection of all pods alone.

Names are stable for `make bench-save` / `make bench-compare`.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import numpy as np
import orjson
import pytest

from kubemetrics import _native
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text

NODES = 5_000
PODS_PER_NODE = 30
NAMESPACES = 500  # 300 pods each: 3 deployments × 100 pods
APPS = 3
T0_MS = 1_735_032_800_000
WINDOW_MS = 15_012
NOW_S = T0_MS / 1000 + 20.5

_medians: dict[str, float] = {}


@dataclass
class Env:
    store: _native.Store
    snap: _native.Snapshot
    inv: _native.Inventory
    labels: dict[tuple[str, str], dict[str, str]]
    all_pods: np.ndarray[Any, np.dtype[np.int64]]
    # The snapshot's columns as Python lists, extracted once (not part of the timings).
    pods: dict[str, list[Any]]
    containers: dict[str, list[Any]]


def _pod(k: int) -> tuple[str, str, dict[str, str], int]:
    """Pod number k: namespace, name, labels, container count (1 or 2)."""
    ns = f"team-{k % NAMESPACES:03d}"
    j = k // NAMESPACES
    app = f"svc-{j % APPS}"
    name = f"{app}-7c9d8f6b5-{j:05d}"
    labels = {"app": app, "pod-template-hash": "7c9d8f6b5", "team": ns}
    return ns, name, labels, 1 + (k % 2)


def _payload(node: int, scrape: int) -> bytes:
    ts = T0_MS + scrape * WINDOW_MS
    containers = []
    for p in range(PODS_PER_NODE):
        k = node * PODS_PER_NODE + p
        ns, name, _, nc = _pod(k)
        containers += [
            ContainerSample(
                ns,
                name,
                f"c{c}",
                100 + k % 97 + scrape * 0.75 * c,
                (k % 4096 + 1) * 4096,
                1.7e9,
                ts,
            )
            for c in range(nc)
        ]
    node_sample = NodeSample(1000 + scrape * 3.5, 8 * 2**30 + node, ts)
    return kubelet_text(node_sample, containers)


@pytest.fixture(scope="module")
def env() -> Env:
    store = _native.Store(15.0)
    inv = _native.Inventory()
    labels: dict[tuple[str, str], dict[str, str]] = {}
    for node in range(NODES):
        name = f"node-{node:05d}"
        for scrape in range(2):
            store.ingest(name, _payload(node, scrape), T0_MS + scrape * WINDOW_MS)
        inv.set_node(name, {"kubernetes.io/hostname": name})
        for p in range(PODS_PER_NODE):
            ns, pod, lab, _ = _pod(node * PODS_PER_NODE + p)
            inv.set_pod(ns, pod, lab)
            labels[(ns, pod)] = lab
    snap = store.snapshot(T0_MS + WINDOW_MS + 1000)
    all_pods = _native.select_pods(snap, inv, None, "", "")
    assert len(all_pods) == NODES * PODS_PER_NODE
    pods = {k: v.tolist() for k, v in snap.pods.items()}
    containers = {k: v.tolist() for k, v in snap.containers.items()}
    return Env(store, snap, inv, labels, all_pods, pods, containers)


# ---- the baseline: Python dicts + orjson -------------------------------------------------


def _py_decimal_si(value: int, scale: int) -> str:
    if value == 0:
        return "0"
    e = scale
    while value % 10 == 0:
        value //= 10
        e += 1
    r = e % 3
    value *= 10**r
    e -= r
    return f"{value}{ {-9: 'n', -6: 'u', -3: 'm', 0: '', 3: 'k', 6: 'M', 9: 'G'}[e] }"


def _py_memory(b: int) -> str:
    if b < 1024:
        return _py_decimal_si(b, 0)
    k = 0
    while b % 1024 == 0 and k < 6:
        b //= 1024
        k += 1
    return f"{b}{['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'][k]}"


@lru_cache(maxsize=4096)
def _py_time(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=4096)
def _py_window(ms: int) -> str:
    s, frac = divmod(ms, 1000)
    return f"{s}" + (f".{frac:03d}".rstrip("0") if frac else "") + "s"


def python_pod_list(env: Env, idx: np.ndarray[Any, Any]) -> bytes:
    p, c = env.pods, env.containers
    ns_col, name_col = p["namespace"], p["name"]
    ts_col, win_col = p["timestamp_ms"], p["window_ms"]
    starts = p["container_start"]
    cnames, ccpu, cmem = c["name"], c["cpu_nanocores"], c["memory_bytes"]
    now = _py_time(int(NOW_S * 1000))
    items = []
    for i in idx.tolist():
        ns, name = ns_col[i], name_col[i]
        meta: dict[str, Any] = {"name": name, "namespace": ns, "creationTimestamp": now}
        lab = env.labels.get((ns, name))
        if lab:
            meta["labels"] = lab
        items.append(
            {
                "metadata": meta,
                "timestamp": _py_time(ts_col[i]),
                "window": _py_window(win_col[i]),
                "containers": [
                    {
                        "name": cnames[j],
                        "usage": {
                            "cpu": _py_decimal_si(ccpu[j], -9),
                            "memory": _py_memory(cmem[j]),
                        },
                    }
                    for j in range(starts[i], starts[i + 1])
                ],
            }
        )
    return orjson.dumps(
        {
            "kind": "PodMetricsList",
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": items,
        },
        option=orjson.OPT_SORT_KEYS,
    )


def _record(benchmark: Any, name: str, baseline: str | None = None) -> None:
    median = float(statistics.median(benchmark.stats.stats.data))
    _medians[name] = median
    benchmark.extra_info["median_ms"] = round(median * 1e3, 3)
    if baseline and baseline in _medians:
        ratio = _medians[baseline] / median
        benchmark.extra_info[f"speedup_vs_{baseline}"] = round(ratio, 1)
        print(f"\n{name}: {median * 1e3:.2f} ms, {ratio:.1f}x faster than {baseline}")
    else:
        print(f"\n{name}: {median * 1e3:.2f} ms")


def _encode(env: Env, idx: Any, fmt: str) -> bytes:
    return _native.encode_pods(
        env.snap, env.inv, idx, api_version="v1beta1", fmt=fmt, single=False, now_s=NOW_S
    )


# ---- benchmarks --------------------------------------------------------------------------


def test_encode_python_dicts_orjson_150k(benchmark: Any, env: Env) -> None:
    body = benchmark.pedantic(python_pod_list, args=(env, env.all_pods), rounds=3, iterations=1)
    _record(benchmark, "python_dicts_orjson_150k")
    # Same content as ours (orjson sorts keys; compare parsed).
    ours = json.loads(_encode(env, env.all_pods, "json"))
    assert json.loads(body) == ours


def test_encode_pods_json_150k(benchmark: Any, env: Env) -> None:
    _encode(env, env.all_pods, "json")  # first call builds the fragment cache
    body = benchmark.pedantic(
        _encode, args=(env, env.all_pods, "json"), rounds=15, iterations=1, warmup_rounds=1
    )
    _record(benchmark, "pods_json_150k", "python_dicts_orjson_150k")
    assert body.count(b'"namespace":') == NODES * PODS_PER_NODE


def test_encode_pods_protobuf_150k(benchmark: Any, env: Env) -> None:
    _encode(env, env.all_pods, "protobuf")
    body = benchmark.pedantic(
        _encode, args=(env, env.all_pods, "protobuf"), rounds=15, iterations=1, warmup_rounds=1
    )
    _record(benchmark, "pods_protobuf_150k", "python_dicts_orjson_150k")
    assert body.startswith(b"k8s\x00")


def test_encode_pods_json_150k_cold(benchmark: Any, env: Env) -> None:
    """First request after a new snapshot: the fragments are built within the call."""

    def fresh() -> tuple[tuple[_native.Snapshot], dict[str, Any]]:
        # Same data, new identity, hence an empty fragment cache (not timed).
        return (env.store.snapshot(T0_MS + WINDOW_MS + 1000),), {}

    def cold(snap: _native.Snapshot) -> bytes:
        return _native.encode_pods(
            snap,
            env.inv,
            env.all_pods,
            api_version="v1beta1",
            fmt="json",
            single=False,
            now_s=NOW_S,
        )

    benchmark.pedantic(cold, setup=fresh, rounds=3, iterations=1)
    _record(benchmark, "pods_json_150k_cold", "python_dicts_orjson_150k")


def test_warm_cache_protobuf_150k(benchmark: Any, env: Env) -> None:
    """Building every protobuf fragment of a new snapshot (what a worker thread can do
    right after each scrape, off the request path)."""

    def fresh() -> tuple[tuple[_native.Snapshot], dict[str, Any]]:
        return (env.store.snapshot(T0_MS + WINDOW_MS + 1000),), {}

    benchmark.pedantic(_native.warm_cache, setup=fresh, rounds=3, iterations=1)
    _record(benchmark, "warm_cache_protobuf_150k")


def test_select_all_pods_150k(benchmark: Any, env: Env) -> None:
    idx = benchmark.pedantic(
        _native.select_pods, args=(env.snap, env.inv, None, "", ""), rounds=15, iterations=1
    )
    _record(benchmark, "select_all_pods_150k")
    assert len(idx) == NODES * PODS_PER_NODE


def _hpa_query(env: Env) -> bytes:
    idx = _native.select_pods(env.snap, env.inv, "team-042", "app=svc-1", "")
    return _encode(env, idx, "protobuf")


def _python_hpa_query(env: Env, by_ns: dict[str, list[int]]) -> bytes:
    """Baseline: a per-namespace index, label matching and dicts + orjson in Python."""
    keep = np.array(
        [i for i in by_ns["team-042"] if env.labels[_key(env, i)].get("app") == "svc-1"],
        dtype=np.int64,
    )
    return python_pod_list(env, keep)


def _key(env: Env, i: int) -> tuple[str, str]:
    return (env.pods["namespace"][i], env.pods["name"][i])


def test_hpa_query_python_baseline(benchmark: Any, env: Env) -> None:
    by_ns: dict[str, list[int]] = {}
    for i, ns in enumerate(env.pods["namespace"]):
        by_ns.setdefault(ns, []).append(i)
    body = benchmark.pedantic(_python_hpa_query, args=(env, by_ns), rounds=5, iterations=1)
    _record(benchmark, "hpa_query_python")
    assert len(json.loads(body)["items"]) == 100


def test_hpa_query_100_of_150k(benchmark: Any, env: Env) -> None:
    _hpa_query(env)
    body = benchmark.pedantic(_hpa_query, args=(env,), rounds=200, iterations=1, warmup_rounds=5)
    _record(benchmark, "hpa_query_100_of_150k", "hpa_query_python")
    idx = _native.select_pods(env.snap, env.inv, "team-042", "app=svc-1", "")
    assert len(idx) == 100 and body.startswith(b"k8s\x00")
