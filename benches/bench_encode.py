"""Serving benchmarks in process: the served view of 150,000 pods (issue 4 item 9, issue 9).

The snapshot is real: generated kubelet payloads for 5,000 nodes × 30 pods, ingested twice
into the Store. Same-run baselines: the same PodMetricsList built as Python dicts from the
snapshot's columns and serialised with orjson (what a straightforward Python server would do),
and, for selection, the view's own plain scan (every pod tested in turn, what selection was
before the label index). Goals: ≤ 100 ms JSON, ≤ 50 ms protobuf for the 150k list; an
`in` list of 1,500 values ≤ 2 ms at 150k pods.

Also: building a snapshot's view (members, label index, every fragment: once per cycle in a
worker thread), an HPA-shaped query (one namespace, a label selector) end to end, and gzip
levels on a real body (size and time), which chose the level the server uses.

Names are stable for `make bench-save` / `make bench-compare`.
"""

from __future__ import annotations

import gzip
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
from kubemetrics._native._testing import gzip_compress, select_scan
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
    view: _native.View
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
    view = snap.view(inv)
    all_pods = view.query("pods").select()
    assert len(all_pods) == NODES * PODS_PER_NODE
    pods = {k: v.tolist() for k, v in snap.pods.items()}
    containers = {k: v.tolist() for k, v in snap.containers.items()}
    return Env(store, snap, inv, view, labels, all_pods, pods, containers)


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


def _list(env: Env, fmt: str, namespace: str | None = None, labels: str = "") -> bytes:
    """A list read chunk by chunk, as the server sends it, joined."""
    body = env.view.query("pods", namespace, labels).respond(
        api_version="v1beta1", fmt=fmt, now_s=NOW_S
    )
    chunks = []
    while chunk := body.read():
        chunks.append(chunk)
    return b"".join(chunks)


def _stream(env: Env, fmt: str, gzip: bool = False) -> int:
    """A full list read chunk by chunk, as the server sends it; returns the bytes."""
    body = env.view.query("pods").respond(api_version="v1beta1", fmt=fmt, now_s=NOW_S, gzip=gzip)
    n = 0
    while chunk := body.read():
        n += len(chunk)
    return n


# ---- benchmarks --------------------------------------------------------------------------


def test_encode_python_dicts_orjson_150k(benchmark: Any, env: Env) -> None:
    body = benchmark.pedantic(python_pod_list, args=(env, env.all_pods), rounds=3, iterations=1)
    _record(benchmark, "python_dicts_orjson_150k")
    # Same content as ours (orjson sorts keys; compare parsed).
    ours = json.loads(_list(env, "json"))
    assert json.loads(body) == ours


# The full lists are timed as the server produces them: selection, then ~128 KiB chunks.


def test_encode_pods_json_150k(benchmark: Any, env: Env) -> None:
    n = benchmark.pedantic(_stream, args=(env, "json"), rounds=15, iterations=1, warmup_rounds=1)
    _record(benchmark, "pods_json_150k", "python_dicts_orjson_150k")
    body = _list(env, "json")
    assert n == len(body) and body.count(b'"namespace":') == NODES * PODS_PER_NODE


def test_encode_pods_protobuf_150k(benchmark: Any, env: Env) -> None:
    n = benchmark.pedantic(
        _stream, args=(env, "protobuf"), rounds=15, iterations=1, warmup_rounds=1
    )
    _record(benchmark, "pods_protobuf_150k", "python_dicts_orjson_150k")
    body = _list(env, "protobuf")
    assert n == len(body) and body.startswith(b"k8s\x00")


def test_encode_pods_table_150k(benchmark: Any, env: Env) -> None:
    n = benchmark.pedantic(_stream, args=(env, "table"), rounds=10, iterations=1, warmup_rounds=1)
    _record(benchmark, "pods_table_150k", "python_dicts_orjson_150k")
    body = _list(env, "table")
    assert n == len(body) and body.count(b'"cells":') == NODES * PODS_PER_NODE


def test_stream_pods_json_gzip_150k(benchmark: Any, env: Env) -> None:
    """The full JSON list gzip-compressed chunk by chunk (the server does this off the loop)."""
    n = benchmark.pedantic(
        _stream, args=(env, "json", True), rounds=5, iterations=1, warmup_rounds=1
    )
    _record(benchmark, "stream_pods_json_gzip_150k", "pods_json_150k")
    plain = len(_list(env, "json"))
    benchmark.extra_info["compressed_ratio"] = round(n / plain, 4)
    print(f"  {plain / 1e6:.1f} MB -> {n / 1e6:.2f} MB")


def test_view_build_150k(benchmark: Any, env: Env) -> None:
    """A snapshot's view: members, label index and every JSON/protobuf/Table fragment (once
    per cycle, in a worker thread, before the snapshot is published)."""

    def fresh() -> tuple[tuple[_native.Snapshot], dict[str, Any]]:
        # Same data, new identity, hence no view yet (not timed).
        return (env.store.snapshot(T0_MS + WINDOW_MS + 1000),), {}

    def build(snap: _native.Snapshot) -> _native.View:
        return snap.view(env.inv)

    view = benchmark.pedantic(build, setup=fresh, rounds=3, iterations=1)
    _record(benchmark, "view_build_150k")
    benchmark.extra_info["view_heap_mib"] = round(view.heap_bytes() / 2**20, 1)
    print(f"  view holds {view.heap_bytes() / 2**20:.1f} MiB")


def test_select_all_pods_150k(benchmark: Any, env: Env) -> None:
    query = env.view.query("pods")
    idx = benchmark.pedantic(query.select, rounds=15, iterations=1)
    _record(benchmark, "select_all_pods_150k")
    assert len(idx) == NODES * PODS_PER_NODE


# 1,500 values of which 3 exist (team-042's svc-0..2 are in every namespace).
IN_1500 = "app in ({})".format(",".join([f"v{i}" for i in range(1497)] + ["svc-0", "svc-1"]))


def test_select_in_1500_values_scan(benchmark: Any, env: Env) -> None:
    """Baseline: every pod of the cluster tested in turn against the 1,500 values."""
    idx = benchmark.pedantic(
        select_scan, args=(env.view, "pods", None, IN_1500), rounds=3, iterations=1
    )
    _record(benchmark, "select_in_1500_scan")
    assert len(idx) == 2 * NODES * PODS_PER_NODE // APPS


def test_select_in_1500_values(benchmark: Any, env: Env) -> None:
    """Through the label index: one hash lookup per value, then the matching postings."""

    def select() -> Any:
        return env.view.query("pods", None, IN_1500).select()

    idx = benchmark.pedantic(select, rounds=20, iterations=1, warmup_rounds=1)
    _record(benchmark, "select_in_1500", "select_in_1500_scan")
    assert len(idx) == 2 * NODES * PODS_PER_NODE // APPS


def test_select_in_1500_values_nothing(benchmark: Any, env: Env) -> None:
    """`app in (v1, …, v1500)` matching nothing: the cost is the 1,500 lookups."""
    sel = "app in ({})".format(",".join(f"v{i}" for i in range(1, 1501)))

    def select() -> Any:
        return env.view.query("pods", None, sel).select()

    idx = benchmark.pedantic(select, rounds=50, iterations=1, warmup_rounds=1)
    _record(benchmark, "select_in_1500_nothing")
    assert len(idx) == 0


def _hpa_query(env: Env) -> bytes:
    return _list(env, "protobuf", "team-042", "app=svc-1")


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
    body = benchmark.pedantic(_hpa_query, args=(env,), rounds=200, iterations=1, warmup_rounds=5)
    _record(benchmark, "hpa_query_100_of_150k", "hpa_query_python")
    idx = env.view.query("pods", "team-042", "app=svc-1").select()
    assert len(idx) == 100 and body.startswith(b"k8s\x00")


@pytest.mark.parametrize("level", [1, 2, 4, 6])
def test_gzip_level(benchmark: Any, env: Env, level: int) -> None:
    """Deflate levels on the full JSON list (47 MB at 5,000 × 30 in the simulator): the
    server uses level 1 (kube-apiserver's choice) unless a higher one buys enough size."""
    plain = _list(env, "json")[: 8 << 20]  # 8 MiB is representative and keeps rounds short
    out = benchmark.pedantic(gzip_compress, args=(plain, level), rounds=3, iterations=1)
    _record(benchmark, f"gzip_level_{level}", "gzip_level_1" if level > 1 else None)
    assert gzip.decompress(out) == plain
    benchmark.extra_info["ratio"] = round(len(out) / len(plain), 4)
    mb_s = len(plain) / 1e6 / float(statistics.median(benchmark.stats.stats.data))
    benchmark.extra_info["mb_per_s"] = round(mb_s)
    print(f"  level {level}: {len(out) / len(plain):.3f} of the size, {mb_s:.0f} MB/s")


@pytest.mark.parametrize("size", [32 << 10, 64 << 10, 128 << 10, 256 << 10, 512 << 10])
def test_read_chunks(benchmark: Any, env: Env, size: int) -> None:
    """The full JSON list produced in chunks of `size` bytes (`Body.read(size)`): the binding's
    and the encoder's per-chunk cost (benches/bench_chunks.py has the event loop's)."""

    def read_all() -> int:
        body = env.view.query("pods").respond(api_version="v1beta1", fmt="json", now_s=NOW_S)
        n = 0
        while chunk := body.read(size):
            n += len(chunk)
        return n

    n = benchmark.pedantic(read_all, rounds=5, iterations=1, warmup_rounds=1)
    _record(
        benchmark, f"read_chunks_{size >> 10}k", "read_chunks_128k" if size != 128 << 10 else None
    )
    benchmark.extra_info["chunks"] = n // size + 1
