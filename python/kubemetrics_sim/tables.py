"""meta.k8s.io/v1 Table rendering for kubectl get (server-side printing), from object JSON."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import Any

from .gofmt import human_duration

Col = tuple[str, str, str, str, int]  # name, type, format, description, priority


def _col(c: Col) -> dict[str, Any]:
    return {"name": c[0], "type": c[1], "format": c[2], "description": c[3], "priority": c[4]}


NAME_DESC = "Name must be unique within a namespace."
AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)


def _age(obj: dict[str, Any]) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    t = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return human_duration(time.time() - t.timestamp())


def _node_cells(o: dict[str, Any]) -> list[Any]:
    st = o.get("status", {})
    ready = "Unknown"
    for c in st.get("conditions", []):
        if c.get("type") == "Ready":
            ready = "Ready" if c.get("status") == "True" else "NotReady"
    roles = sorted(
        k.split("/", 1)[1]
        for k in o.get("metadata", {}).get("labels", {})
        if k.startswith("node-role.kubernetes.io/")
    )
    addrs = {a["type"]: a["address"] for a in st.get("addresses", [])}
    info = st.get("nodeInfo", {})
    return [
        o["metadata"]["name"],
        ready,
        ",".join(roles) or "<none>",
        _age(o),
        info.get("kubeletVersion", ""),
        addrs.get("InternalIP", "<none>"),
        addrs.get("ExternalIP", "<none>"),
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def _pod_cells(o: dict[str, Any]) -> list[Any]:
    st = o.get("status", {})
    cs = st.get("containerStatuses", [])
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in cs)
    reason = st.get("phase", "Unknown")
    for c in cs:
        waiting = c.get("state", {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
    if o.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [
        o["metadata"]["name"],
        f"{ready}/{len(o.get('spec', {}).get('containers', []))}",
        reason,
        str(restarts),
        _age(o),
        st.get("podIP") or "<none>",
        o.get("spec", {}).get("nodeName") or "<none>",
        "<none>",
        "<none>",
    ]


def _ns_cells(o: dict[str, Any]) -> list[Any]:
    return [o["metadata"]["name"], o.get("status", {}).get("phase", ""), _age(o)]


def _cm_cells(o: dict[str, Any]) -> list[Any]:
    return [o["metadata"]["name"], len(o.get("data", {})), _age(o)]


def _lease_cells(o: dict[str, Any]) -> list[Any]:
    return [o["metadata"]["name"], o.get("spec", {}).get("holderIdentity", ""), _age(o)]


def _slice_cells(o: dict[str, Any]) -> list[Any]:
    ports = ",".join(str(p.get("port", "")) for p in o.get("ports") or []) or "<unset>"
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses", [])]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [o["metadata"]["name"], o.get("addressType", ""), ports, shown or "<unset>", _age(o)]


TABLES: dict[str, tuple[list[Col], Callable[[dict[str, Any]], list[Any]]]] = {
    "nodes": (
        [
            ("Name", "string", "name", NAME_DESC, 0),
            ("Status", "string", "", "The status of the node", 0),
            ("Roles", "string", "", "The roles of the node", 0),
            ("Age", "string", "", AGE_DESC, 0),
            ("Version", "string", "", "Kubelet Version reported by the node.", 0),
            ("Internal-IP", "string", "", "List of internal IPs for the node.", 1),
            ("External-IP", "string", "", "List of external IPs for the node.", 1),
            ("OS-Image", "string", "", "OS Image reported by the node.", 1),
            ("Kernel-Version", "string", "", "Kernel Version reported by the node.", 1),
            (
                "Container-Runtime",
                "string",
                "",
                "Container Runtime Version reported by the node.",
                1,
            ),
        ],
        _node_cells,
    ),
    "pods": (
        [
            ("Name", "string", "name", NAME_DESC, 0),
            ("Ready", "string", "", "The aggregate readiness state of this pod.", 0),
            ("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
            ("Restarts", "string", "", "The number of times the containers have restarted.", 0),
            ("Age", "string", "", AGE_DESC, 0),
            ("IP", "string", "", "IP address allocated to the pod.", 1),
            ("Node", "string", "", "Name of the node where the pod is scheduled.", 1),
            ("Nominated Node", "string", "", "Name of the node nominated by the scheduler.", 1),
            ("Readiness Gates", "string", "", "All readiness gates of the pod.", 1),
        ],
        _pod_cells,
    ),
    "namespaces": (
        [
            ("Name", "string", "name", NAME_DESC, 0),
            ("Status", "string", "", "The status of the namespace", 0),
            ("Age", "string", "", AGE_DESC, 0),
        ],
        _ns_cells,
    ),
    "configmaps": (
        [
            ("Name", "string", "name", NAME_DESC, 0),
            ("Data", "integer", "", "Number of keys in the ConfigMap.", 0),
            ("Age", "string", "", AGE_DESC, 0),
        ],
        _cm_cells,
    ),
    "leases": (
        [
            ("Name", "string", "name", NAME_DESC, 0),
            ("Holder", "string", "", "The holder of the lease.", 0),
            ("Age", "string", "", AGE_DESC, 0),
        ],
        _lease_cells,
    ),
    "endpointslices": (
        [
            ("Name", "string", "name", NAME_DESC, 0),
            ("AddressType", "string", "", "The IP protocol for this slice.", 0),
            ("Ports", "string", "", "The ports of this slice.", 0),
            ("Endpoints", "string", "", "The endpoints of this slice.", 0),
            ("Age", "string", "", AGE_DESC, 0),
        ],
        _slice_cells,
    ),
}


def row(resource: str, obj: dict[str, Any], include: str) -> dict[str, Any]:
    cells = TABLES[resource][1](obj)
    r: dict[str, Any] = {"cells": cells}
    if include == "Object":
        r["object"] = obj
    elif include != "None":
        r["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }
    return r


def table(
    resource: str,
    objs: list[dict[str, Any]],
    rv: int,
    include: str,
    headers: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if extra_meta:
        meta.update(extra_meta)
    t: dict[str, Any] = {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
    t["columnDefinitions"] = [_col(c) for c in TABLES[resource][0]] if headers else None
    t["rows"] = [row(resource, o, include) for o in objs]
    return t
