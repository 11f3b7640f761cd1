"""Every metrics.k8s.io path, both versions, through the aggregator (kubectl get --raw and HTTP),
checked against the simulator's truth; protobuf decoded and compared with JSON."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.helpers.e2e import (
    GROUP,
    PROTOBUF,
    TABLE,
    VERSIONS,
    Cluster,
    decode_protobuf,
    eventually,
    json_as_pb_shape,
    node_mismatch,
    pod_mismatch,
    rfc3339_seconds,
)


def _check_list(c: Cluster, path: str, kind: str, version: str) -> str | None:
    status, headers, body = c.api(path)
    assert status == 200, body
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["kind"] == kind
    assert doc["apiVersion"] == f"metrics.k8s.io/{version}"
    assert doc["metadata"] == {}
    truth = c.sim.truth()
    now = time.time()
    problems = []
    for item in doc["items"]:
        assert "kind" not in item and "apiVersion" not in item
        md = item["metadata"]
        assert set(md) <= {"name", "namespace", "creationTimestamp", "labels"}
        assert abs(rfc3339_seconds(md["creationTimestamp"]) - now) < 30
        if kind == "NodeMetricsList":
            t = truth["nodes"][md["name"]]
            assert md["labels"] == c.sim.api(f"/api/v1/nodes/{md['name']}")["metadata"]["labels"]
            problems.append(node_mismatch(item, t))
        else:
            key = f"{md['namespace']}/{md['name']}"
            t = truth["pods"][key]
            assert md.get("labels", {}) == t["labels"]
            problems.append(pod_mismatch(item, t))
    names = [(i["metadata"].get("namespace", ""), i["metadata"]["name"]) for i in doc["items"]]
    assert names == sorted(names), "lists are sorted by namespace, then name"
    return "\n".join(p for p in problems if p) or None


@pytest.mark.parametrize("version", VERSIONS)
def test_node_list_matches_truth(cluster: Cluster, version: str) -> None:
    path = f"{GROUP}/{version}/nodes"
    eventually(lambda: _check_list(cluster, path, "NodeMetricsList", version))
    assert cluster.served_nodes() == set(cluster.sim.info["nodes"])


@pytest.mark.parametrize("version", VERSIONS)
def test_pod_list_matches_truth(cluster: Cluster, version: str) -> None:
    path = f"{GROUP}/{version}/pods"
    eventually(lambda: _check_list(cluster, path, "PodMetricsList", version))
    assert cluster.served_pods() == set(cluster.sim.truth()["pods"])


@pytest.mark.parametrize("version", VERSIONS)
def test_namespace_pod_list_and_single_objects(cluster: Cluster, version: str) -> None:
    c = cluster
    truth = c.sim.truth()
    ns = "kube-system"
    eventually(
        lambda: _check_list(c, f"{GROUP}/{version}/namespaces/{ns}/pods", "PodMetricsList", version)
    )
    listed = c.api_json(f"{GROUP}/{version}/namespaces/{ns}/pods")["items"]
    assert {i["metadata"]["name"] for i in listed} == {
        p["name"] for p in truth["pods"].values() if p["namespace"] == ns
    }
    key = sorted(truth["pods"])[3]
    pns, pname = key.split("/")

    def single() -> str | None:
        pod = c.api_json(f"{GROUP}/{version}/namespaces/{pns}/pods/{pname}")
        assert pod["kind"] == "PodMetrics" and pod["apiVersion"] == f"metrics.k8s.io/{version}"
        node = c.api_json(f"{GROUP}/{version}/nodes/node-0002")
        assert node["kind"] == "NodeMetrics"
        t = c.sim.truth()
        return pod_mismatch(pod, t["pods"][key]) or node_mismatch(node, t["nodes"]["node-0002"])

    eventually(single)


def test_kubectl_get_raw_every_path_both_versions(kubectl_cluster: Cluster) -> None:
    c = kubectl_cluster
    truth = c.sim.truth()
    key = sorted(truth["pods"])[0]
    ns, name = key.split("/")
    expect_kind = {
        "": "APIResourceList",
        "/nodes": "NodeMetricsList",
        "/nodes/node-0001": "NodeMetrics",
        "/pods": "PodMetricsList",
        f"/namespaces/{ns}/pods": "PodMetricsList",
        f"/namespaces/{ns}/pods/{name}": "PodMetrics",
    }
    for version in VERSIONS:
        for suffix, kind in expect_kind.items():
            doc = json.loads(c.kubectl_ok("get", "--raw", f"{GROUP}/{version}{suffix}"))
            assert doc["kind"] == kind, (version, suffix, doc)
        resources = json.loads(c.kubectl_ok("get", "--raw", f"{GROUP}/{version}"))["resources"]
        assert {(r["name"], r["kind"], r["namespaced"]) for r in resources} == {
            ("nodes", "NodeMetrics", False),
            ("pods", "PodMetrics", True),
        }
        for r in resources:
            assert r["singularName"] == "" and sorted(r["verbs"]) == ["get", "list"]
    group = json.loads(c.kubectl_ok("get", "--raw", GROUP))
    assert group["kind"] == "APIGroup" and group["name"] == "metrics.k8s.io"
    assert {v["version"] for v in group["versions"]} == set(VERSIONS)
    # kubectl discovers the group through the aggregator and prefers v1
    out = c.kubectl_ok("api-versions")
    assert "metrics.k8s.io/v1" in out.split() and "metrics.k8s.io/v1beta1" in out.split()


def test_server_serves_discovery_version_and_openapi_directly(cluster: Cluster) -> None:
    s = cluster.server
    for path, check in (
        ("/apis", lambda d: d["kind"] == "APIGroupList"),
        (f"{GROUP}", lambda d: d["kind"] == "APIGroup"),
        ("/version", lambda d: "gitVersion" in d),
        ("/openapi/v2", lambda d: d["swagger"] == "2.0"),
        ("/openapi/v3", lambda d: "apis/metrics.k8s.io/v1" in d["paths"]),
    ):
        status, _, body = s.get(path)
        assert status == 200, (path, body[:200])
        assert check(json.loads(body)), path


def _stable(doc: dict[str, Any]) -> Any:
    """Drop what legitimately differs between two requests: creationTimestamp (= now)."""
    items = doc["items"] if "items" in doc else [doc.get("item", doc)]
    return [
        {**i, "metadata": {k: v for k, v in i["metadata"].items() if k != "creationTimestamp"}}
        for i in items
    ]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("suffix", "kind", "single"),
    [
        ("/nodes", "nodes", False),
        ("/nodes/node-0004", "nodes", True),
        ("/pods", "pods", False),
        ("/namespaces/kube-system/pods", "pods", False),
        ("/namespaces/kube-system/pods/kube-proxy-node-0001", "pods", True),
    ],
)
def test_protobuf_decodes_to_the_json(
    cluster: Cluster, version: str, suffix: str, kind: str, single: bool
) -> None:
    c = cluster
    path = f"{GROUP}/{version}{suffix}"
    list_kind = {"nodes": "NodeMetrics", "pods": "PodMetrics"}[kind] + ("" if single else "List")

    def check() -> str | None:
        before = json.loads(c.api(path)[2])
        status, headers, body = c.api(path, accept=f"{PROTOBUF}, */*")
        after = json.loads(c.api(path)[2])
        assert status == 200
        assert headers["content-type"] == PROTOBUF
        pb = decode_protobuf(body, kind, single)
        assert pb["apiVersion"] == f"metrics.k8s.io/{version}"
        assert pb["kind"] == list_kind
        if _stable(before) != _stable(after):
            return "a scrape landed between the requests"
        expected = [json_as_pb_shape(i) for i in _stable(before)]
        got = _stable({"item": pb["item"]} if single else pb)
        if got != expected:
            return f"protobuf {got} != json {expected}"
        return None

    eventually(check, attempts=5, pause=0.2)


def test_table_through_the_aggregator(cluster: Cluster) -> None:
    status, headers, body = cluster.api(f"{GROUP}/v1beta1/pods", accept=TABLE)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["kind"] == "Table" and doc["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in doc["columnDefinitions"]] == ["Name", "cpu", "memory", "Window"]
    assert len(doc["rows"]) == len(cluster.sim.truth()["pods"])


def _status(c: Cluster, path: str) -> tuple[int, dict[str, Any]]:
    status, _, body = c.api(path)
    doc = json.loads(body)
    assert doc["kind"] == "Status" and doc["status"] == "Failure" and doc["code"] == status
    return status, doc


def test_errors_are_status_objects(cluster: Cluster) -> None:
    c = cluster
    status, doc = _status(c, f"{GROUP}/v1beta1/nodes/no-such-node")
    assert (status, doc["reason"], doc["message"]) == (
        404,
        "NotFound",
        'node "no-such-node" not found',
    )
    status, doc = _status(c, f"{GROUP}/v1/namespaces/default/pods/no-such-pod")
    assert (status, doc["message"]) == (404, 'pods "no-such-pod" not found')
    status, doc = _status(c, f"{GROUP}/v1beta1/pods?labelSelector=app%20in%20(")
    assert (status, doc["reason"]) == (400, "BadRequest")
    status, doc = _status(c, f"{GROUP}/v1beta1/pods?fieldSelector=status.phase%3DRunning")
    assert (status, doc["reason"]) == (400, "BadRequest")
    status, doc = _status(c, f"{GROUP}/v1beta1/pods?watch=true")
    assert status == 405


def test_field_selectors(cluster: Cluster) -> None:
    c = cluster
    truth = c.sim.truth()["pods"]
    on_node = {k for k, p in truth.items() if p["node"] == "node-0005"}
    items = c.api_json(f"{GROUP}/v1/pods?fieldSelector=spec.nodeName%3Dnode-0005")["items"]
    assert {f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in items} == on_node
    items = c.api_json(f"{GROUP}/v1/nodes?fieldSelector=metadata.name%3Dnode-0001")["items"]
    assert [i["metadata"]["name"] for i in items] == ["node-0001"]
