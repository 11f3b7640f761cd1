"""Response encoders: JSON shapes of SPEC §4, protobuf decoded by hand and compared with the
JSON, the server-side Table, and the per-snapshot fragment cache staying correct.

Snapshots come from the real store fed kubelet text, so the encoders are checked against
the store's columns (the truth they must render) and the inventory's labels.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemetrics import _native
from kubemetrics_sim.protowire import fields
from tests.helpers.snapshots import T0_MS, Container, Pod, build, sample_cluster

NOW_S = T0_MS / 1000 + 60.7  # creationTimestamp is the response time, whole seconds


def rfc3339(seconds: int | float) -> str:
    return datetime.fromtimestamp(math.floor(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(
    kind: str,
    snap: _native.Snapshot,
    inv: _native.Inventory,
    idx: Sequence[int] | np.ndarray[Any, Any],
    *,
    fmt: str = "json",
    single: bool = False,
    api_version: str = "v1beta1",
    now_s: float = NOW_S,
) -> bytes:
    fn = _native.encode_nodes if kind == "nodes" else _native.encode_pods
    return fn(
        snap,
        inv,
        np.asarray(idx, dtype=np.int64),
        api_version=api_version,
        fmt=fmt,
        single=single,
        now_s=now_s,
    )


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
        "window": _native.format_duration(int(n["window_ms"][i])),
        "usage": {
            "cpu": _native.format_cpu(int(n["cpu_nanocores"][i])),
            "memory": _native.format_memory(int(n["memory_bytes"][i])),
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
        "window": _native.format_duration(int(p["window_ms"][i])),
        "containers": [
            {
                "name": str(c["name"][j]),
                "usage": {
                    "cpu": _native.format_cpu(int(c["cpu_nanocores"][j])),
                    "memory": _native.format_memory(int(c["memory_bytes"][j])),
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
    idx = _native.select_nodes(snap, inv, "", "")
    assert list(snap.nodes["name"][idx]) == ["node-a", "node-b"]
    body = encode("nodes", snap, inv, idx, api_version=api_version)
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
    idx = _native.select_pods(snap, inv, None, "", "")
    body = encode("pods", snap, inv, idx, api_version=api_version)
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
    body = encode("pods", snap, inv, [i], single=True, api_version="v1")
    want = {"kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1"}
    want.update(expected_pod(snap, inv, i))
    assert ordered(body) == as_pairs(want)
    j = snap.node_index("node-b")
    assert j is not None
    body = encode("nodes", snap, inv, [j], single=True)
    want = {"kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1"}
    want.update(expected_node(snap, inv, j))
    assert ordered(body) == as_pairs(want)


def test_empty_lists_have_empty_items() -> None:
    snap, inv = build(sample_cluster())
    for kind, list_kind in (("nodes", "NodeMetricsList"), ("pods", "PodMetricsList")):
        body = encode(kind, snap, inv, [])
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
    i = snap.pod_index("default", "web-1")
    body = encode("pods", snap, inv, [i])
    assert json.loads(body)["items"][0]["metadata"]["labels"] == labels
    # Go's encoder escapes these; a raw one would be unsafe in HTML and invalid in JS.
    for raw in (b"<", b">", b"&", "\u2028".encode(), b"\x00", b"\x1b"):
        assert raw not in body
    body = encode("nodes", snap, inv, [0], single=True)
    assert json.loads(body)["metadata"]["labels"] == labels


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=6))
def test_any_labels_round_trip_through_json_and_protobuf(labels: dict[str, str]) -> None:
    snap, inv = _SHARED
    inv.set_pod("default", "idle", labels)
    i = snap.pod_index("default", "idle")
    body = encode("pods", snap, inv, [i], single=True)
    assert json.loads(body)["metadata"].get("labels", {}) == labels
    obj = decode_envelope(encode("pods", snap, inv, [i], single=True, fmt="protobuf"))
    assert obj["labels"] == sorted(labels.items())


_SHARED = build(sample_cluster())


def test_creation_timestamp_is_now_and_labels_follow_the_inventory() -> None:
    """Fragments are cached per snapshot; now and labels must still be per request."""
    snap, inv = build(sample_cluster())
    idx = _native.select_pods(snap, inv, None, "", "")
    first = json.loads(encode("pods", snap, inv, idx, now_s=T0_MS / 1000 + 100))
    inv.set_pod("default", "web-1", {"app": "web", "version": "2"})
    inv.delete_pod("default", "idle")  # still encodable by index: no labels then
    second = json.loads(encode("pods", snap, inv, idx, now_s=T0_MS / 1000 + 200.999))
    assert {it["metadata"]["creationTimestamp"] for it in first["items"]} == {
        "2024-12-24T09:35:33Z"
    }
    assert {it["metadata"]["creationTimestamp"] for it in second["items"]} == {
        "2024-12-24T09:37:13Z"
    }
    assert second["items"][1]["metadata"]["labels"] == {"app": "web", "version": "2"}
    assert "labels" not in second["items"][0]["metadata"]
    for a, b in zip(first["items"], second["items"], strict=True):
        assert a["containers"] == b["containers"] and a["timestamp"] == b["timestamp"]


def test_a_new_snapshot_is_not_served_from_the_old_cache() -> None:
    cluster = sample_cluster()
    snap1, inv = build(cluster)
    body1 = json.loads(encode("pods", snap1, inv, [0]))
    cluster["node-a"][1].containers[0].cpu_rate = 2.0  # default/idle, index 0
    snap2, _ = build(cluster)
    body2 = json.loads(encode("pods", snap2, inv, [0]))
    assert body1["items"][0]["containers"][0]["usage"]["cpu"] == "0"
    assert body2["items"][0]["containers"][0]["usage"]["cpu"] == "2"
    # and the old snapshot still renders its own values
    assert json.loads(encode("pods", snap1, inv, [0])) == body1


def test_indices_may_be_any_sequence_in_any_order() -> None:
    snap, inv = build(sample_cluster())
    a = json.loads(encode("pods", snap, inv, [3, 0, 3]))
    names = [it["metadata"]["name"] for it in a["items"]]
    assert names == ["checkout", "idle", "checkout"]
    b = _native.encode_pods(
        snap, inv, [3, 0, 3], api_version="v1beta1", fmt="json", single=False, now_s=NOW_S
    )
    assert json.loads(b) == a


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"api_version": "v2"}, "api_version"),
        ({"fmt": "yaml"}, "fmt"),
        ({"single": True}, "exactly one index"),
        ({"now_s": float("nan")}, "now_s"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs: dict[str, Any], message: str) -> None:
    snap, inv = build(sample_cluster())
    args: dict[str, Any] = {"api_version": "v1", "fmt": "json", "single": False, "now_s": NOW_S}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        _native.encode_pods(snap, inv, np.array([0, 1], dtype=np.int64), **args)


@pytest.mark.parametrize("bad", [[4], [-1], [0, 99], [2**40]])
def test_out_of_range_indices_are_value_errors(bad: list[int]) -> None:
    snap, inv = build(sample_cluster())
    with pytest.raises(ValueError, match="out of range"):
        encode("pods", snap, inv, bad)
    with pytest.raises(ValueError, match="out of range"):
        encode("nodes", snap, inv, [i + 2 if i >= 0 else i for i in bad])


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
    for kind, idx, windows in (
        ("pods", _native.select_pods(snap, inv, None, "", ""), snap.pods["window_ms"]),
        ("nodes", _native.select_nodes(snap, inv, "", ""), snap.nodes["window_ms"]),
    ):
        pb = decode_envelope(encode(kind, snap, inv, idx, fmt="protobuf", api_version=api_version))
        js = json.loads(encode(kind, snap, inv, idx, api_version=api_version))
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
    pb = decode_envelope(encode("pods", snap, inv, [i], fmt="protobuf", single=True))
    js = json.loads(encode("pods", snap, inv, [i], single=True))
    assert pb["kind"] == "PodMetrics"
    pb.pop("apiVersion"), pb.pop("kind")
    assert pb == json_as_proto_view(js, int(snap.pods["window_ms"][i]))
    assert pb["labels"] == [("app", "checkout"), ("tier", "web")]


def test_protobuf_empty_list() -> None:
    snap, inv = build(sample_cluster())
    body = encode("pods", snap, inv, [], fmt="protobuf")
    assert decode_envelope(body) == {
        "apiVersion": "metrics.k8s.io/v1beta1",
        "kind": "PodMetricsList",
        "items": [],
    }


# ------------------------------------------------------------------------ Table --


def test_pod_table_sums_containers_and_carries_partial_metadata() -> None:
    snap, inv = build(sample_cluster())
    idx = _native.select_pods(snap, inv, None, "", "")
    table = json.loads(encode("pods", snap, inv, idx, fmt="table"))
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
            _native.format_cpu(int(c["cpu_nanocores"][lo:hi].sum())),
            _native.format_memory(int(c["memory_bytes"][lo:hi].sum())),
            _native.format_duration(int(snap.pods["window_ms"][i])),
        ]
        obj = row["object"]
        assert obj["kind"] == "PartialObjectMetadata"
        assert obj["apiVersion"] == "meta.k8s.io/v1"
        assert obj["metadata"] == expected_pod(snap, inv, int(i))["metadata"]
    checkout = table["rows"][3]["cells"]
    # 500m + 20u, 3Mi + 1536 bytes
    assert checkout[:3] == ["checkout", "500020u", "3147264"]


def test_node_table() -> None:
    snap, inv = build(sample_cluster())
    j = snap.node_index("node-b")
    table = json.loads(encode("nodes", snap, inv, [j], fmt="table", single=True))
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
    empty = json.loads(encode("nodes", snap, inv, [], fmt="table"))
    assert empty["rows"] == [] and len(empty["columnDefinitions"]) == 4


# ------------------------------------------------------------------- threading --


def test_concurrent_encoding_and_inventory_updates() -> None:
    """Encoders run without the GIL while discovery mutates the inventory."""
    snap, inv = build(sample_cluster())
    idx = _native.select_pods(snap, inv, None, "", "")
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
            for _ in range(200):
                for fmt in ("json", "protobuf", "table"):
                    body = encode("pods", snap, inv, idx, fmt=fmt)
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


def test_large_lists_use_resolved_labels_and_follow_changes() -> None:
    """Above a few thousand items labels come from a per-snapshot resolved view; it must
    still reflect every inventory change, and match the small-list path exactly."""
    cluster = {
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
    snap, inv = build(cluster)
    idx = _native.select_pods(snap, inv, None, "", "")
    assert len(idx) == 3000
    for fmt in ("json", "protobuf"):
        whole = encode("pods", snap, inv, idx, fmt=fmt)
        # The same items one by one (lookups instead of the resolved view).
        if fmt == "json":
            items = json.loads(whole)["items"]
            assert items == [json.loads(encode("pods", snap, inv, [i]))["items"][0] for i in idx]
            assert items[17] == expected_pod(snap, inv, int(idx[17]))
        else:
            assert decode_envelope(whole)["items"] == [
                decode_envelope(encode("pods", snap, inv, [i], fmt=fmt))["items"][0] for i in idx
            ]
    ns, name = str(snap.pods["namespace"][idx[5]]), str(snap.pods["name"][idx[5]])
    inv.set_pod(ns, name, {"changed": "yes"})
    inv.delete_pod(str(snap.pods["namespace"][idx[6]]), str(snap.pods["name"][idx[6]]))
    after = _native.select_pods(snap, inv, None, "", "")
    assert len(after) == 2999 and idx[6] not in after
    items = json.loads(encode("pods", snap, inv, after))["items"]
    assert items[5]["metadata"]["labels"] == {"changed": "yes"}
    assert len(_native.select_pods(snap, inv, None, "changed=yes", "")) == 1
    a1 = [
        i
        for i in after
        if (inv.pod_labels(str(snap.pods["namespace"][i]), str(snap.pods["name"][i])) or {}).get(
            "app"
        )
        == "a1"
    ]
    assert list(_native.select_pods(snap, inv, None, "app=a1", "")) == a1
    assert 700 < len(a1) <= 750


def test_warm_cache_builds_the_same_bodies() -> None:
    snap, inv = build(sample_cluster())
    idx = _native.select_pods(snap, inv, None, "", "")
    for fmt in ("protobuf", "json", "table"):
        _native.warm_cache(snap, fmt)
    cold_snap, _ = build(sample_cluster())
    for fmt in ("protobuf", "json"):
        assert encode("pods", snap, inv, idx, fmt=fmt) == encode(
            "pods", cold_snap, inv, idx, fmt=fmt
        )
    with pytest.raises(ValueError, match="fmt"):
        _native.warm_cache(snap, "xml")
