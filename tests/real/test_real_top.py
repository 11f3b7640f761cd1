"""kubectl top and the metrics API through a real kube-apiserver's aggregator and RBAC."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kubemetrics_sim.realcluster import peer_binary
from tests.helpers.e2e import (
    kubectl_cpu_m,
    kubectl_mem_mi,
    kubectl_node_mismatch,
    kubectl_pod_mismatch,
    node_mismatch,
    pod_mismatch,
)
from tests.helpers.real import GROUP, INSTALLED_KUBECTLS, RealCluster, eventually

VERSIONS = ("v1beta1", "v1")


def kubectl_binary(version: str) -> str:
    if version == "1.37":
        return str(peer_binary("kubectl"))
    path = INSTALLED_KUBECTLS[version]
    if not os.access(path, os.X_OK):
        pytest.skip(f"kubectl {version} is not installed at {path}")
    return path


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


def top_nodes_mismatch(real: RealCluster, binary: str) -> str | None:
    r = real.cp.kubectl("top", "nodes", "--no-headers", binary=binary, check=False)
    if r.returncode != 0:
        return f"kubectl top nodes: {r.stderr.strip()}"
    truth = real.sim.truth()["nodes"]
    got = rows(r.stdout)
    if {row[0] for row in got} != set(truth):
        return f"nodes {sorted(row[0] for row in got)} != {sorted(truth)}"
    for name, cpu, _, mem, _ in got:
        bad = kubectl_node_mismatch(name, kubectl_cpu_m(cpu), kubectl_mem_mi(mem), truth[name])
        if bad:
            return bad
    return None


def top_pods_mismatch(real: RealCluster, binary: str) -> str | None:
    r = real.cp.kubectl("top", "pods", "-A", "--no-headers", binary=binary, check=False)
    if r.returncode != 0:
        return f"kubectl top pods: {r.stderr.strip()}"
    truth = real.sim.truth()["pods"]
    got = rows(r.stdout)
    if len(got) < len(truth) // 2:
        return f"only {len(got)} of {len(truth)} pods listed"
    for ns, name, cpu, mem in got:
        key = f"{ns}/{name}"
        if key not in truth:
            return f"pod {key} is not running in the simulator"
        bad = kubectl_pod_mismatch(key, kubectl_cpu_m(cpu), kubectl_mem_mi(mem), truth[key])
        if bad:
            return bad
    return None


@pytest.mark.parametrize("version", ["1.37", *INSTALLED_KUBECTLS])
def test_kubectl_top_nodes_and_pods(real: RealCluster, version: str) -> None:
    binary = kubectl_binary(version)
    eventually(lambda: top_nodes_mismatch(real, binary), timeout=60, pause=2)
    eventually(lambda: top_pods_mismatch(real, binary), timeout=60, pause=2)


def test_kubectl_137_reads_v1_and_older_read_v1beta1(real: RealCluster) -> None:
    """kubectl 1.37 asks for metrics.k8s.io/v1 (KEP-5207); 1.27-1.33 for v1beta1."""
    r = real.cp.kubectl("top", "nodes", "-v=6", binary=kubectl_binary("1.37"))
    assert f"{GROUP}/v1/nodes" in r.stderr, r.stderr[-2000:]
    old = kubectl_binary("1.33")
    r = real.cp.kubectl("top", "nodes", "-v=6", binary=old)
    assert f"{GROUP}/v1beta1/nodes" in r.stderr, r.stderr[-2000:]


@pytest.mark.parametrize("version", VERSIONS)
def test_both_api_versions_match_the_truth(real: RealCluster, version: str) -> None:
    def check() -> str | None:
        nodes = real.get_json(f"{GROUP}/{version}/nodes")
        pods = real.get_json(f"{GROUP}/{version}/pods")
        truth = real.sim.truth()
        assert nodes["apiVersion"] == f"metrics.k8s.io/{version}"
        if {i["metadata"]["name"] for i in nodes["items"]} != set(truth["nodes"]):
            return "node set differs"
        for item in nodes["items"]:
            bad = node_mismatch(item, truth["nodes"][item["metadata"]["name"]])
            if bad:
                return bad
        for item in pods["items"]:
            key = f"{item['metadata']['namespace']}/{item['metadata']['name']}"
            if key not in truth["pods"]:
                return f"{key} served but not running"
            bad = pod_mismatch(item, truth["pods"][key])
            if bad:
                return bad
        return None

    eventually(check, timeout=60, pause=2)


def test_apiservices_available_through_the_real_aggregator(real: RealCluster) -> None:
    out = real.cp.kubectl("get", "apiservices", "-o", "json").stdout
    by_name = {i["metadata"]["name"]: i for i in json.loads(out)["items"]}
    for v in VERSIONS:
        conds = {c["type"]: c for c in by_name[f"{v}.metrics.k8s.io"]["status"]["conditions"]}
        assert conds["Available"]["status"] == "True", conds
    versions = real.cp.kubectl("api-versions").stdout.split()
    assert {"metrics.k8s.io/v1", "metrics.k8s.io/v1beta1"} <= set(versions)


# --- RBAC ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alice(real: RealCluster) -> Path:
    """User alice, `view` in team-a only (metrics come through the aggregated view role)."""
    real.cp.kubectl(
        "-n", "team-a", "create", "rolebinding", "alice-view", "--clusterrole=view", "--user=alice"
    )
    kc = real.user_kubeconfig("alice")

    def can_read() -> str | None:
        r = real.cp.kubectl(
            "auth",
            "can-i",
            "list",
            "pods.metrics.k8s.io",
            "-n",
            "team-a",
            "--as=alice",
            check=False,
        )
        # clusterrole-aggregation-controller folds system:aggregated-metrics-reader into view.
        return None if r.stdout.strip() == "yes" else f"can-i: {r.stdout.strip()}"

    eventually(can_read, timeout=60)
    return kc


def kubectl_as(real: RealCluster, kc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return real.cp.kubectl(*args, kubeconfig=kc, check=False)


def test_namespace_user_reads_only_its_namespace(real: RealCluster, alice: Path) -> None:
    truth = real.sim.truth(namespace="team-a")["pods"]
    assert truth, "the simulator placed no pod in team-a"
    ok = kubectl_as(real, alice, "top", "pods", "-n", "team-a", "--no-headers")
    assert ok.returncode == 0, ok.stderr
    names = {row[0] for row in rows(ok.stdout)}
    assert names and names <= {k.split("/", 1)[1] for k in truth}

    other = kubectl_as(real, alice, "top", "pods", "-n", "team-b")
    assert other.returncode != 0
    assert 'cannot list resource "pods" in API group "metrics.k8s.io"' in other.stderr
    assert 'in the namespace "team-b"' in other.stderr

    nodes = kubectl_as(real, alice, "top", "nodes")
    assert nodes.returncode != 0
    assert 'cannot list resource "nodes" in API group "metrics.k8s.io"' in nodes.stderr

    for version in VERSIONS:
        raw = kubectl_as(real, alice, "get", "--raw", f"{GROUP}/{version}/pods")
        assert raw.returncode != 0 and "Forbidden" in raw.stderr, raw.stderr
        raw = kubectl_as(real, alice, "get", "--raw", f"{GROUP}/{version}/namespaces/team-a/pods")
        assert raw.returncode == 0, raw.stderr
        items = json.loads(raw.stdout)["items"]
        assert {i["metadata"]["namespace"] for i in items} == {"team-a"}
