"""The simulated kubelets: payload format, truth a rate computation recovers, faults, churn."""

from __future__ import annotations

import gzip
import http.client
import re
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kubemetrics_sim.launch import SimProcess

LINE = re.compile(r"^(?P<name>[a-z_]+)(?P<labels>\{[^}]*\})? (?P<value>\S+)(?: (?P<ts>\d+))?$")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess(
        tmp_path_factory.mktemp("sim"), nodes=4, pods_per_node=4, seed=3, refresh_ms=(1000, 1500)
    ) as s:
        yield s


Series = dict[tuple[str, str], tuple[float, int | None]]


def parse(body: bytes) -> tuple[list[str], Series]:
    """(family order from TYPE lines, {(name, labels): (value, timestamp)})."""
    families: list[str] = []
    series: Series = {}
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            families.append(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = LINE.match(line)
        assert m, f"bad line {line!r}"
        ts = int(m["ts"]) if m["ts"] else None
        series[(m["name"], m["labels"] or "")] = (float(m["value"]), ts)
    return families, series


def labels(ns: str, pod: str, container: str) -> str:
    return f'{{container="{container}",namespace="{ns}",pod="{pod}"}}'


def test_payload_has_the_newest_kubelet_format(sim: SimProcess) -> None:
    status, body = sim.kubelet_get("node-0001")
    assert status == 200
    families, series = parse(body)
    assert families == sorted(families)
    assert families == [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
        "container_swap_limit_bytes",
        "container_swap_usage_bytes",
        "node_cpu_usage_seconds_total",
        "node_memory_working_set_bytes",
        "node_swap_usage_bytes",
        "pod_cpu_usage_seconds_total",
        "pod_memory_working_set_bytes",
        "pod_swap_usage_bytes",
        "resource_scrape_error",
    ]
    text = body.decode()
    assert "# HELP container_cpu_usage_seconds_total [STABLE]" in text
    starts = [k for k in series if k[0] == "container_start_time_seconds"]
    assert starts and all(series[k][1] is None for k in starts)
    cpu = [series[k] for k in series if k[0] == "container_cpu_usage_seconds_total"]
    assert all(ts is not None for _, ts in cpu)
    # Every container has its own timestamp, as on a real kubelet.
    assert len({ts for _, ts in cpu}) > 1
    assert series[("resource_scrape_error", "")] == (0.0, None)
    # Go float formatting: big values use exponents.
    assert re.search(r"container_memory_working_set_bytes\{[^}]*\} \d\.\d+e\+\d\d \d+", text)


def _scrape_pair(sim: SimProcess, node: str) -> tuple[Series, Series, dict[str, Any]]:
    """Two payloads from consecutive samples plus the truth of the second one."""
    for _ in range(5):
        _, a = sim.kubelet_get(node)
        sim.wait_next_sample(node)
        _, b = sim.kubelet_get(node)
        truth = sim.truth(node=node)
        sa, sb = parse(a)[1], parse(b)[1]
        tb = sb[("node_cpu_usage_seconds_total", "")][1]
        ta = sa[("node_cpu_usage_seconds_total", "")][1]
        node_truth = truth["nodes"][node]
        if tb == node_truth["timestamp_ms"] and node_truth["history"][-2][0] == ta:
            return sa, sb, truth
    raise AssertionError("could not catch two consecutive samples")


def test_rate_between_two_samples_is_the_truth(sim: SimProcess) -> None:
    node = "node-0002"
    sa, sb, truth = _scrape_pair(sim, node)
    pods = truth["pods"]
    assert isinstance(pods, dict) and pods
    checked = 0
    for key, pod in pods.items():
        ns, name = key.split("/")
        for cname, c in pod["containers"].items():
            lab = labels(ns, name, cname)
            cpu_a, ts_a = sa[("container_cpu_usage_seconds_total", lab)]
            cpu_b, ts_b = sb[("container_cpu_usage_seconds_total", lab)]
            assert ts_a is not None and ts_b is not None
            assert ts_b == c["timestamp_ms"] and ts_b - ts_a == c["window_ms"]
            rate = (int(cpu_b * 1e9) - int(cpu_a * 1e9)) * 1000 / (ts_b - ts_a)
            assert abs(rate - c["cpu_nanocores"]) < 1000  # far inside a millicore
            mem = sb[("container_memory_working_set_bytes", lab)][0]
            assert int(mem) == c["memory_bytes"]
            checked += 1
    assert checked >= 4
    nt = truth["nodes"][node]
    n_a, t_a = sa[("node_cpu_usage_seconds_total", "")]
    n_b, t_b = sb[("node_cpu_usage_seconds_total", "")]
    assert t_a is not None and t_b is not None
    rate = (int(n_b * 1e9) - int(n_a * 1e9)) * 1000 / (t_b - t_a)
    assert abs(rate - nt["cpu_nanocores"]) < 1000
    assert int(sb[("node_memory_working_set_bytes", "")][0]) == nt["memory_bytes"]
    # The node's usage covers its containers plus system overhead.
    assert nt["cpu_nanocores"] > sum(p["cpu_nanocores"] for p in pods.values())


def test_samples_only_change_at_refresh(sim: SimProcess) -> None:
    node = "node-0003"
    sim.wait_next_sample(node)
    _, a = sim.kubelet_get(node)
    _, b = sim.kubelet_get(node)
    assert a == b  # same sample within the refresh period (1–1.5 s here)


def test_restart_moves_start_time_and_resets_counter(sim: SimProcess) -> None:
    node = "node-0004"
    pod = next(p for p in sim.truth(node=node)["pods"].values() if p["namespace"] != "x")
    cname = next(iter(pod["containers"]))
    before = pod["containers"][cname]
    sim.restart_container(pod["namespace"], pod["name"], cname)
    # The restart shows at the container's first sample taken after it (at most two refreshes).
    sim.wait_next_sample(node)
    sim.wait_next_sample(node)
    after = sim.truth(node=node)["pods"][f"{pod['namespace']}/{pod['name']}"]["containers"][cname]
    assert after["start_time_ms"] > before["start_time_ms"]
    assert after["restarts"] == before["restarts"] + 1
    assert after["cpu_ns_total"] < before["cpu_ns_total"]
    _, body = sim.kubelet_get(node)
    series = parse(body)[1]
    lab = labels(pod["namespace"], pod["name"], cname)
    start = series[("container_start_time_seconds", lab)][0]
    assert abs(start * 1000 - after["start_time_ms"]) < 1
    obj = sim.api(f"/api/v1/namespaces/{pod['namespace']}/pods/{pod['name']}")
    restarts = {c["name"]: c["restartCount"] for c in obj["status"]["containerStatuses"]}
    assert restarts[cname] == before["restarts"] + 1


def test_faults_and_heal(sim: SimProcess) -> None:
    node = "node-0001"
    try:
        sim.fault(node, "http500")
        assert sim.kubelet_get(node)[0] == 500

        sim.fault(node, "garbage")
        status, body = sim.kubelet_get(node)
        assert status == 200 and b"# HELP" not in body and len(body) > 100

        sim.fault(node, "truncated")
        status, body = sim.kubelet_get(node)
        sim.heal(node)
        _, full = sim.kubelet_get(node)
        assert status == 200 and not body.endswith(b"\n") and len(body) < len(full)

        sim.fault(node, "scrape_error")
        status, body = sim.kubelet_get(node)
        assert status == 200 and body.endswith(b"resource_scrape_error 1\n")
        assert b"\ncontainer_" not in body and b"\nnode_cpu_usage_seconds_total " in body

        sim.fault(node, "slow", seconds=5)
        host, port = sim.node_address(node)
        c = http.client.HTTPSConnection(host, port, context=sim.ssl_context(), timeout=1)
        with pytest.raises((TimeoutError, socket.timeout)):
            c.request(
                "GET",
                "/metrics/resource",
                headers={"Authorization": f"Bearer {sim.token('metrics-server')}"},
            )
            c.getresponse()
        c.close()

        sim.fault(node, "down")
        time.sleep(0.2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, port), timeout=5).close()
        assert sim.truth(node=node)["nodes"][node]["fault"] == "down"
    finally:
        sim.heal(node)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert sim.kubelet_get(node)[0] == 200
            break
        except (ConnectionRefusedError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_pod_churn_reaches_kubelet_and_truth(sim: SimProcess) -> None:
    node = "node-0003"
    made = sim.create_pod(
        namespace="team-b",
        name="fresh",
        node=node,
        start_delay=0,
        containers=[{"name": "app", "pattern": {"kind": "steady", "cpu_nanocores": 250_000_000}}],
    )
    sim.wait_next_sample(node)
    sim.wait_next_sample(node)
    t = sim.truth(node=node)["pods"]["team-b/fresh"]["containers"]["app"]
    assert t["cpu_nanocores"] == 250_000_000
    _, body = sim.kubelet_get(node)
    assert b'pod="fresh"' in body
    sim.delete_pod("team-b", made["name"])
    _, body = sim.kubelet_get(node)
    assert b'pod="fresh"' not in body
    assert "team-b/fresh" not in sim.truth(node=node)["pods"]


def test_nodes_join_and_leave(sim: SimProcess) -> None:
    new = sim.add_node()
    name = new["name"]
    assert sim.kubelet_get(name)[0] == 200
    listed = {n["metadata"]["name"] for n in sim.api("/api/v1/nodes")["items"]}
    assert name in listed
    pods = sim.api(f"/api/v1/pods?fieldSelector=spec.nodeName={name}")["items"]
    assert len(pods) == 4
    host, port = sim.node_address(name)
    sim.remove_node(name)
    time.sleep(0.2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()
    assert name not in {n["metadata"]["name"] for n in sim.api("/api/v1/nodes")["items"]}
    assert sim.api(f"/api/v1/pods?fieldSelector=spec.nodeName={name}")["items"] == []


def test_same_seed_same_cluster(tmp_path_factory: pytest.TempPathFactory) -> None:
    shapes = []
    for seed in (11, 11, 12):
        with SimProcess(tmp_path_factory.mktemp("seed"), nodes=2, pods_per_node=3, seed=seed) as s:
            truth = s.truth()
            shapes.append(
                sorted(
                    (k, c["pattern"]["kind"], c["pattern"]["cpu_nanocores"])
                    for k, p in truth["pods"].items()
                    for c in p["containers"].values()
                )
            )
    assert shapes[0] == shapes[1]
    assert shapes[0] != shapes[2]


def test_hundred_nodes_start_quickly(tmp_path_factory: pytest.TempPathFactory) -> None:
    with SimProcess(tmp_path_factory.mktemp("big"), nodes=100, pods_per_node=10) as s:
        # Reported, not asserted tightly (shared machine): see docs/SIMULATOR.md.
        print(f"100 nodes x 10 pods ready in {s.startup_seconds:.2f}s")
        assert len(s.info["nodes"]) == 100
        assert s.kubelet_get("node-0100")[0] == 200
        assert len(s.api("/api/v1/pods")["items"]) == 1000


def test_gzip_only_when_asked_like_promhttp(sim: SimProcess) -> None:
    host, port = sim.node_address("node-0001")
    tok = sim.token("metrics-server")
    status, headers, plain = sim.request(
        "GET", "/metrics/resource", token=tok, host=host, port=port
    )
    assert status == 200 and "content-encoding" not in headers
    status, headers, gz = sim.request(
        "GET",
        "/metrics/resource",
        token=tok,
        host=host,
        port=port,
        headers={"Accept-Encoding": "deflate, gzip;q=1.0"},
    )
    assert status == 200 and headers["content-encoding"] == "gzip"
    body = gzip.decompress(gz)
    assert len(gz) < len(body) // 2
    assert parse(body)[0] == parse(plain)[0]
    status, headers, _ = sim.request(
        "GET",
        "/metrics/resource",
        token=tok,
        host=host,
        port=port,
        headers={"Accept-Encoding": "identity"},
    )
    assert status == 200 and "content-encoding" not in headers


def test_kubelets_count_who_scraped_them(sim: SimProcess) -> None:
    """The simulator's answer to "was every kubelet scraped once per cycle, and by whom"."""
    before = sim.kubelet_requests()
    host, port = sim.node_address("node-0002")
    for agent in ("replica-a", "replica-a", "replica-b"):
        status, _, _ = sim.request(
            "GET",
            "/metrics/resource",
            token=sim.token("metrics-server"),
            host=host,
            port=port,
            headers={"User-Agent": agent},
        )
        assert status == 200
    status, _, _ = sim.request(
        "GET", "/metrics/resource", token="bogus", host=host, port=port, headers={"User-Agent": "x"}
    )
    assert status == 401  # refused requests are not scrapes
    after = sim.kubelet_requests()
    got = {a: n - before.get("node-0002", {}).get(a, 0) for a, n in after["node-0002"].items()}
    assert {a: n for a, n in got.items() if n} == {"replica-a": 2, "replica-b": 1}
    assert after.get("node-0001") == before.get("node-0001")


def test_a_fault_with_a_duration_heals_by_itself(sim: SimProcess) -> None:
    node = "node-0002"
    host, port = sim.node_address(node)
    sim.fault(node, "down", duration=1.5)
    t0 = time.monotonic()
    time.sleep(0.2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=5).close()
    assert sim.control("GET", "faults") == {node: {"fault": "down", "seconds": 0.0}}
    while True:
        try:
            assert sim.kubelet_get(node)[0] == 200
            break
        except (ConnectionRefusedError, ssl.SSLError):
            assert time.monotonic() - t0 < 10, "never healed"
            time.sleep(0.1)
    assert time.monotonic() - t0 >= 1.4
    assert sim.control("GET", "faults") == {}
    # a later fault without a duration cancels nothing it should not: it stays
    sim.fault(node, "http500", duration=0.5)
    sim.fault(node, "http500")
    time.sleep(1.0)
    try:
        assert sim.kubelet_get(node)[0] == 500
    finally:
        sim.heal(node)
