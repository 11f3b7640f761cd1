"""Leases (coordination.k8s.io/v1) and EndpointSlices (discovery.k8s.io/v1) in the simulator."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from kubemetrics_sim.launch import SimProcess

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"


def lease(name: str, holder: str = "", duration: int = 15, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, **meta},
        "spec": {
            "holderIdentity": holder or name,
            "leaseDurationSeconds": duration,
            "renewTime": "2025-01-01T00:00:00.000000Z",
        },
    }


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess(tmp_path_factory.mktemp("sim"), nodes=1, pods_per_node=1, seed=5) as s:
        yield s


def call(
    sim: SimProcess, method: str, path: str, body: Any = None, token: str | None = None
) -> tuple[int, Any]:
    status, _, data = sim.request(method, path, body, token=token)
    return status, json.loads(data) if data else None


def test_lease_create_get_update_delete_with_conflicts(sim: SimProcess) -> None:
    status, created = call(sim, "POST", LEASES, lease("a", labels={"g": "x"}))
    assert status == 201, created
    assert created["apiVersion"] == "coordination.k8s.io/v1" and created["kind"] == "Lease"
    meta = created["metadata"]
    assert meta["namespace"] == "kube-system" and meta["uid"] and meta["resourceVersion"]
    assert created["spec"]["leaseDurationSeconds"] == 15

    status, again = call(sim, "POST", LEASES, lease("a"))
    assert status == 409 and again["reason"] == "AlreadyExists"
    assert again["message"] == 'leases.coordination.k8s.io "a" already exists'

    status, got = call(sim, "GET", f"{LEASES}/a")
    assert status == 200 and got == created

    renewed = lease("a", holder="a", resourceVersion=meta["resourceVersion"])
    renewed["spec"]["renewTime"] = "2025-01-01T00:00:05.000000Z"
    status, updated = call(sim, "PUT", f"{LEASES}/a", renewed)
    assert status == 200, updated
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert updated["metadata"]["uid"] == meta["uid"]
    assert updated["spec"]["renewTime"] == "2025-01-01T00:00:05.000000Z"

    # A writer holding the old version loses: optimistic concurrency, as etcd's.
    status, stale = call(sim, "PUT", f"{LEASES}/a", renewed)
    assert status == 409 and stale["reason"] == "Conflict"
    assert stale["message"].startswith(
        'Operation cannot be fulfilled on leases.coordination.k8s.io "a": the object has been '
        "modified"
    )
    assert stale["details"] == {"name": "a", "group": "coordination.k8s.io", "kind": "leases"}

    status, pre = call(
        sim,
        "DELETE",
        f"{LEASES}/a",
        {"preconditions": {"resourceVersion": meta["resourceVersion"]}},
    )
    assert status == 409 and "Precondition failed" in pre["message"]
    status, done = call(
        sim,
        "DELETE",
        f"{LEASES}/a",
        {"preconditions": {"resourceVersion": updated["metadata"]["resourceVersion"]}},
    )
    assert status == 200 and done["status"] == "Success"
    assert done["details"]["uid"] == meta["uid"]
    status, gone = call(sim, "GET", f"{LEASES}/a")
    assert status == 404 and gone["message"] == 'leases.coordination.k8s.io "a" not found'
    assert call(sim, "PUT", f"{LEASES}/a", lease("a"))[0] == 404
    assert call(sim, "DELETE", f"{LEASES}/a")[0] == 404


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (lease("bad", duration=0), 422, "must be greater than 0"),
        (lease("Bad_Name"), 422, "RFC 1123"),
        ({**lease("x"), "spec": {"renewTime": "yesterday"}}, 400, "invalid time"),
        ({**lease("x"), "kind": "ConfigMap"}, 400, "want coordination.k8s.io/v1 Lease"),
        (lease("x", namespace="default"), 400, "does not match the namespace"),
        ({**lease("x"), "spec": {"holder": "typo"}}, 400, 'unknown field "spec.holder"'),
    ],
)
def test_invalid_leases_are_refused(
    sim: SimProcess, body: dict[str, Any], status: int, words: str
) -> None:
    got, st = call(sim, "POST", LEASES, body)
    assert got == status and words in st["message"], st


def test_lease_list_and_watch(sim: SimProcess) -> None:
    for name, group in (("w1", "blue"), ("w2", "blue"), ("w3", "green")):
        assert call(sim, "POST", LEASES, lease(name, labels={"g": group}))[0] == 201
    status, listed = call(sim, "GET", f"{LEASES}?labelSelector=g%3Dblue")
    assert status == 200 and listed["kind"] == "LeaseList"
    assert listed["apiVersion"] == "coordination.k8s.io/v1"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["w1", "w2"]
    rv = listed["metadata"]["resourceVersion"]
    w1 = call(sim, "GET", f"{LEASES}/w1")[1]
    w1["spec"]["holderIdentity"] = "someone-else"
    assert call(sim, "PUT", f"{LEASES}/w1", w1)[0] == 200
    assert call(sim, "DELETE", f"{LEASES}/w2")[0] == 200
    assert call(sim, "DELETE", f"{LEASES}/w3")[0] == 200
    status, _, data = sim.request(
        "GET", f"{LEASES}?watch=true&labelSelector=g%3Dblue&resourceVersion={rv}&timeoutSeconds=1"
    )
    events = [json.loads(line) for line in data.splitlines() if line.strip()]
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "w1"),
        ("DELETED", "w2"),
    ]
    assert events[0]["object"]["spec"]["holderIdentity"] == "someone-else"
    assert events[0]["object"]["apiVersion"] == "coordination.k8s.io/v1"
    call(sim, "DELETE", f"{LEASES}/w1")


def test_lease_rights_follow_rbac(sim: SimProcess) -> None:
    token = sim.token("metrics-server")
    status, st = call(sim, "POST", LEASES, lease("ms"), token=token)
    assert status == 403, st
    assert 'cannot create resource "leases" in API group "coordination.k8s.io"' in st["message"]
    # What the high-availability overlay's Role grants, in its own namespace only.
    sim.control(
        "POST",
        "rbac/grants",
        {
            "name": "shard-leases",
            "users": ["system:serviceaccount:kube-system:metrics-server"],
            "verbs": ["get", "list", "watch", "create", "update", "delete"],
            "api_groups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "namespaces": ["kube-system"],
        },
    )
    try:
        assert call(sim, "POST", LEASES, lease("ms"), token=token)[0] == 201
        other = LEASES.replace("kube-system", "default")
        assert call(sim, "POST", other, lease("ms"), token=token)[0] == 403
        assert call(sim, "DELETE", f"{LEASES}/ms", token=token)[0] == 200
    finally:
        sim.control("DELETE", "rbac/grants/shard-leases")


def test_discovery_and_kubectl_see_leases(sim: SimProcess) -> None:
    groups = {g["name"] for g in sim.api("/apis")["groups"]}
    assert {"coordination.k8s.io", "discovery.k8s.io"} <= groups
    res = sim.api("/apis/coordination.k8s.io/v1")["resources"]
    assert [(r["name"], r["kind"], "update" in r["verbs"]) for r in res] == [
        ("leases", "Lease", True)
    ]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    assert call(sim, "POST", LEASES, lease("seen", holder="replica-1"))[0] == 201
    try:
        r = subprocess.run(
            [kubectl, "get", "leases", "-n", "kube-system"],
            env=sim.env("admin"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        rows = [line.split() for line in r.stdout.splitlines()]
        assert rows[0] == ["NAME", "HOLDER", "AGE"]
        assert rows[1][:2] == ["seen", "replica-1"]
    finally:
        call(sim, "DELETE", f"{LEASES}/seen")


def test_endpointslices_are_read_only(sim: SimProcess) -> None:
    path = "/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices"
    status, listed = call(sim, "GET", path)
    assert status == 200 and listed["kind"] == "EndpointSliceList"
    assert call(sim, "POST", path, {"metadata": {"name": "x"}})[0] == 405
