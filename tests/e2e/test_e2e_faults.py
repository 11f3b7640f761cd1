"""Faulty kubelets among healthy ones, healing, and pod churn, end to end (own cluster)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.e2e import (
    GROUP,
    KUBECTL,
    Cluster,
    cpu_nanocores,
    eventually,
    memory_bytes,
    node_mismatch,
    pod_mismatch,
    table_rows,
    tail,
)

FAULTS = {
    "node-0001": ("down", 0.0),
    "node-0002": ("slow", 30.0),  # answers after 30 s: far past the 1.8 s request timeout
    "node-0003": ("garbage", 0.0),
    "node-0004": ("http500", 0.0),
}
HEALTHY = {"node-0005", "node-0006", "node-0007", "node-0008"}


@pytest.fixture(scope="module")
def fc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with Cluster.start(
        tmp_path_factory.mktemp("e2e-faults"), nodes=8, pods_per_node=4, seed=5
    ) as c:
        yield c


def _pods_on(c: Cluster, nodes: set[str]) -> set[str]:
    return {k for k, p in c.sim.truth()["pods"].items() if p["node"] in nodes}


def _values_problem(c: Cluster, nodes: set[str]) -> str | None:
    items = c.api_json(f"{GROUP}/v1/nodes")["items"]
    pods = c.api_json(f"{GROUP}/v1/pods")["items"]
    truth = c.sim.truth()
    problems = [node_mismatch(i, truth["nodes"][i["metadata"]["name"]]) for i in items]
    for p in pods:
        key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        if truth["pods"][key]["node"] in nodes:
            problems.append(pod_mismatch(p, truth["pods"][key]))
    return "\n".join(x for x in problems if x) or None


def test_faulty_kubelets_drop_out_alone_then_return_when_healed(fc: Cluster) -> None:
    c = fc
    everyone = set(c.sim.info["nodes"])
    for node, (fault, seconds) in FAULTS.items():
        c.sim.fault(node, fault, seconds)

    # The healthy nodes never leave; the faulty ones leave after the grace (2 x 2 s).
    deadline = time.monotonic() + 30
    while True:
        served = c.served_nodes()
        assert served >= HEALTHY, f"a healthy node went missing: {sorted(served)}"
        assert c.server.get("/readyz")[0] == 200, "readiness must not flap"
        if served == HEALTHY:
            break
        assert time.monotonic() < deadline, (
            f"still served: {sorted(served)}\n{tail(c.server.log())}"
        )
        time.sleep(0.25)
    assert c.served_pods() == _pods_on(c, HEALTHY)
    eventually(lambda: _values_problem(c, HEALTHY))
    if KUBECTL is not None:
        rows = {r[0]: r[1:] for r in table_rows(c.kubectl_ok("top", "nodes"))}
        # kubectl lists every node, with <unknown> where the metrics API has none
        assert {n for n, r in rows.items() if r[0] != "<unknown>"} == HEALTHY
        assert {n for n, r in rows.items() if r[0] == "<unknown>"} == set(FAULTS)

    time.sleep(2 * 2.0)  # a couple more failing ticks: still one log line per node
    log = c.server.log()
    for node in FAULTS:
        lines = [
            ln
            for ln in log.splitlines()
            if "Failed to scrape node" in ln and f'node="{node}"' in ln
        ]
        assert len(lines) == 1, f"{node}: {lines}"
    assert 'state="invalid-metrics"' in log  # the garbage payload
    assert 'state="http-500"' in log
    assert c.server.get("/readyz")[0] == 200
    body = c.server.get("/metrics")[2]
    assert b'metrics_server_kubelet_request_total{success="false"}' in body

    for node in FAULTS:
        c.sim.heal(node)
    c.wait_served(everyone, timeout=30)
    assert c.served_pods() == _pods_on(c, everyone)
    # The first rate after healing spans the outage (an honest, longer window reaching past the
    # simulator's short sample history); one scrape later windows are back to one interval.
    eventually(lambda: _values_problem(c, everyone), attempts=10, pause=0.5)
    log = c.server.log()
    for node in FAULTS:
        assert any(
            "Scraping node works again" in ln and f'node="{node}"' in ln for ln in log.splitlines()
        ), node


def _pod(c: Cluster, key: str) -> tuple[int, dict[str, Any]]:
    ns, name = key.split("/")
    status, _, body = c.api(f"{GROUP}/v1/namespaces/{ns}/pods/{name}")
    return status, json.loads(body)


def test_deleted_pod_disappears(fc: Cluster) -> None:
    c = fc
    key = sorted(k for k in _pods_on(c, {"node-0005"}) if not k.startswith("kube-system/"))[0]
    assert _pod(c, key)[0] == 200
    ns, name = key.split("/")
    c.sim.delete_pod(ns, name)
    deadline = time.monotonic() + 10
    while key in c.served_pods():
        assert time.monotonic() < deadline, f"{key} still served after deletion"
        time.sleep(0.1)
    status, doc = _pod(c, key)
    assert (status, doc["message"]) == (404, f'pods "{name}" not found')


def _bounds(truth_pod: dict[str, Any], container: str) -> tuple[int, int]:
    p = truth_pod["containers"][container]["pattern"]
    return (
        p["cpu_nanocores"] + p["cpu_amplitude_nanocores"] + 1_000_000,
        p["memory_bytes"] + p["memory_amplitude_bytes"] + (1 << 20),
    )


def _check_sane(item: dict[str, Any], truth_pod: dict[str, Any]) -> None:
    for ctr in item["containers"]:
        cpu = cpu_nanocores(ctr["usage"]["cpu"])  # a "-" sign would not even parse
        mem = memory_bytes(ctr["usage"]["memory"])
        max_cpu, max_mem = _bounds(truth_pod, ctr["name"])
        assert 0 <= cpu <= max_cpu, (item, max_cpu)
        assert 0 < mem <= max_mem, (item, max_mem)


def test_restarted_container_never_shows_negative_or_absurd_values(fc: Cluster) -> None:
    c = fc
    key = sorted(_pods_on(c, {"node-0006"}))[0]
    ns, name = key.split("/")
    before = c.sim.truth()["pods"][key]
    c.sim.restart_container(ns, name)
    deadline = time.monotonic() + 8  # the restart shows at the next sample (2-3 s), then 2 more
    seen_restart = False
    while time.monotonic() < deadline:
        truth = c.sim.truth()["pods"][key]
        seen_restart = seen_restart or any(
            truth["containers"][n]["restarts"] > before["containers"][n]["restarts"]
            for n in truth["containers"]
        )
        status, doc = _pod(c, key)
        if status == 200:
            _check_sane(doc, truth)
        else:
            assert status == 404 and doc["reason"] == "NotFound", doc
        time.sleep(0.2)
    assert seen_restart, "the simulator never applied the restart"
    # back, with the new incarnation's true values
    eventually(
        lambda: pod_mismatch(_pod(c, key)[1], c.sim.truth()["pods"][key]), attempts=20, pause=0.5
    )


def test_new_pod_appears_with_its_exact_usage(fc: Cluster) -> None:
    c = fc
    c.sim.create_pod(
        namespace="team-b",
        name="e2e-steady",
        node="node-0007",
        labels={"app": "e2e"},
        containers=[
            {
                "name": "main",
                "pattern": {
                    "kind": "steady",
                    "cpu_nanocores": 250_000_000,
                    "memory_bytes": 96 << 20,
                },
            }
        ],
    )
    deadline = time.monotonic() + 20
    while True:
        status, doc = _pod(c, "team-b/e2e-steady")
        if status == 200:
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.25)
    assert doc["metadata"]["labels"] == {"app": "e2e"}
    assert doc["containers"] == [{"name": "main", "usage": {"cpu": "250m", "memory": "96Mi"}}]
    if KUBECTL is not None:
        rows = table_rows(c.kubectl_ok("top", "pods", "-n", "team-b", "-l", "app=e2e"))
        assert rows == [["e2e-steady", "250m", "96Mi"]]


def test_churn_never_serves_ghosts_or_absurd_values(fc: Cluster) -> None:
    c = fc
    c.sim.control("POST", "churn", {"interval": 0.3})
    ghosts: dict[str, float] = {}
    try:
        end = time.monotonic() + 8
        while time.monotonic() < end:
            before = c.sim.truth()["pods"]
            items = c.api_json(f"{GROUP}/v1/pods")["items"]
            after = c.sim.truth()["pods"]
            now = time.monotonic()
            for item in items:
                key = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
                t = after.get(key) or before.get(key)
                if t is None:
                    # deleted before the list was served: allowed only for the watch's latency
                    first = ghosts.setdefault(key, now)
                    assert now - first < 3, f"{key} served {now - first:.1f}s after deletion"
                    continue
                if set(t["containers"]) == {x["name"] for x in item["containers"]}:
                    _check_sane(item, t)
            time.sleep(0.2)
    finally:
        c.sim.control("POST", "churn", {"interval": 0})
    assert c.sim.state()["churn_events"] > 5
