"""Response encoders through the served view: JSON shapes of SPEC §4, protobuf decoded by hand
and compared with the JSON, the server-side Table, bodies read in chunks and gzip-compressed,
and the per-snapshot view staying correct (labels as of its build, deletions at once).

Snapshots come from the real store fed kubelet text, so the encoders are checked against
the store's columns (the truth they must render) and the inventory's labels.
"""

from __future__ import annotations

import gzip
import json
import math
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemetrics import _native
from kubemetrics._native._testing import format_cpu, format_duration, format_memory
from kubemetrics_sim.protowire import fields
from tests.helpers.snapshots import (
    T0_MS,
    WINDOW_MS,
    Container,
    Pod,
    build,
    build_store,
    sample_cluster,
)

NOW_S = T0_MS / 1000 + 60.7  # creationTimestamp is the response time, whole seconds


def rfc3339(seconds: int | float) -> str:
    return datetime.fromtimestamp(math.floor(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def select(
    kind: str,
    snap: _native.Snapshot,
    inv: _native.Inventory,
    namespace: str | None = None,
    labels: str = "",
    fields: str = "",
) -> np.ndarray[Any, np.dtype[np.int64]]:
    return snap.view(inv).query(kind, namespace, labels, fields).select()


def encode(
    kind: str,
    snap: _native.Snapshot,
    inv: _native.Inventory,
    *,
    namespace: str | None = None,
    labels: str = "",
    fields: str = "",
    fmt: str = "json",
    api_version: str = "v1beta1",
    table_version: str = "v1",
    now_s: float = NOW_S,
    check_whole: bool = True,
) -> bytes:
    """A list, read chunk by chunk (checked against reading it whole)."""
    query = snap.view(inv).query(kind, namespace, labels, fields)
    kw: dict[str, Any] = {
        "api_version": api_version,
        "fmt": fmt,
        "now_s": now_s,
        "table_version": table_version,
    }
    body = query.respond(**kw)
    chunks = []
    while chunk := body.read():
        chunks.append(chunk)
    whole = b"".join(chunks)
    assert len(whole) == body.length
    if check_whole:
        assert query.respond(**kw).read_all() == whole
    return whole


def encode_one(
    kind: str,
    snap: _native.Snapshot,
    inv: _native.Inventory,
    namespace: str,
    name: str,
    *,
    fmt: str = "json",
    api_version: str = "v1beta1",
    now_s: float = NOW_S,
) -> bytes:
    body = snap.view(inv).get(kind, namespace, name, api_version=api_version, fmt=fmt, now_s=now_s)
    assert body is not None, (kind, namespace, name)
    return body.read_all()


def expected_node(snap: _native.Snapshot, inv: _native.Inventory, i: int) -> dict[str, Any]:
    n = snap.nodes
    name = str(n["name"][i])
    meta: dict[str, Any] = {"name": name, "creationTimestamp": rfc3339(NOW_S)}
    labels = inv.node_labels(name)
    if labels:
        meta["labels"] = dict(sorted(labels.items()))  # Go sorts map keys
    return {
        "metadata": meta,
        "timestamp": rfc3339(int(n["timestamp_ms"][i]) // 1000),
        "window": format_duration(int(n["window_ms"][i])),
        "usage": {
            "cpu": format_cpu(int(n["cpu_nanocores"][i])),
            "memory": format_memory(int(n["memory_bytes"][i])),
        },
    }


def expected_pod(snap: _native.Snapshot, inv: _native.Inventory, i: int) -> dict[str, Any]:
    p, c = snap.pods, snap.containers
    ns, name = str(p["namespace"][i]), str(p["name"][i])
    meta: dict[str, Any] = {"name": name, "namespace": ns, "creationTimestamp": rfc3339(NOW_S)}
    labels = inv.pod_labels(ns, name)
    if labels:
        meta["labels"] = dict(sorted(labels.items()))  # Go sorts map keys
    lo, hi = int(p["container_start"][i]), int(p["container_start"][i + 1])
    return {
        "metadata": meta,
        "timestamp": rfc3339(int(p["timestamp_ms"][i]) // 1000),
        "window": format_duration(int(p["window_ms"][i])),
        "containers": [
            {
                "name": str(c["name"][j]),
                "usage": {
                    "cpu": format_cpu(int(c["cpu_nanocores"][j])),
                    "memory": format_memory(int(c["memory_bytes"][j])),
                },
            }
            for j in range(lo, hi)
        ],
    }


def ordered(body: bytes) -> Any:
    """Parse keeping key order (as lists of pairs) so field order is compared too."""
    return json.loads(body, object_pairs_hook=list)


def as_pairs(obj: Any) -> Any:
    if isinstance(obj, dict):
        return [(k, as_pairs(v)) for k, v in obj.items()]
    if isinstance(obj, list):
        return [as_pairs(v) for v in obj]
    return obj


# ------------------------------------------------------------------------- JSON --


@pytest.mark.parametrize("api_version", ["v1beta1", "v1"])
def test_node_list_json_matches_snapshot(api_version: str) -> None:
    snap, inv = build(sample_cluster())
    idx = select("nodes", snap, inv)
    assert list(snap.nodes["name"][idx]) == ["node-a", "node-b"]
    body = encode("nodes", snap, inv, api_version=api_version)
    assert body.endswith(b"}\n")
    want = {
        "kind": "NodeMetricsList",
        "apiVersion": f"metrics.k8s.io/{api_version}",
        "metadata": {},
        "items": [expected_node(snap, inv, int(i)) for i in idx],
    }
    assert ordered(body) == as_pairs(want)
    # The store's rates: 0.25 and 0.5 CPU-seconds over 15.012 s.
    items = json.loads(body)["items"]
    assert [it["usage"]["cpu"] for it in items] == ["16653343n", "33306687n"]
    assert items[0]["window"] == "15.012s"
    assert items[0]["timestamp"] == "2024-12-24T09:34:08Z"
    assert items[0]["metadata"]["creationTimestamp"] == "2024-12-24T09:34:53Z"


@pytest.mark.parametrize("api_version", ["v1beta1", "v1"])
def test_pod_list_json_matches_snapshot(api_version: str) -> None:
    snap, inv = build(sample_cluster())
    idx = select("pods", snap, inv)
    body = encode("pods", snap, inv, api_version=api_version)
    want = {
        "kind": "PodMetricsList",
        "apiVersion": f"metrics.k8s.io/{api_version}",
        "metadata": {},
        "items": [expected_pod(snap, inv, int(i)) for i in idx],
    }
    assert ordered(body) == as_pairs(want)
    got = json.loads(body)["items"]
    # Sorted by namespace then name; containers by name; labels omitted when empty.
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in got] == [
        ("default", "idle"),
        ("default", "web-1"),
        ("kube-system", "coredns"),
        ("payments", "checkout"),
    ]
    assert "labels" not in got[0]["metadata"]
    assert got[1]["metadata"]["labels"] == {"app": "web"}
    assert [c["name"] for c in got[3]["containers"]] == ["app", "istio-proxy"]
    assert got[3]["containers"][0]["usage"] == {"cpu": "500m", "memory": "3Mi"}
    assert got[1]["containers"][0]["usage"] == {"cpu": "1", "memory": "1k"}
    assert got[0]["containers"][0]["usage"] == {"cpu": "0", "memory": "512"}


def test_single_objects_carry_kind_and_api_version() -> None:
    snap, inv = build(sample_cluster())
    i = snap.pod_index("payments", "checkout")
    assert i is not None
    body = encode_one("pods", snap, inv, "payments", "checkout", api_version="v1")
    want = {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1"}
    want.update(expected_pod(snap, inv, i))
    assert ordered(body) == as_pairs(want)
    j = snap.node_index("node-b")
    assert j is not None
    body = encode_one("nodes", snap, inv, "", "node-b")
    want = {"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1"}
    want.update(expected_node(snap, inv, j))
    assert ordered(body) == as_pairs(want)
    view = snap.view(inv)
    kw: dict[str, Any] = {"api_version": "v1", "fmt": "json", "now_s": NOW_S}
    assert view.get("pods", "default", "nope", **kw) is None
    assert view.get("pods", "nope", "checkout", **kw) is None
    assert view.get("nodes", "", "node-z", **kw) is None


def test_empty_lists_have_empty_items() -> None:
    snap, inv = build(sample_cluster())
    for kind, list_kind in (("nodes", "NodeMetricsList"), ("pods", "PodMetricsList")):
        body = encode(kind, snap, inv, labels="nothing=here")
        assert json.loads(body) == {
            "kind": list_kind,
            "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": [],
        }


TRICKY = [
    'quote " and backslash \\',
    "newline\n tab\t cr\r nul\x00 bell\x07 esc\x1b del\x7f",
    "html <script>&amp;</script>",
    "unicode é ß 中文 😀 \u2028 \u2029 \ufeff",
    "",
]


def test_label_values_are_escaped_correctly() -> None:
    snap, inv = build(sample_cluster())
    labels = {f"k{i}": v for i, v in enumerate(TRICKY)}
    labels["weird key \"'\\"] = "x"
    inv.set_pod("default", "web-1", labels)
    inv.set_node("node-a", labels)
    body = encode("pods", snap, inv, fields="metadata.name=web-1")
    assert json.loads(body)["items"][0]["metadata"]["labels"] == labels
    # Go's encoder escapes these; a raw one would be unsafe in HTML and invalid in JS.
    for raw in (b"<", b">", b"&", "\u2028".encode(), b"\x00", b"\x1b"):
        assert raw not in body
    body = encode_one("nodes", snap, inv, "", "node-a")
    assert json.loads(body)["metadata"]["labels"] == labels


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=6))
def test_any_labels_round_trip_through_json_and_protobuf(labels: dict[str, str]) -> None:
    store, inv = _SHARED
    inv.set_pod("default", "idle", labels)
    snap = store.snapshot(T0_MS + WINDOW_MS + 1000)  # a new view sees the new labels
    body = encode_one("pods", snap, inv, "default", "idle")
    assert json.loads(body)["metadata"].get("labels", {}) == labels
    obj = decode_envelope(encode_one("pods", snap, inv, "default", "idle", fmt="protobuf"))
    assert obj["labels"] == sorted(labels.items())


_SHARED = build_store(sample_cluster())


def test_creation_timestamp_is_now_and_labels_are_those_of_the_view() -> None:
    """Fragments are built once per view; the time stays per request. Labels are the
    inventory's when the view was built (a change shows in the next view); a deletion
    applies at once."""
    store, inv = build_store(sample_cluster())
    snap = store.snapshot(T0_MS + WINDOW_MS + 1000)
    first = json.loads(encode("pods", snap, inv, now_s=T0_MS / 1000 + 100))
    inv.set_pod("default", "web-1", {"app": "web", "version": "2"})
    inv.delete_pod("default", "idle")
    second = json.loads(encode("pods", snap, inv, now_s=T0_MS / 1000 + 200.999))
    assert {it["metadata"]["creationTimestamp"] for it in first["items"]} == {
        "2024-12-24T09:35:33Z"
    }
    assert {it["metadata"]["creationTimestamp"] for it in second["items"]} == {
        "2024-12-24T09:37:13Z"
    }
    names = [it["metadata"]["name"] for it in second["items"]]
    assert names == ["web-1", "coredns", "checkout"], "deleted: gone at once"
    assert second["items"][0]["metadata"]["labels"] == {"app": "web"}, "labels of the view"
    for a, b in zip(first["items"][1:], second["items"], strict=True):
        assert a["containers"] == b["containers"] and a["timestamp"] == b["timestamp"]
    assert (
        snap.view(inv).get("pods", "default", "idle", api_version="v1", fmt="json", now_s=0) is None
    )
    later = store.snapshot(T0_MS + WINDOW_MS + 2000)
    third = json.loads(encode("pods", later, inv))
    assert third["items"][0]["metadata"]["labels"] == {"app": "web", "version": "2"}
    assert [it["metadata"]["name"] for it in third["items"]] == names


def test_a_new_snapshot_has_its_own_view() -> None:
    cluster = sample_cluster()
    snap1, inv = build(cluster)
    body1 = json.loads(encode("pods", snap1, inv, fields="metadata.name=idle"))
    cluster["node-a"][1].containers[0].cpu_rate = 2.0  # default/idle
    snap2, _ = build(cluster)
    body2 = json.loads(encode("pods", snap2, inv, fields="metadata.name=idle"))
    assert body1["items"][0]["containers"][0]["usage"]["cpu"] == "0"
    assert body2["items"][0]["containers"][0]["usage"]["cpu"] == "2"
    # and the old snapshot still renders its own values
    assert json.loads(encode("pods", snap1, inv, fields="metadata.name=idle")) == body1
    # one view per snapshot and inventory: the same data on every call
    assert snap1.view(inv).heap_bytes() == snap1.view(inv).heap_bytes() > 0
    other = _native.Inventory()
    assert json.loads(encode("pods", snap1, other))["items"] == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_version": "v2"}, "api_version"),
        ({"fmt": "yaml"}, "fmt"),
        ({"table_version": "v2"}, "table_version"),
        ({"now_s": float("nan")}, "now_s"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs: dict[str, Any], message: str) -> None:
    snap, inv = build(sample_cluster())
    args: dict[str, Any] = {"api_version": "v1", "fmt": "json", "now_s": NOW_S}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        snap.view(inv).query("pods").respond(**args)
    with pytest.raises(ValueError, match=message):
        snap.view(inv).get("pods", "default", "idle", **args)


def test_bad_kinds_are_value_errors() -> None:
    snap, inv = build(sample_cluster())
    with pytest.raises(ValueError, match="kind"):
        snap.view(inv).query("services")
    with pytest.raises(ValueError, match="kind"):
        snap.view(inv).get("services", "", "x", api_version="v1", fmt="json", now_s=NOW_S)


# --------------------------------------------------------------------- protobuf --


def one(fs: list[tuple[int, int | bytes]], num: int) -> Any:
    vals = [v for n, v in fs if n == num]
    assert len(vals) == 1, (num, fs)
    return vals[0]


def many(fs: list[tuple[int, int | bytes]], num: int) -> list[Any]:
    return [v for n, v in fs if n == num]


def int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_time(b: bytes) -> int:
    fs = fields(b)
    assert all(n in (1, 2) for n, _ in fs)
    return int64(one(fs, 1)) if many(fs, 1) else 0


def decode_usage(entries: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for e in entries:
        fs = fields(e)
        out.append((one(fs, 1).decode(), one(fields(one(fs, 2)), 1).decode()))
    return out


def decode_item(b: bytes, kind: str) -> dict[str, Any]:
    fs = fields(b)
    meta = fields(one(fs, 1))
    item: dict[str, Any] = {
        "name": one(meta, 1).decode(),
        "namespace": one(meta, 3).decode() if many(meta, 3) else None,
        "creation": decode_time(one(meta, 8)),
        "labels": [
            (one(fields(e), 1).decode(), one(fields(e), 2).decode()) for e in many(meta, 11)
        ],
        "timestamp": decode_time(one(fs, 2)),
        "window_ns": int64(one(fields(one(fs, 3)), 1)),
    }
    if kind in ("NodeMetrics", "NodeMetricsList"):
        item["usage"] = decode_usage(many(fs, 4))
    else:
        item["containers"] = [
            (one(fields(c), 1).decode(), decode_usage(many(fields(c), 2))) for c in many(fs, 4)
        ]
    return item


def decode_envelope(body: bytes) -> Any:
    assert body[:4] == b"k8s\x00"
    unknown = fields(body[4:])
    assert [n for n, _ in unknown] == [1, 2, 3, 4]
    type_meta = fields(one(unknown, 1))
    api_version, kind = one(type_meta, 1).decode(), one(type_meta, 2).decode()
    assert one(unknown, 3) == b"" and one(unknown, 4) == b""
    raw = one(unknown, 2)
    if kind.endswith("List"):
        lst = fields(raw)
        assert one(lst, 1) == b""  # empty ListMeta
        return {
            "apiVersion": api_version,
            "kind": kind,
            "items": [decode_item(x, kind) for x in many(lst, 2)],
        }
    return {"apiVersion": api_version, "kind": kind, **decode_item(raw, kind)}


def json_as_proto_view(item: dict[str, Any], snap_window_ms: int) -> dict[str, Any]:
    """What the decoded protobuf must equal, derived from the JSON item."""

    def secs(s: str) -> int:
        return int(datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())

    meta = item["metadata"]
    view: dict[str, Any] = {
        "name": meta["name"],
        "namespace": meta.get("namespace"),
        "creation": secs(meta["creationTimestamp"]),
        "labels": sorted(meta.get("labels", {}).items()),
        "timestamp": secs(item["timestamp"]),
        "window_ns": snap_window_ms * 1_000_000,
    }
    if "usage" in item:
        view["usage"] = sorted(item["usage"].items())
    else:
        view["containers"] = [(c["name"], sorted(c["usage"].items())) for c in item["containers"]]
    return view


@pytest.mark.parametrize("api_version", ["v1beta1", "v1"])
def test_protobuf_lists_decode_to_the_json(api_version: str) -> None:
    snap, inv = build(sample_cluster())
    for kind, windows in (("pods", snap.pods["window_ms"]), ("nodes", snap.nodes["window_ms"])):
        idx = select(kind, snap, inv)
        pb = decode_envelope(encode(kind, snap, inv, fmt="protobuf", api_version=api_version))
        js = json.loads(encode(kind, snap, inv, api_version=api_version))
        assert pb["apiVersion"] == js["apiVersion"] == f"metrics.k8s.io/{api_version}"
        assert pb["kind"] == js["kind"]
        assert pb["items"] == [
            json_as_proto_view(it, int(windows[i])) for it, i in zip(js["items"], idx, strict=True)
        ]
        assert len(pb["items"]) == len(idx) > 0


def test_protobuf_single_objects_decode_to_the_json() -> None:
    snap, inv = build(sample_cluster())
    i = snap.pod_index("payments", "checkout")
    assert i is not None
    pb = decode_envelope(encode_one("pods", snap, inv, "payments", "checkout", fmt="protobuf"))
    js = json.loads(encode_one("pods", snap, inv, "payments", "checkout"))
    assert pb["kind"] == "PodMetrics"
    pb.pop("apiVersion"), pb.pop("kind")
    assert pb == json_as_proto_view(js, int(snap.pods["window_ms"][i]))
    assert pb["labels"] == [("app", "checkout"), ("tier", "web")]


def test_protobuf_empty_list() -> None:
    snap, inv = build(sample_cluster())
    body = encode("pods", snap, inv, namespace="nowhere", fmt="protobuf")
    assert decode_envelope(body) == {
        "apiVersion": "metrics.k8s.io/v1beta1",
        "kind": "PodMetricsList",
        "items": [],
    }


# ------------------------------------------------------------------------ Table --


def test_pod_table_sums_containers_and_carries_partial_metadata() -> None:
    snap, inv = build(sample_cluster())
    idx = select("pods", snap, inv)
    table = json.loads(encode("pods", snap, inv, fmt="table"))
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {}
    assert table["columnDefinitions"] == [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name of the resource",
            "priority": 0,
        },
        {"name": "cpu", "type": "string", "format": "quantity", "description": "", "priority": 0},
        {
            "name": "memory",
            "type": "string",
            "format": "quantity",
            "description": "",
            "priority": 0,
        },
        {
            "name": "Window",
            "type": "string",
            "format": "duration",
            "description": "",
            "priority": 0,
        },
    ]
    c = snap.containers
    for row, i in zip(table["rows"], idx, strict=True):
        lo, hi = snap.pods["container_start"][i], snap.pods["container_start"][i + 1]
        assert row["cells"] == [
            snap.pods["name"][i],
            format_cpu(int(c["cpu_nanocores"][lo:hi].sum())),
            format_memory(int(c["memory_bytes"][lo:hi].sum())),
            format_duration(int(snap.pods["window_ms"][i])),
        ]
        obj = row["object"]
        assert obj["kind"] == "PartialObjectMetadata"
        assert obj["apiVersion"] == "meta.k8s.io/v1"
        assert obj["metadata"] == expected_pod(snap, inv, int(i))["metadata"]
    checkout = table["rows"][3]["cells"]
    # 500m + 20u, 3Mi + 1536 bytes
    assert checkout[:3] == ["checkout", "500020u", "3147264"]
    # meta.k8s.io/v1beta1: the same Table under another apiVersion, row objects included
    beta = encode("pods", snap, inv, fmt="table", table_version="v1beta1")
    assert beta.replace(b"meta.k8s.io/v1beta1", b"meta.k8s.io/v1") == encode(
        "pods", snap, inv, fmt="table"
    )
    assert b'"meta.k8s.io/v1"' not in beta


def test_node_table() -> None:
    snap, inv = build(sample_cluster())
    j = snap.node_index("node-b")
    assert j is not None
    table = json.loads(encode_one("nodes", snap, inv, "", "node-b", fmt="table"))
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "cpu", "memory", "Window"]
    (row,) = table["rows"]
    want = expected_node(snap, inv, int(j))
    assert row["cells"] == [
        "node-b",
        want["usage"]["cpu"],
        want["usage"]["memory"],
        want["window"],
    ]
    assert row["object"]["metadata"] == want["metadata"]
    empty = json.loads(encode("nodes", snap, inv, labels="none=here", fmt="table"))
    assert empty["rows"] == [] and len(empty["columnDefinitions"]) == 4


# ------------------------------------------------------------------- threading --


def test_concurrent_encoding_view_building_and_inventory_updates() -> None:
    """Views are built and read without the GIL while discovery mutates the inventory."""
    store, inv = build_store(sample_cluster())
    errors: list[BaseException] = []
    stop = threading.Event()

    def churn() -> None:
        k = 0
        while not stop.is_set():
            inv.set_pod("default", "web-1", {"app": "web", "gen": str(k)})
            inv.delete_pod("default", "idle")
            inv.set_pod("default", "idle", {})
            k += 1

    def reader() -> None:
        try:
            for k in range(100):
                snap = store.snapshot(T0_MS + WINDOW_MS + 1000 + k)
                for fmt in ("json", "protobuf", "table"):
                    # (no second read to compare: the churn deletes pods in between)
                    body = encode("pods", snap, inv, fmt=fmt, check_whole=False)
                    if fmt != "protobuf":
                        json.loads(body)
                    else:
                        decode_envelope(body)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=churn)
    readers = [threading.Thread(target=reader) for _ in range(2)]
    t.start()
    for r in readers:
        r.start()
    for r in readers:
        r.join(timeout=120)
    stop.set()
    t.join(timeout=30)
    assert not errors, errors


def big_cluster() -> dict[str, list[Pod]]:
    return {
        f"node-{n:02d}": [
            Pod(
                f"ns-{k % 5}",
                f"pod-{n:02d}-{k:03d}",
                [Container("c", 1.0, 0.01 * (k % 7), 4096 * (k + 1))],
                {"app": f"a{k % 4}"},
            )
            for k in range(100)
        ]
        for n in range(30)
    }


def test_large_lists_read_in_chunks_equal_the_items_one_by_one() -> None:
    snap, inv = build(big_cluster())
    idx = select("pods", snap, inv)
    assert len(idx) == 3000
    view = snap.view(inv)
    for fmt in ("json", "protobuf"):
        body = view.query("pods").respond(api_version="v1beta1", fmt=fmt, now_s=NOW_S)
        assert body.length > 200_000 and body.items == 3000 and not body.gzip
        chunks = []
        while chunk := body.read():
            chunks.append(chunk)
        assert len(chunks) > 2 and max(len(c) for c in chunks) < 200 * 1024
        whole = b"".join(chunks)
        assert len(whole) == body.length and body.read() == b""

        def one(i: int, fmt: str = fmt) -> bytes:
            ns, name = str(snap.pods["namespace"][i]), str(snap.pods["name"][i])
            return encode("pods", snap, inv, namespace=ns, fields=f"metadata.name={name}", fmt=fmt)

        if fmt == "json":
            items = json.loads(whole)["items"]
            assert items == [json.loads(one(i))["items"][0] for i in idx]
            assert items[17] == expected_pod(snap, inv, int(idx[17]))
        else:
            assert decode_envelope(whole)["items"] == [
                decode_envelope(one(i))["items"][0] for i in idx
            ]
    assert list(body.timestamps_ms()) == list(snap.pods["timestamp_ms"][idx])


@pytest.mark.parametrize("fmt", ["json", "protobuf", "table", "table-object", "table-none"])
def test_gzip_bodies_decode_to_exactly_the_plain_bytes(fmt: str) -> None:
    snap, inv = build(big_cluster())
    view = snap.view(inv)
    kw: dict[str, Any] = {"api_version": "v1", "fmt": fmt, "now_s": NOW_S}
    plain = view.query("pods").respond(**kw).read_all()
    body = view.query("pods").respond(gzip=True, **kw)
    assert body.gzip and body.length == len(plain) > 128 * 1024
    chunks = []
    while chunk := body.read():
        chunks.append(chunk)
    compressed = b"".join(chunks)
    assert gzip.decompress(compressed) == plain
    assert len(compressed) < len(plain) / 4
    # Under the 128 KiB threshold the body is sent as it is, even when gzip is accepted.
    small = view.query("pods", "ns-1", "app=a1").respond(gzip=True, **kw)
    assert not small.gzip and small.length < 128 * 1024
    assert small.read_all() == view.query("pods", "ns-1", "app=a1").respond(**kw).read_all()


def test_equal_snapshots_have_equal_bodies() -> None:
    snap, inv = build(sample_cluster())
    other, _ = build(sample_cluster())
    for fmt in ("protobuf", "json", "table"):
        assert encode("pods", snap, inv, fmt=fmt) == encode("pods", other, inv, fmt=fmt)
