"""The store through its Python door: real kubelet payload bytes in, SPEC §3 rates out.

Expected values are computed here from the payload numbers with Python integers
(truncation as SPEC §1/§3 define it), never read back from the store.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, replace

import numpy as np
import pytest

from kubemetrics import Snapshot, Store
from kubemetrics._native import ParseError
from kubemetrics._native._testing import ingest_parsed, parse_resource_metrics
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text
from tests.helpers.paths import SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES

RES = 15.0
RES_MS = 15_000
T0 = 1_735_032_800_000
OLD_START = 1_700_000_000.0  # long-running: never fresh, never restarted


@dataclass(frozen=True)
class C:
    """One container's samples; None leaves the line out of the payload."""

    namespace: str
    pod: str
    name: str
    cpu: float | None
    memory: float | None
    start: float | None = OLD_START
    ts: int | None = None


def payload(
    node: tuple[float | None, float | None, int | None] | None,
    containers: list[C],
) -> bytes:
    """A payload in the current kubelet's form (the simulator's writer), containers sorted by
    label values as the kubelet sorts them."""
    ordered = sorted(containers, key=lambda c: (c.name, c.namespace, c.pod))
    return kubelet_text(
        None if node is None else NodeSample(*node),
        [
            ContainerSample(c.namespace, c.pod, c.name, c.cpu, c.memory, c.start, c.ts)
            for c in ordered
        ],
        scrape_error=False,
    )


def nanocores(cpu_last: float, cpu_prev: float, ts_last: int, ts_prev: int) -> int:
    return (int(cpu_last * 1e9) - int(cpu_prev * 1e9)) * 1000 // (ts_last - ts_prev)


def pods_of(snap: Snapshot) -> list[tuple[str, str]]:
    p = snap.pods
    return list(zip(p["namespace"].tolist(), p["name"].tolist(), strict=True))


def containers_of(snap: Snapshot, namespace: str, pod: str) -> dict[str, tuple[int, int]]:
    i = snap.pod_index(namespace, pod)
    assert i is not None, f"{namespace}/{pod} not served"
    start = snap.pods["container_start"]
    c = snap.containers
    rows = range(int(start[i]), int(start[i + 1]))
    return {c["name"][k]: (int(c["cpu_nanocores"][k]), int(c["memory_bytes"][k])) for k in rows}


def two_scrapes(
    store: Store, node: str, first: list[C], second: list[C], t0: int = T0, dt: int = 10_000
) -> Snapshot:
    store.ingest(node, payload((100.0, 1e9, t0), [replace(c, ts=c.ts or t0) for c in first]), t0)
    t1 = t0 + dt
    store.ingest(node, payload((101.0, 1e9, t1), [replace(c, ts=c.ts or t1) for c in second]), t1)
    return store.snapshot(t1)


# --- real captures ---------------------------------------------------------------------------


def bump(data: bytes, cpu_add: float, ts_add: int) -> bytes:
    """A later scrape of the same kubelet: every CPU counter advanced by
    `cpu_add` core-seconds and every timestamp by `ts_add` ms."""
    out = []
    for line in data.decode().splitlines():
        m = re.match(r"^((?:node|container)_cpu_usage_seconds_total\S*) (\S+) (\d+)$", line)
        if m:
            line = f"{m[1]} {float(m[2]) + cpu_add!r} {int(m[3]) + ts_add}"
        else:
            m = re.match(r"^((?:node|container)_memory_working_set_bytes\S*) (\S+) (\d+)$", line)
            if m:
                line = f"{m[1]} {m[2]} {int(m[3]) + ts_add}"
        out.append(line)
    return ("\n".join(out) + "\n").encode()


def test_kind_capture_two_scrapes_give_every_pod_its_rate() -> None:
    data = (FIXTURES / "kind-v1.21-70-pods.txt").read_bytes()
    later = bump(data, 0.25, 15_000)
    store = Store(RES)
    store.ingest("kind-control-plane", data, T0)
    assert store.snapshot(T0).pods["name"].size == 0, "one scrape is not a rate"
    store.ingest("kind-control-plane", later, T0 + 15_000)
    snap = store.snapshot(T0 + 15_000)

    first = parse_resource_metrics(data).containers
    second = parse_resource_metrics(later).containers
    assert snap.pods["name"].size == 70
    assert snap.containers["name"].size == 70
    for k in range(first["pod"].size):
        got = containers_of(snap, first["namespace"][k], first["pod"][k])
        want = nanocores(
            float(second["cpu_seconds"][k]),
            float(first["cpu_seconds"][k]),
            int(second["timestamp_ms"][k]),
            int(first["timestamp_ms"][k]),
        )
        assert got == {first["container"][k]: (want, int(second["memory_bytes"][k]))}
    # Every window is the 15 s between the two samples.
    assert set(snap.pods["window_ms"].tolist()) == {15_000}
    assert snap.nodes["name"].tolist() == ["kind-control-plane"]
    n0, n1 = parse_resource_metrics(data).node, parse_resource_metrics(later).node
    want_node = nanocores(
        float(n1["cpu_seconds"]),
        float(n0["cpu_seconds"]),
        int(n1["timestamp_ms"]),
        int(n0["timestamp_ms"]),
    )
    assert want_node == 16_666_666  # 0.25 core-seconds over 15 s
    assert snap.nodes["cpu_nanocores"].tolist() == [want_node]
    assert snap.ready
    assert store.points() == (1, 70)


def test_current_kubelet_format_sidecar_pod_takes_earliest_container_time() -> None:
    data = (FIXTURES / "kubelet-v1.30-3-pods.txt").read_bytes()
    store = Store(RES)
    store.ingest("node-1", data, 1_735_032_840_000)
    store.ingest("node-1", bump(data, 1.0, 10_000), 1_735_032_850_000)
    snap = store.snapshot(1_735_032_850_000)
    assert pods_of(snap) == [
        ("kube-system", "coredns-7db6d8ff4d-4xk2p"),
        ("kube-system", "kube-proxy-8vz9q"),
        ("payments-prod", "checkout-service-7c9d8f6b5-x2k9p"),
    ]
    assert containers_of(snap, "payments-prod", "checkout-service-7c9d8f6b5-x2k9p") == {
        "checkout-service": (100_000_000, 412_471_296),
        "istio-proxy": (100_000_000, 61_194_240),
    }
    i = snap.pod_index("kube-system", "coredns-7db6d8ff4d-4xk2p")
    assert i is not None
    assert int(snap.pods["timestamp_ms"][i]) == 1_735_032_841_170
    assert snap.nodes["memory_bytes"].tolist() == [6_891_237_376]
    assert snap.pods["node"].tolist() == ["node-1"] * 3


# --- SPEC §3 rules --------------------------------------------------------------------------------


def test_truncation_of_cpu_memory_and_rate() -> None:
    store = Store(RES)
    first = [C("ns", "p", "c", 1.0, 1000.9)]
    # 1.0000000019 s → 1000000001 ns; over 3 ms: 1 ns * 1000 / 3 = 333 nanocores.
    second = [C("ns", "p", "c", 1.0000000019, 2047.99)]
    snap = two_scrapes(store, "n", first, second, dt=3)
    assert containers_of(snap, "ns", "p") == {"c": (333, 2047)}
    assert snap.containers["cpu_nanocores"].dtype == np.uint64
    assert snap.pods["window_ms"].tolist() == [3]


def test_identical_samples_in_two_scrapes_keep_the_previous_pair() -> None:
    store = Store(RES)
    a = payload((100.0, 1e9, T0), [C("ns", "p", "c", 10.0, 5e6, ts=T0)])
    b = payload((102.0, 2e9, T0 + 10_000), [C("ns", "p", "c", 12.5, 6e6, ts=T0 + 10_000)])
    store.ingest("n", a, T0)
    # Same samples twice at the start: no pair, nothing served, no crash.
    store.ingest("n", a, T0 + 5_000)
    assert store.snapshot(T0 + 5_000).pods["name"].size == 0
    assert store.snapshot(T0 + 5_000).nodes["name"].size == 0
    store.ingest("n", b, T0 + 10_000)
    before = store.snapshot(T0 + 10_000)
    # The kubelet has not refreshed its samples: identical body again.
    store.ingest("n", b, T0 + 15_000)
    after = store.snapshot(T0 + 15_000)
    for snap in (before, after):
        assert containers_of(snap, "ns", "p") == {"c": (250_000_000, 6_000_000)}
        assert snap.pods["window_ms"].tolist() == [10_000]
        assert snap.nodes["cpu_nanocores"].tolist() == [200_000_000]
        assert snap.nodes["window_ms"].tolist() == [10_000]
    assert store.points() == (1, 1)


def test_samples_without_timestamps_take_the_request_time() -> None:
    store = Store(RES)
    store.ingest("n", payload((10.0, 1e9, None), [C("ns", "p", "c", 1.0, 1e6)]), T0)
    store.ingest("n", payload((12.0, 1e9, None), [C("ns", "p", "c", 2.0, 1e6)]), T0 + 8_000)
    snap = store.snapshot(T0 + 8_000)
    assert snap.nodes["timestamp_ms"].tolist() == [T0 + 8_000]
    assert snap.nodes["window_ms"].tolist() == [8_000]
    assert snap.nodes["cpu_nanocores"].tolist() == [250_000_000]
    assert snap.pods["timestamp_ms"].tolist() == [T0 + 8_000]
    assert containers_of(snap, "ns", "p") == {"c": (125_000_000, 1_000_000)}


def test_restart_discards_old_points() -> None:
    store = Store(RES)
    snap = two_scrapes(store, "n", [C("ns", "p", "c", 500.0, 1e6)], [C("ns", "p", "c", 501.0, 1e6)])
    assert containers_of(snap, "ns", "p") == {"c": (100_000_000, 1_000_000)}
    # Restarted 1 s after the last sample; 30 s later the counter is small again.
    restarted = (T0 + 11_000) / 1000
    t2 = T0 + 40_000
    store.ingest("n", payload((102.0, 1e9, t2), [C("ns", "p", "c", 3.0, 1e6, restarted, t2)]), t2)
    assert store.snapshot(t2).pods["name"].size == 0
    t3 = t2 + 10_000
    store.ingest("n", payload((103.0, 1e9, t3), [C("ns", "p", "c", 4.5, 1e6, restarted, t3)]), t3)
    assert containers_of(store.snapshot(t3), "ns", "p") == {"c": (150_000_000, 1_000_000)}


def test_counter_decrease_is_skipped_for_that_read() -> None:
    store = Store(RES)
    store.ingest("n", payload((100.0, 1e9, T0), [C("ns", "p", "c", 50.0, 1e6, ts=T0)]), T0)
    t1 = T0 + 10_000
    store.ingest("n", payload((90.0, 1e9, t1), [C("ns", "p", "c", 40.0, 1e6, ts=t1)]), t1)
    snap = store.snapshot(t1)
    assert snap.nodes["name"].size == 0
    assert snap.pods["name"].size == 0
    t2 = t1 + 10_000
    store.ingest("n", payload((91.0, 1e9, t2), [C("ns", "p", "c", 42.0, 1e6, ts=t2)]), t2)
    snap = store.snapshot(t2)
    assert snap.nodes["cpu_nanocores"].tolist() == [100_000_000]
    assert containers_of(snap, "ns", "p") == {"c": (200_000_000, 1_000_000)}


@pytest.mark.parametrize(
    ("age_ms", "served"),
    [(9_999, False), (10_000, True), (12_000, True), (RES_MS - 1, True), (RES_MS, False)],
)
def test_fresh_container_has_a_value_after_one_scrape(age_ms: int, served: bool) -> None:
    store = Store(RES)
    start = (T0 - age_ms) / 1000
    store.ingest("n", payload((1.0, 1.0, T0), [C("ns", "p", "c", 3.0, 1e6, start, T0)]), T0)
    snap = store.snapshot(T0)
    if served:
        assert containers_of(snap, "ns", "p") == {"c": (3_000_000_000 * 1000 // age_ms, 1_000_000)}
        assert snap.pods["window_ms"].tolist() == [age_ms]
        assert snap.pods["timestamp_ms"].tolist() == [T0]
    else:
        assert snap.pods["name"].size == 0


@pytest.mark.parametrize(
    "bad",
    [
        C("ns", "mixed", "bad", 2.0, None),
        C("ns", "mixed", "bad", None, 1e6),
        C("ns", "mixed", "bad", 0.0, 1e6),
        C("ns", "mixed", "bad", 2.0, 0.0),
        C("ns", "mixed", "bad", float("nan"), 1e6),
        C("ns", "mixed", "bad", 2.0, float("inf")),
        C("ns", "mixed", "bad", -2.0, 1e6),
        C("ns", "mixed", "bad", None, None, OLD_START),
    ],
    ids=[
        "no-memory",
        "no-cpu",
        "zero-cpu",
        "zero-memory",
        "nan-cpu",
        "inf-memory",
        "negative-cpu",
        "start-only",
    ],
)
def test_pod_is_all_or_nothing(bad: C) -> None:
    store = Store(RES)
    ok = [
        C("ns", "good", "c", 1.0, 1e6),
        C("ns", "mixed", "ok", 1.0, 1e6),
        C("ns", "mixed", "bad", 1.0, 1e6),
    ]
    later = [C("ns", "good", "c", 2.0, 1e6), C("ns", "mixed", "ok", 2.0, 1e6), bad]
    snap = two_scrapes(store, "n", ok, later)
    assert pods_of(snap) == [("ns", "good")]
    assert snap.containers["name"].tolist() == ["c"]
    assert store.points() == (1, 1)


@pytest.mark.parametrize(
    "node",
    [(None, 1e9, T0), (5.0, None, T0), (0.0, 1e9, T0), (5.0, 0.0, T0), (float("nan"), 1e9, T0)],
    ids=["no-cpu", "no-memory", "zero-cpu", "zero-memory", "nan-cpu"],
)
def test_node_point_needs_cpu_and_memory(node: tuple[float | None, float | None, int]) -> None:
    store = Store(RES)
    pod = [C("ns", "p", "c", 1.0, 1e6, ts=T0)]
    store.ingest("n", payload((4.0, 1e9, T0 - 10_000), pod), T0 - 10_000)
    store.ingest("n", payload(node, pod), T0)
    assert store.snapshot(T0).nodes["name"].size == 0
    assert store.points()[0] == 0


def test_sorting_of_nodes_pods_and_containers() -> None:
    store = Store(RES)
    for k, t in enumerate((T0, T0 + 10_000)):
        cpu = 1.0 + k
        b = [C("zeta", "a", "z", cpu, 1e6, ts=t), C("alpha", "b", "sidecar", cpu, 2e6, ts=t)]
        b.append(C("alpha", "b", "app", cpu, 3e6, ts=t))
        store.ingest("node-b", payload((cpu, 1e9, t), b), t)
        a = [C("beta", "c", "y", cpu, 4e6, ts=t), C("alpha", "a", "x", cpu, 5e6, ts=t)]
        store.ingest("node-a", payload((cpu, 1e9, t), a), t)
    snap = store.snapshot(T0 + 10_000)
    assert snap.nodes["name"].tolist() == ["node-a", "node-b"]
    assert pods_of(snap) == [("alpha", "a"), ("alpha", "b"), ("beta", "c"), ("zeta", "a")]
    assert snap.pods["node"].tolist() == ["node-a", "node-b", "node-a", "node-b"]
    assert snap.pods["container_start"].tolist() == [0, 1, 3, 4, 5]
    assert snap.containers["name"].tolist() == ["x", "app", "sidecar", "y", "z"]
    assert snap.containers["memory_bytes"].tolist() == [
        5_000_000,
        3_000_000,
        2_000_000,
        4_000_000,
        1_000_000,
    ]
    assert snap.node_index("node-b") == 1
    assert snap.node_index("node-c") is None
    assert snap.pod_index("beta", "c") == 2
    assert snap.pod_index("beta", "a") is None


def test_pod_gone_from_a_node_and_pod_moving_nodes() -> None:
    store = Store(RES)
    web = [C("ns", "web-0", "c", 100.0, 1e6)]
    two_scrapes(store, "node-b", web, [C("ns", "web-0", "c", 101.0, 1e6)])
    # Recreated on node-a; node-b not rescraped yet: served once, newest report.
    t = T0 + 11_000
    store.ingest("node-a", payload((1.0, 1.0, t), [C("ns", "web-0", "c", 1.0, 1e6, ts=t)]), t)
    t += 10_000
    store.ingest("node-a", payload((2.0, 1.0, t), [C("ns", "web-0", "c", 3.0, 1e6, ts=t)]), t)
    snap = store.snapshot(t)
    assert pods_of(snap) == [("ns", "web-0")]
    assert snap.pods["node"].tolist() == ["node-a"]
    assert containers_of(snap, "ns", "web-0") == {"c": (200_000_000, 1_000_000)}
    # node-b's next scrape no longer has it: its points are dropped.
    store.ingest("node-b", payload((102.0, 1e9, t), []), t)
    assert store.points() == (2, 1)
    assert store.snapshot(t).pods["node"].tolist() == ["node-a"]


def test_failed_node_served_within_grace_with_honest_timestamps() -> None:
    store = Store(RES)
    snap = two_scrapes(store, "n", [C("ns", "p", "c", 1.0, 1e6)], [C("ns", "p", "c", 2.0, 1e6)])
    t1 = T0 + 10_000
    assert snap.ready
    # Scrapes fail from here (no ingest): served up to 2 × resolution, timestamps unchanged.
    edge = t1 + 2 * RES_MS
    snap = store.snapshot(edge)
    assert snap.nodes["timestamp_ms"].tolist() == [t1]
    assert snap.pods["timestamp_ms"].tolist() == [t1]
    assert snap.ready
    snap = store.snapshot(edge + 1)
    assert snap.nodes["name"].size == 0
    assert snap.pods["name"].size == 0
    assert not snap.ready


def test_parse_error_leaves_the_node_untouched() -> None:
    store = Store(RES)
    before = two_scrapes(store, "n", [C("ns", "p", "c", 1.0, 1e6)], [C("ns", "p", "c", 2.0, 1e6)])
    good = payload((200.0, 1e9, T0 + 20_000), [C("ns", "p", "c", 9.0, 1e6, ts=T0 + 20_000)])
    broken = good.replace(b'pod="p"}', b'pod="p}', 1)
    with pytest.raises(ParseError, match=r"^line \d+: "):
        store.ingest("n", broken, T0 + 20_000)
    with pytest.raises(ValueError):
        store.ingest("n", b"\xff\x00garbage{{{", T0 + 20_000)
    after = store.snapshot(T0 + 10_000)
    assert containers_of(after, "ns", "p") == containers_of(before, "ns", "p")
    assert after.nodes["cpu_nanocores"].tolist() == before.nodes["cpu_nanocores"].tolist()
    assert store.points() == (1, 1)


def test_forget_node_and_pod() -> None:
    store = Store(RES)
    first = [
        C("ns", "p1", "a", 1.0, 1e6),
        C("ns", "p1", "b", 1.0, 1e6),
        C("ns", "p2", "a", 1.0, 1e6),
    ]
    second = [replace(c, cpu=2.0) for c in first]
    two_scrapes(store, "n1", first, second)
    snap = two_scrapes(store, "n2", [C("ns", "p3", "a", 1.0, 1e6)], [C("ns", "p3", "a", 2.0, 1e6)])
    assert pods_of(snap) == [("ns", "p1"), ("ns", "p2"), ("ns", "p3")]
    assert store.points() == (2, 4)
    store.forget_pod("ns", "p1")
    store.forget_pod("ns", "missing")
    assert pods_of(store.snapshot(T0 + 10_000)) == [("ns", "p2"), ("ns", "p3")]
    store.forget_node("n2")
    store.forget_node("never-seen")
    snap = store.snapshot(T0 + 10_000)
    assert snap.nodes["name"].tolist() == ["n1"]
    assert pods_of(snap) == [("ns", "p2")]
    assert store.points() == (1, 1)


def test_readiness_needs_a_node_and_a_pod() -> None:
    store = Store(RES)
    assert not store.snapshot(T0).ready
    store.ingest("n", payload((1.0, 1e9, T0), []), T0)
    store.ingest("n", payload((2.0, 1e9, T0 + 10_000), []), T0 + 10_000)
    snap = store.snapshot(T0 + 10_000)
    assert snap.nodes["name"].size == 1
    assert not snap.ready, "a node alone is not ready"
    store = Store(RES)
    for k, t in enumerate((T0, T0 + 10_000)):
        store.ingest("n", payload((None, 1e9, t), [C("ns", "p", "c", 1.0 + k, 1e6, ts=t)]), t)
    snap = store.snapshot(T0 + 10_000)
    assert snap.pods["name"].size == 1
    assert not snap.ready, "pods alone are not ready"


def test_ingest_parsed_matches_ingest() -> None:
    data = (FIXTURES / "kubelet-v1.30-3-pods.txt").read_bytes()
    later = bump(data, 2.0, 12_000)
    a, b = Store(RES), Store(RES)
    a.ingest("n", data, T0)
    a.ingest("n", later, T0 + 12_000)
    ingest_parsed(b, "n", parse_resource_metrics(data), T0)
    ingest_parsed(b, "n", parse_resource_metrics(later), T0 + 12_000)
    sa, sb = a.snapshot(T0 + 12_000), b.snapshot(T0 + 12_000)
    for part in ("nodes", "pods", "containers"):
        ca, cb = getattr(sa, part), getattr(sb, part)
        assert ca.keys() == cb.keys()
        for key in ca:
            assert ca[key].tolist() == cb[key].tolist(), (part, key)
    assert sa.pods["name"].size == 3


def test_snapshot_columns_and_immutability() -> None:
    store = Store(RES)
    snap = two_scrapes(store, "n", [C("ns", "p", "c", 1.0, 1e6)], [C("ns", "p", "c", 2.0, 1e6)])
    assert set(snap.nodes) == {"name", "cpu_nanocores", "memory_bytes", "timestamp_ms", "window_ms"}
    assert set(snap.pods) == {
        "namespace",
        "name",
        "node",
        "timestamp_ms",
        "window_ms",
        "container_start",
    }
    assert set(snap.containers) == {"name", "cpu_nanocores", "memory_bytes"}
    assert snap.nodes["name"].dtype == object
    assert snap.nodes["timestamp_ms"].dtype == np.int64
    assert snap.pods["window_ms"].dtype == np.int64
    assert snap.containers["memory_bytes"].dtype == np.uint64
    # Later changes to the store do not reach an existing snapshot.
    store.forget_node("n")
    assert snap.pods["name"].tolist() == ["p"]
    assert store.snapshot(T0 + 10_000).pods["name"].size == 0
    assert repr(snap) == "Snapshot(nodes=1, pods=1, containers=1)"


def test_timestamps_ms_is_the_timestamp_column_alone() -> None:
    store = Store(RES)
    snap = two_scrapes(store, "n", [C("ns", "p", "c", 1.0, 1e6)], [C("ns", "p", "c", 2.0, 1e6)])
    for kind in ("nodes", "pods"):
        column = snap.timestamps_ms(kind)
        assert column.dtype == np.int64
        assert column.tolist() == getattr(snap, kind)["timestamp_ms"].tolist()
    with pytest.raises(ValueError, match='unknown kind "containers"'):
        snap.timestamps_ms("containers")


@pytest.mark.parametrize("resolution", [0.0, -1.0, float("nan"), float("inf"), 0.0001])
def test_resolution_must_be_positive(resolution: float) -> None:
    with pytest.raises(ValueError, match="resolution_seconds"):
        Store(resolution)


def test_concurrent_ingests_from_threads() -> None:
    """ingest drops the GIL; many threads at once must neither crash nor lose data."""
    store = Store(RES)
    nodes = [f"node-{i:02d}" for i in range(16)]

    def scrape(node: str) -> None:
        for k in range(20):
            t = T0 + 10_000 * k
            pods = [C("ns", f"{node}-p{j}", "c", 1.0 + k, 1e6, ts=t) for j in range(5)]
            store.ingest(node, payload((1.0 + k, 1e9, t), pods), t)
            store.snapshot(t)

    threads = [threading.Thread(target=scrape, args=(n,)) for n in nodes]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    snap = store.snapshot(T0 + 190_000)
    assert snap.nodes["name"].tolist() == nodes
    assert snap.pods["name"].size == 16 * 5
    assert set(snap.containers["cpu_nanocores"].tolist()) == {100_000_000}
    assert store.points() == (16, 80)
