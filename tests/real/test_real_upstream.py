"""Upstream metrics-server v0.8.0 and kubemetrics side by side: same kubelets, same API server,
same flags. Both must serve the simulator's truth; where they differ on purpose is written in
docs/COMPATIBILITY.md and checked here."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.e2e import node_mismatch
from tests.helpers.real import (
    GROUP,
    RealCluster,
    ServerProcess,
    eventually,
    pod_truth_mismatch,
    require_peers,
)


@pytest.fixture(scope="module")
def upstream(real: RealCluster) -> Iterator[ServerProcess]:
    require_peers("metrics-server")
    b = real.backend("upstream")
    try:
        yield b
    finally:
        b.stop()
        real.backends.pop("upstream", None)


def served(real: RealCluster, b: ServerProcess, kind: str) -> dict[str, dict[str, Any]]:
    items = real.direct(b, f"{GROUP}/v1beta1/{kind}")["items"]
    if kind == "nodes":
        return {i["metadata"]["name"]: i for i in items}
    return {f"{i['metadata']['namespace']}/{i['metadata']['name']}": i for i in items}


def truth_mismatch(real: RealCluster, b: ServerProcess) -> str | None:
    try:
        nodes, pods = served(real, b, "nodes"), served(real, b, "pods")
    except urllib.error.HTTPError as e:
        # Right after start, before the authentication ConfigMap is read: 401/403.
        return f"{b.name}: {e.code} {e.read()[:200]!r}"
    truth = real.sim.truth()
    sim_nodes = set(real.sim.info["nodes"])
    if set(nodes) != sim_nodes:
        return f"{b.name}: nodes {sorted(nodes)} != {sorted(sim_nodes)}"
    if not pods:
        return f"{b.name}: no pods yet"
    for name, item in nodes.items():
        bad = node_mismatch(item, truth["nodes"][name])
        if bad:
            return f"{b.name}: {bad}"
    for key, item in pods.items():
        if key not in truth["pods"]:
            return f"{b.name}: {key} served but not running"
        bad = pod_truth_mismatch(item, truth["pods"][key])
        if bad:
            return f"{b.name}: {bad}"
    return None


def test_both_serve_the_truth(real: RealCluster, upstream: ServerProcess) -> None:
    km = real.backends["kubemetrics"]
    # Upstream needs two scrapes (15 s apart) before its first values.
    eventually(lambda: truth_mismatch(real, upstream), timeout=120, pause=3)
    eventually(lambda: truth_mismatch(real, km), timeout=60, pause=3)


def test_same_shape(real: RealCluster, upstream: ServerProcess) -> None:
    """Same objects and fields, item by item (values may come from different sample pairs)."""
    km = real.backends["kubemetrics"]
    eventually(lambda: truth_mismatch(real, upstream), timeout=120, pause=3)
    for kind in ("nodes", "pods"):
        a, b = served(real, upstream, kind), served(real, km, kind)
        assert set(a) == set(b), (
            f"{kind}: only upstream {set(a) - set(b)}, only ours {set(b) - set(a)}"
        )
        for key in a:
            ua, ub = a[key], b[key]
            assert set(ua) == set(ub), f"{kind} {key}: fields {sorted(ua)} vs {sorted(ub)}"
            assert ua["metadata"].get("labels") == ub["metadata"].get("labels"), key
            if kind == "pods":
                # Upstream lists containers in Go map order (random); ours sorted by name.
                ours = [c["name"] for c in ub["containers"]]
                assert ours == sorted(ours), key
                assert sorted(c["name"] for c in ua["containers"]) == ours, key


def test_kubectl_top_through_upstream(real: RealCluster, upstream: ServerProcess) -> None:
    """The same APIService, pointed at upstream, serves kubectl 1.33 (v1beta1)."""
    km = real.backends["kubemetrics"]
    eventually(lambda: truth_mismatch(real, upstream), timeout=120, pause=3)
    real.route("v1beta1", upstream)
    try:
        real.wait_served("v1beta1", timeout=60)
        out = real.cp.kubectl(
            "top", "nodes", "--no-headers", binary="/usr/lib/google-cloud-sdk/bin/kubectl.1.33"
        ).stdout
        assert {line.split()[0] for line in out.splitlines()} == set(real.sim.info["nodes"])
    finally:
        real.route("v1beta1", km)
        real.wait_served("v1beta1", timeout=60)
