"""The API's static pieces: content negotiation, Status bodies, discovery and OpenAPI documents."""

from __future__ import annotations

import orjson
import pytest
from openapi_spec_validator import validate

from kubemetrics.api import discovery, openapi, status
from kubemetrics.api.hooks import ANONYMOUS, RequestAttributes, UserInfo, forbidden_message
from kubemetrics.api.negotiation import Format, Negotiated, negotiate
from kubemetrics.gostrings import go_quote

# --- negotiation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, Negotiated(Format.JSON)),
        ("", Negotiated(Format.JSON)),
        ("*/*", Negotiated(Format.JSON)),
        ("application/json", Negotiated(Format.JSON)),
        ("application/*", Negotiated(Format.JSON)),
        # kubectl top / the HPA
        ("application/vnd.kubernetes.protobuf, */*", Negotiated(Format.PROTOBUF)),
        ("application/vnd.kubernetes.protobuf", Negotiated(Format.PROTOBUF)),
        # kubectl get
        (
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
            "g=meta.k8s.io,application/json",
            Negotiated(Format.TABLE, "v1"),
        ),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", Negotiated(Format.TABLE, "v1beta1")),
        ("application/json; as=Table; v=v1; g=meta.k8s.io", Negotiated(Format.TABLE, "v1")),
        # unsupported conversions fall through to the next range
        (
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json",
            Negotiated(Format.JSON),
        ),
        (
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json",
            Negotiated(Format.JSON),
        ),
        # q weights
        (
            "application/json;q=0.5, application/vnd.kubernetes.protobuf",
            Negotiated(Format.PROTOBUF),
        ),
        ("application/vnd.kubernetes.protobuf;q=0, application/json", Negotiated(Format.JSON)),
        ("text/html, application/json;q=0.1", Negotiated(Format.JSON)),
        # nothing producible
        ("text/html", None),
        ("application/yaml", None),
        ("application/json;as=Table;v=v2;g=meta.k8s.io", None),
        ("application/json;q=0", None),
    ],
)
def test_negotiate(accept: str | None, expected: Negotiated | None) -> None:
    assert negotiate(accept) == expected


def test_negotiated_content_types() -> None:
    assert Negotiated(Format.PROTOBUF).content_type == "application/vnd.kubernetes.protobuf"
    assert Negotiated(Format.JSON).content_type == "application/json"
    assert Negotiated(Format.TABLE).content_type == "application/json"


# --- Status -----------------------------------------------------------------------------------


def test_status_bodies_match_kube_apiserver() -> None:
    assert status.not_found("", "pods", "x").to_json() == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"pods \\"x\\" not found","reason":"NotFound",'
        b'"details":{"name":"x","kind":"pods"},"code":404}\n'
    )
    assert orjson.loads(status.not_found("metrics.k8s.io", "podmetrics", "ns/x").to_json()) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'podmetrics.metrics.k8s.io "ns/x" not found',
        "reason": "NotFound",
        "details": {"name": "ns/x", "group": "metrics.k8s.io", "kind": "podmetrics"},
        "code": 404,
    }
    assert orjson.loads(status.method_not_supported("metrics.k8s.io", "pods", "watch").to_json())[
        "message"
    ] == ('watch is not supported on resources of kind "pods.metrics.k8s.io"')
    assert status.bad_request("unable to parse requirement").to_json() == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"unable to parse requirement","reason":"BadRequest","code":400}\n'
    )
    assert status.path_not_found().to_json() == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"the server could not find the requested resource","reason":"NotFound",'
        b'"details":{},"code":404}\n'
    )
    assert orjson.loads(status.internal_error("boom").to_json())["details"] == {
        "causes": [{"message": "boom"}]
    }


def test_go_quote() -> None:
    assert go_quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert go_quote("tab\there\x01\x7f") == '"tab\\there\\x01\\x7f"'


def test_forbidden_messages() -> None:
    bob = UserInfo("bob", ("devs",))
    pods = RequestAttributes(
        user=bob,
        verb="list",
        path="/apis/metrics.k8s.io/v1beta1/namespaces/team/pods",
        resource_request=True,
        api_group="metrics.k8s.io",
        api_version="v1beta1",
        resource="pods",
        namespace="team",
    )
    assert forbidden_message(pods) == (
        'User "bob" cannot list resource "pods" in API group "metrics.k8s.io" in the namespace '
        '"team"'
    )
    node = RequestAttributes(
        user=bob,
        verb="get",
        path="/apis/metrics.k8s.io/v1/nodes/n1",
        resource_request=True,
        api_group="metrics.k8s.io",
        api_version="v1",
        resource="nodes",
        name="n1",
    )
    msg = forbidden_message(node)
    assert msg == (
        'User "bob" cannot get resource "nodes" in API group "metrics.k8s.io" at the cluster scope'
    )
    assert status.forbidden("metrics.k8s.io", "nodes", "n1", msg).message == (
        'nodes.metrics.k8s.io "n1" is forbidden: ' + msg
    )
    path = RequestAttributes(user=ANONYMOUS, verb="get", path="/metrics", resource_request=False)
    assert forbidden_message(path) == 'User "system:anonymous" cannot get path "/metrics"'
    assert status.forbidden("", "", "", forbidden_message(path)).message == (
        'forbidden: User "system:anonymous" cannot get path "/metrics"'
    )


# --- discovery --------------------------------------------------------------------------------


def test_discovery_documents() -> None:
    gv1 = {"groupVersion": "metrics.k8s.io/v1", "version": "v1"}
    gv1b = {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}
    group = {"name": "metrics.k8s.io", "versions": [gv1, gv1b], "preferredVersion": gv1}
    assert orjson.loads(discovery.api_group_list()) == {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group],
    }
    assert orjson.loads(discovery.api_group()) == {"kind": "APIGroup", "apiVersion": "v1", **group}
    assert discovery.api_resource_list("v1beta1") == (
        b'{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"metrics.k8s.io/v1beta1",'
        b'"resources":[{"name":"nodes","singularName":"","namespaced":false,"kind":"NodeMetrics",'
        b'"verbs":["get","list"]},{"name":"pods","singularName":"","namespaced":true,'
        b'"kind":"PodMetrics","verbs":["get","list"]}]}\n'
    )


def test_version_info() -> None:
    info = orjson.loads(discovery.version_info("0.3.1", git_commit="abc"))
    assert info["major"] == "0"
    assert info["minor"] == "3"
    assert info["gitVersion"] == "v0.3.1"
    assert info["gitCommit"] == "abc"
    assert set(info) == {
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    }


# --- OpenAPI ----------------------------------------------------------------------------------


def test_openapi_documents_are_valid_and_complete() -> None:
    docs = openapi.build_documents("v0.1.0")
    v2 = orjson.loads(docs.v2)
    validate(v2)
    for v in ("v1", "v1beta1"):
        for kind in ("NodeMetrics", "NodeMetricsList", "PodMetrics", "PodMetricsList"):
            d = v2["definitions"][f"io.k8s.metrics.pkg.apis.metrics.{v}.{kind}"]
            assert d["x-kubernetes-group-version-kind"] == [
                {"group": "metrics.k8s.io", "kind": kind, "version": v}
            ]
        base = f"/apis/metrics.k8s.io/{v}"
        assert {
            f"{base}/nodes",
            f"{base}/nodes/{{name}}",
            f"{base}/pods",
            f"{base}/namespaces/{{namespace}}/pods",
            f"{base}/namespaces/{{namespace}}/pods/{{name}}",
        } <= set(v2["paths"])
    pod = v2["definitions"]["io.k8s.metrics.pkg.apis.metrics.v1beta1.PodMetrics"]
    assert pod["required"] == ["timestamp", "window", "containers"]
    assert "io.k8s.apimachinery.pkg.api.resource.Quantity" in v2["definitions"]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in v2["definitions"]

    index = orjson.loads(docs.v3_index)
    assert set(index["paths"]) == {"apis/metrics.k8s.io/v1", "apis/metrics.k8s.io/v1beta1"}
    for key, entry in index["paths"].items():
        doc = orjson.loads(docs.v3_group_versions[key])
        validate(doc)
        assert entry["serverRelativeURL"] == f"/openapi/v3/{key}?hash={docs.v3_hashes[key]}"
        version = key.rsplit("/", 1)[1]
        # a group-version document describes only its own version
        assert all(p.startswith(f"/apis/metrics.k8s.io/{version}/") for p in doc["paths"])
        schemas = doc["components"]["schemas"]
        assert f"io.k8s.metrics.pkg.apis.metrics.{version}.PodMetricsList" in schemas
        other = "v1beta1" if version == "v1" else "v1"
        assert not any(f".metrics.{other}." in name for name in schemas)
