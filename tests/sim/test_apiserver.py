"""The simulated API server against kubernetes-asyncio and raw HTTP: list/watch semantics."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from kubemetrics_sim.launch import SimProcess

META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
META = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess(
        tmp_path_factory.mktemp("sim"),
        nodes=3,
        pods_per_node=4,
        seed=5,
        refresh_ms=(1000, 1500),
        extra_args=("--bookmark-interval", "0.5", "--pod-start-delay", "0.2"),
    ) as s:
        yield s


def get(sim: SimProcess, path: str, accept: str = "", token: str | None = None) -> Any:
    status, _, body = sim.request(
        "GET", path, token=token, headers={"Accept": accept} if accept else None
    )
    return status, json.loads(body) if body.startswith(b"{") else body


def watch_lines(sim: SimProcess, path: str, accept: str = "") -> list[dict[str, Any]]:
    status, _, body = sim.request(
        "GET", path, headers={"Accept": accept} if accept else None, timeout=30
    )
    assert status == 200, body
    return [json.loads(line) for line in body.splitlines() if line]


async def _client(sim: SimProcess, user: str = "metrics-server") -> client.ApiClient:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=sim.kubeconfig(user), client_configuration=cfg)
    return client.ApiClient(cfg)


def test_kubernetes_asyncio_list_watch_and_410_relist(sim: SimProcess) -> None:
    async def run() -> None:
        async with await _client(sim) as api:
            v1 = client.CoreV1Api(api)
            pods = await v1.list_pod_for_all_namespaces(field_selector="status.phase=Running")
            assert {f"{p.metadata.namespace}/{p.metadata.name}" for p in pods.items} == set(
                (await asyncio.to_thread(sim.truth))["pods"]
            )
            rv = pods.metadata.resource_version
            w = watch.Watch()
            seen: list[tuple[str, str]] = []
            stream = w.stream(
                v1.list_pod_for_all_namespaces,
                field_selector="status.phase=Running",
                resource_version=rv,
                timeout_seconds=20,
            )
            await asyncio.to_thread(
                sim.create_pod, namespace="team-c", name="watched", start_delay=0.2
            )
            async for ev in stream:
                seen.append((ev["type"], ev["object"].metadata.name))
                if ev["object"].metadata.name == "watched":
                    break
            w.stop()
            # Pending is outside status.phase=Running: the pod enters the selection as ADDED.
            assert seen[-1] == ("ADDED", "watched")
            assert ev["object"].status.phase == "Running"

            # Forget history: resuming from the old resourceVersion is 410 Gone, then relist.
            await asyncio.to_thread(sim.compact)
            w = watch.Watch()
            with pytest.raises(ApiException) as e:
                async for _ in w.stream(
                    v1.list_pod_for_all_namespaces, resource_version=rv, timeout_seconds=5
                ):
                    pass
            assert e.value.status == 410
            again = await v1.list_pod_for_all_namespaces()
            assert int(again.metadata.resource_version) > int(rv)
            assert "watched" in {p.metadata.name for p in again.items}

            nodes = await v1.list_node()
            assert {n.metadata.name for n in nodes.items} == set(sim.info["nodes"])
            n0 = nodes.items[0]
            assert n0.status.addresses[0].type == "InternalIP"
            assert n0.status.daemon_endpoints.kubelet_endpoint.port == sim.info["kubelet_port"]

    asyncio.run(run())


def test_metadata_only_list_and_watch(sim: SimProcess) -> None:
    status, body = get(sim, "/api/v1/pods?fieldSelector=status.phase%3DRunning", META_LIST)
    assert status == 200
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["apiVersion"] == "meta.k8s.io/v1"
    item = body["items"][0]
    assert set(item) == {"metadata"}
    assert {"name", "namespace", "resourceVersion", "labels"} <= set(item["metadata"])
    rv = body["metadata"]["resourceVersion"]
    sim.create_pod(namespace="default", name="meta-watched", start_delay=0)
    events = watch_lines(
        sim, f"/api/v1/namespaces/default/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1", META
    )
    obj = next(e["object"] for e in events if e["type"] == "ADDED")
    assert obj["kind"] == "PartialObjectMetadata" and obj["metadata"]["name"] == "meta-watched"
    assert "spec" not in obj


def test_watch_bookmarks_and_timeout(sim: SimProcess) -> None:
    _, body = get(sim, "/api/v1/nodes")
    rv = body["metadata"]["resourceVersion"]
    events = watch_lines(
        sim,
        f"/api/v1/nodes?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=2",
    )
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert marks, events
    assert marks[0]["object"]["kind"] == "Node"
    assert int(marks[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_watch_from_zero_sends_current_state_then_ends(sim: SimProcess) -> None:
    events = watch_lines(sim, "/api/v1/nodes?watch=1&timeoutSeconds=1")
    assert [e["type"] for e in events] == ["ADDED"] * len(sim.info["nodes"])
    assert events[0]["object"]["kind"] == "Node"


def test_expired_watch_is_an_error_event(sim: SimProcess) -> None:
    _, body = get(sim, "/api/v1/pods")
    rv = int(body["metadata"]["resourceVersion"])
    sim.churn_once()
    floor = sim.compact()
    events = watch_lines(sim, f"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1")
    assert events == [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {rv} ({floor})",
                "reason": "Expired",
                "code": 410,
            },
        }
    ]


def test_selectors(sim: SimProcess) -> None:
    truth = sim.truth()["pods"]
    node = "node-0002"
    _, body = get(sim, f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node}")
    assert {p["metadata"]["name"] for p in body["items"]} == {
        p["name"] for p in truth.values() if p["node"] == node
    } | {p["metadata"]["name"] for p in body["items"] if p["status"]["phase"] != "Running"}
    _, body = get(sim, "/api/v1/namespaces/kube-system/pods?labelSelector=k8s-app%3Dkube-proxy")
    assert len(body["items"]) == len(sim.info["nodes"])
    _, body = get(sim, "/api/v1/pods?labelSelector=k8s-app+notin+(kube-proxy),app")
    assert body["items"] and all(p["metadata"]["namespace"] != "kube-system" for p in body["items"])
    _, body = get(sim, "/api/v1/nodes?fieldSelector=metadata.name%3Dnode-0001")
    assert [n["metadata"]["name"] for n in body["items"]] == ["node-0001"]
    status, body = get(sim, "/api/v1/pods?fieldSelector=spec.schedulerName%3Dx")
    assert status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == "field label not supported: spec.schedulerName"
    status, body = get(sim, "/api/v1/pods?labelSelector=a%3D%3D%3D")
    assert status == 400 and body["kind"] == "Status"


def test_pagination(sim: SimProcess) -> None:
    _, full = get(sim, "/api/v1/pods")
    names, cont, pages = [], "", 0
    while True:
        _, page = get(sim, f"/api/v1/pods?limit=5{'&continue=' + cont if cont else ''}")
        pages += 1
        names += [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in page["items"]]
        cont = page["metadata"].get("continue", "")
        if not cont:
            break
    assert names == [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in full["items"]]
    assert pages == -(-len(names) // 5)


def test_resource_version_0_lists_come_whole(sim: SimProcess) -> None:
    """As kube-apiserver's watch cache answers them: `limit` is ignored, no continue token."""
    _, full = get(sim, "/api/v1/pods")
    _, whole = get(sim, "/api/v1/pods?resourceVersion=0&limit=5")
    assert len(full["items"]) > 5
    assert len(whole["items"]) == len(full["items"])
    assert "continue" not in whole["metadata"]
    _, paged = get(sim, "/api/v1/pods?limit=5")
    assert len(paged["items"]) == 5 and paged["metadata"]["continue"]


def test_status_objects(sim: SimProcess) -> None:
    status, body = get(sim, "/api/v1/namespaces/default/pods/nope")
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    status, body = get(sim, "/api/v1/pods", token="wrong")
    assert status == 401 and body["reason"] == "Unauthorized"
    status, body = get(sim, "/api/v1/nodes", token=sim.token("viewer"))
    assert status == 403
    assert body["message"] == (
        'nodes is forbidden: User "viewer" cannot list resource "nodes" in API group "" '
        "at the cluster scope"
    )
    status, body = get(sim, "/api/v1/pods", accept="application/vnd.kubernetes.protobuf")
    assert status == 406


def test_token_and_subject_access_reviews(sim: SimProcess) -> None:
    ms = sim.token("metrics-server")

    def post(path: str, body: dict[str, Any], token: str = ms) -> tuple[int, Any]:
        status, _, data = sim.request("POST", path, body, token=token)
        return status, json.loads(data)

    status, r = post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": sim.token("viewer")},
        },
    )
    assert status == 201 and r["status"]["authenticated"] is True
    assert r["status"]["user"]["username"] == "viewer"
    assert "viewers" in r["status"]["user"]["groups"]
    _, r = post("/apis/authentication.k8s.io/v1/tokenreviews", {"spec": {"token": "nope"}})
    assert r["status"]["authenticated"] is False

    def sar(user: str, groups: list[str], ns: str, resource: str = "pods") -> bool:
        _, r = post(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "spec": {
                    "user": user,
                    "groups": groups,
                    "resourceAttributes": {
                        "verb": "list",
                        "group": "metrics.k8s.io",
                        "resource": resource,
                        "namespace": ns,
                    },
                }
            },
        )
        return bool(r["status"]["allowed"])

    assert sar("viewer", ["viewers"], "team-a")
    assert not sar("viewer", ["viewers"], "team-b")
    assert not sar("viewer", ["viewers"], "")
    assert sar("anyone", ["system:masters"], "")
    assert not sar("viewer", ["viewers"], "team-a", resource="nodes")
    # The viewer itself may not ask TokenReview questions.
    status, _ = post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        {"spec": {"token": ms}},
        token=sim.token("viewer"),
    )
    assert status == 403


def test_extension_apiserver_authentication_configmap(sim: SimProcess) -> None:
    path = "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication"
    status, cm = get(sim, path, token=sim.token("metrics-server"))
    assert status == 200
    data = cm["data"]
    with open(sim.ca_file) as f:
        assert data["client-ca-file"] == f.read()
    with open(sim.file("front_proxy_ca")) as f:
        assert data["requestheader-client-ca-file"] == f.read()
    assert json.loads(data["requestheader-allowed-names"]) == ["front-proxy-client"]
    assert json.loads(data["requestheader-username-headers"]) == ["X-Remote-User"]
    assert json.loads(data["requestheader-group-headers"]) == ["X-Remote-Group"]
    assert json.loads(data["requestheader-extra-headers-prefix"]) == ["X-Remote-Extra-"]
    events = watch_lines(
        sim,
        "/api/v1/namespaces/kube-system/configmaps?watch=1&timeoutSeconds=1"
        "&fieldSelector=metadata.name%3Dextension-apiserver-authentication",
    )
    assert [e["object"]["metadata"]["name"] for e in events] == [
        "extension-apiserver-authentication"
    ]
    # Not for the viewer.
    assert get(sim, path, token=sim.token("viewer"))[0] == 403


def test_discovery(sim: SimProcess) -> None:
    _, v = get(sim, "/version", token="")
    assert v["major"] == "1" and v["gitVersion"].startswith("v1.")
    _, api = get(sim, "/api")
    assert api["versions"] == ["v1"]
    _, res = get(sim, "/api/v1")
    names = {r["name"] for r in res["resources"]}
    assert {"pods", "nodes", "namespaces", "configmaps"} <= names
    _, groups = get(sim, "/apis")
    assert {"authentication.k8s.io", "authorization.k8s.io"} <= {
        g["name"] for g in groups["groups"]
    }
    assert get(sim, "/api/v1/pods", token="")[0] == 403  # anonymous: public info only


def test_client_certificate_authentication(sim: SimProcess) -> None:
    with open(sim.kubeconfig("admin")) as f:
        kc = json.load(f)
    user = kc["users"][0]["user"]
    assert "client-certificate-data" in user and "token" not in user
    assert base64.b64decode(user["client-certificate-data"]).startswith(b"-----BEGIN CERT")


def test_an_outage_refuses_connections_drops_watches_and_ends(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`POST /_sim/outage`: connections are refused at once, an open watch is cut, the same
    address answers again after the outage, and with `compact` a watch resuming from before it
    gets 410 (a restarted API server's new watch cache)."""
    with SimProcess(tmp_path_factory.mktemp("outage"), nodes=2, pods_per_node=2, seed=3) as s:
        _, body = get(s, "/api/v1/pods")
        rv = int(body["metadata"]["resourceVersion"])
        host = str(s.info["apiserver"]["host"])
        c = http.client.HTTPSConnection(host, s.api_port, context=s.ssl_context(), timeout=30)
        auth = {"Authorization": f"Bearer {s.token('admin')}"}
        c.request("GET", "/api/v1/pods?watch=1", headers=auth)
        watch_answer = c.getresponse()
        assert watch_answer.status == 200
        lists_before = s.state()["lists"]["pods"]
        s.outage(2.0, compact=True)
        t0 = time.monotonic()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, s.api_port), timeout=5).close()
        # the watch was cut (its stream ends) well before the outage is over
        with contextlib.suppress(http.client.IncompleteRead, OSError):
            while watch_answer.read1(65536):
                pass
        assert time.monotonic() - t0 < 1.5
        c.close()
        while True:
            try:
                state = s.state()
                break
            except (ConnectionRefusedError, ssl.SSLError):
                assert time.monotonic() - t0 < 15, "the API server never came back"
                time.sleep(0.1)
        assert time.monotonic() - t0 >= 1.8
        assert state["outages"] == 1 and state["history_floor"] > rv
        assert get(s, "/api/v1/pods")[0] == 200
        assert s.state()["lists"]["pods"] == lists_before + 1
        events = watch_lines(s, f"/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1")
        assert events[0]["type"] == "ERROR" and events[0]["object"]["code"] == 410
