"""Label and field selectors (Kubernetes syntax and messages) and the selection of servable
nodes and pods through a snapshot's view: only objects in both the inventory and the snapshot,
sorted; the label index agreeing with a plain scan on random clusters and selectors."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemetrics import _native
from kubemetrics._native._testing import select_scan
from tests.helpers.snapshots import Container, Pod, build

LABELS = {"app": "web", "tier": "front", "n": "5", "empty": "", "example.com/role": "db"}


def cluster() -> dict[str, list[Pod]]:
    def pod(ns: str, name: str, labels: dict[str, str]) -> Pod:
        return Pod(ns, name, [Container("c", 1.0, 0.1, 4096)], labels)

    return {
        "node-1": [
            pod("default", "a", LABELS),
            pod("default", "b", {"app": "db"}),
            pod("kube-system", "dns", {"k8s-app": "kube-dns"}),
        ],
        "node-2": [
            pod("default", "c", {"app": "web", "tier": "back"}),
            pod("monitoring", "a", {}),
        ],
        "node-3": [pod("zeta", "z", {"app": "web"})],
    }


@pytest.fixture(scope="module")
def env() -> tuple[_native.Snapshot, _native.Inventory]:
    return build(cluster())


def selected(
    view: _native.View, kind: str, namespace: str | None, labels: str, fields: str
) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The view's indexed selection, checked against the plain scan."""
    idx = view.query(kind, namespace, labels, fields).select()
    assert idx.dtype == np.int64
    assert list(idx) == list(select_scan(view, kind, namespace, labels, fields))
    return idx


def pods(
    env: tuple[_native.Snapshot, _native.Inventory],
    namespace: str | None = None,
    labels: str = "",
    fields: str = "",
) -> list[str]:
    snap, inv = env
    idx = selected(snap.view(inv), "pods", namespace, labels, fields)
    return [f"{snap.pods['namespace'][i]}/{snap.pods['name'][i]}" for i in idx]


def nodes(env: tuple[_native.Snapshot, _native.Inventory], labels: str, fields: str) -> list[str]:
    snap, inv = env
    idx = selected(snap.view(inv), "nodes", None, labels, fields)
    return [str(snap.nodes["name"][i]) for i in idx]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app = web", True),
        ("app!=db", True),
        ("app in (web, db)", True),
        ("app notin (db)", True),
        ("missing notin (x)", True),
        ("missing!=x", True),
        ("app", True),
        ("!missing", True),
        ("app=web,tier=front", True),
        ("  app in (web),tier,!missing  ", True),
        ("empty=", True),
        ("empty in ()", True),
        ("empty in (,x)", True),
        ("example.com/role=db", True),
        ("n>4", True),
        ("n<6", True),
        ("app=db", False),
        ("app!=web", False),
        ("app in (db)", False),
        ("app notin (web)", False),
        ("missing", False),
        ("!app", False),
        ("app=web,tier=back", False),
        ("n>5", False),
        ("app>1", False),
        ("missing in (x)", False),
        ("empty=x", False),
    ],
)
def test_label_selector_semantics(
    env: tuple[_native.Snapshot, _native.Inventory], selector: str, matches: bool
) -> None:
    got = pods(env, "default", selector, "metadata.name=a")
    assert got == (["default/a"] if matches else [])


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("=x", "found '=', expected: !, identifier, or 'end of string'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a,", "found '', expected: identifier after ','"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        (
            "a>x",
            'unable to parse requirement: values[0]: Invalid value: "x": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            "a%b=c",
            'unable to parse requirement: <nil>: Invalid value: "a%b": name part must consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
        (
            "a=b$",
            'unable to parse requirement: values[0][a]: Invalid value: "b$": a valid label must '
            "be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ),
    ],
)
def test_malformed_label_selectors(
    env: tuple[_native.Snapshot, _native.Inventory], selector: str, message: str
) -> None:
    snap, inv = env
    for call in (
        lambda: snap.view(inv).query("pods", None, selector, ""),
        lambda: snap.view(inv).query("nodes", None, selector, ""),
        lambda: _native.parse_label_selector(selector),
    ):
        with pytest.raises(_native.SelectorError) as e:
            call()
        assert str(e.value) == message
    assert issubclass(_native.SelectorError, ValueError)


def test_label_keys_and_values_are_validated(
    env: tuple[_native.Snapshot, _native.Inventory],
) -> None:
    snap, inv = env
    for bad in ("a=" + "v" * 64, "Bad_Prefix/x=1", "a/b/c", "/x", "x/", "-a=1", "a=-b"):
        with pytest.raises(_native.SelectorError):
            snap.view(inv).query("pods", None, bad, "")
    for good in ("a=" + "v" * 63, "k8s.io/x=1", "a.b_c-d=E.f_G-1", "x in (in, notin)"):
        snap.view(inv).query("pods", None, good, "")


def test_pod_field_selectors(env: tuple[_native.Snapshot, _native.Inventory]) -> None:
    assert pods(env, None, "", "metadata.name=a") == ["default/a", "monitoring/a"]
    assert pods(env, None, "", "metadata.name==a,metadata.namespace=monitoring") == ["monitoring/a"]
    assert pods(env, None, "", "metadata.namespace!=default") == [
        "kube-system/dns",
        "monitoring/a",
        "zeta/z",
    ]
    assert pods(env, None, "", "spec.nodeName=node-2") == ["default/c", "monitoring/a"]
    assert pods(env, None, "app=web", "spec.nodeName!=node-2") == ["default/a", "zeta/z"]
    assert pods(env, "default", "", "metadata.namespace=default") == [
        "default/a",
        "default/b",
        "default/c",
    ]
    assert pods(env, "default", "", "metadata.namespace=zeta") == []
    assert pods(env, "nope", "", "") == []


def test_node_selectors(env: tuple[_native.Snapshot, _native.Inventory]) -> None:
    assert nodes(env, "", "") == ["node-1", "node-2", "node-3"]
    assert nodes(env, "node=node-2", "") == ["node-2"]
    assert nodes(env, "node in (node-1,node-3),kubernetes.io/role=worker", "") == [
        "node-1",
        "node-3",
    ]
    assert nodes(env, "", "metadata.name=node-3") == ["node-3"]
    assert nodes(env, "", "metadata.name!=node-3") == ["node-1", "node-2"]
    # Nodes have no namespace: it reads as "".
    assert nodes(env, "", "metadata.namespace=") == ["node-1", "node-2", "node-3"]
    assert nodes(env, "", "metadata.namespace=default") == []


@pytest.mark.parametrize(
    ("kind", "selector", "message"),
    [
        (
            "nodes",
            "foo=bar",
            '"foo" is not a known field selector: only "metadata.name", "metadata.namespace"',
        ),
        (
            "nodes",
            "spec.nodeName=x",
            '"spec.nodeName" is not a known field selector: only "metadata.name", '
            '"metadata.namespace"',
        ),
        (
            "pods",
            "status.phase=Running",
            '"status.phase" is not a known field selector: only "metadata.name", '
            '"metadata.namespace", "spec.nodeName"',
        ),
        (
            "pods",
            "metadata.name",
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
        ),
        ("pods", "metadata.name=a\\x", "invalid field selector: invalid escape sequence: \\x"),
        ("pods", "metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
    ],
)
def test_bad_field_selectors(
    env: tuple[_native.Snapshot, _native.Inventory], kind: str, selector: str, message: str
) -> None:
    snap, inv = env
    with pytest.raises(_native.SelectorError) as e:
        snap.view(inv).query(kind, None, "", selector)
    assert str(e.value) == message


def test_selection_is_the_intersection_of_inventory_and_snapshot() -> None:
    snap, inv = build(cluster())
    inv.delete_pod("default", "b")  # has metrics, no longer Running
    inv.set_pod("default", "ghost", {"app": "web"})  # Running, no metrics yet
    inv.delete_node("node-2")
    inv.set_node("node-9", {})
    assert pods((snap, inv), None, "", "") == [
        "default/a",
        "default/c",
        "kube-system/dns",
        "monitoring/a",
        "zeta/z",
    ]
    assert pods((snap, inv), "default", "app=web", "") == ["default/a", "default/c"]
    assert nodes((snap, inv), "", "") == ["node-1", "node-3"]
    empty = _native.Inventory()
    assert len(snap.view(empty).query("pods").select()) == 0
    assert len(snap.view(empty).query("nodes").select()) == 0


def test_deletions_apply_at_once_additions_and_labels_with_the_next_view() -> None:
    snap, inv = build(cluster())
    view = snap.view(inv)
    assert pods((snap, inv), "default") == ["default/a", "default/b", "default/c"]
    inv.delete_pod("default", "b")
    inv.set_pod("default", "c", {"app": "changed"})
    inv.delete_node("node-2")
    assert snap.view(inv) is not view  # a new handle...
    assert pods((snap, inv), "default") == ["default/a", "default/c"]  # ...on the same view
    assert pods((snap, inv), "default", "app=web") == ["default/a", "default/c"]
    assert pods((snap, inv), "default", "app=changed") == []
    assert nodes((snap, inv), "", "") == ["node-1", "node-3"]
    inv.set_pod("default", "b", {"app": "db"})  # back: a new member, for the next view
    assert pods((snap, inv), "default") == ["default/a", "default/c"]
    snap2, _ = build(cluster())
    assert pods((snap2, inv), "default", "app=changed") == ["default/c"]
    assert pods((snap2, inv), "default") == ["default/a", "default/b", "default/c"]


def test_inventory_bookkeeping() -> None:
    inv = _native.Inventory()
    inv.set_node("n", {"a": "b"})
    inv.set_pod("ns", "p", {"x": "y"})
    inv.set_pod("ns", "q", {})
    inv.set_pod("ns", "q", {"z": "1"})
    assert (inv.node_count(), inv.pod_count()) == (1, 2)
    assert inv.has_node("n") and not inv.has_node("m")
    assert inv.has_pod("ns", "q") and not inv.has_pod("other", "q")
    assert inv.pod_labels("ns", "q") == {"z": "1"}
    assert inv.node_labels("m") is None
    inv.delete_pod("ns", "p")
    inv.delete_pod("ns", "p")  # deleting twice is harmless
    assert inv.pod_count() == 1
    inv.clear_pods()
    assert (inv.node_count(), inv.pod_count()) == (1, 0)
    inv.clear()
    assert (inv.node_count(), inv.pod_count()) == (0, 0)
    assert repr(inv) == "Inventory(nodes=0, pods=0)"
    with pytest.raises(TypeError):
        inv.set_pod("ns", "p", {"k": 1})  # type: ignore[dict-item]


TOKENS = ["a", "b", "app", "in", "notin", "(", ")", ",", "=", "==", "!=", "!", ">", "<", " ", "1"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=12), st.text(max_size=12))
def test_any_selector_is_an_answer_or_a_selector_error(tokens: list[str], junk: str) -> None:
    snap, inv = _ENV
    for text in ("".join(tokens), junk, "".join(tokens) + junk):
        for label, field in ((text, ""), ("", text)):
            for kind in ("pods", "nodes"):
                try:
                    idx = selected(snap.view(inv), kind, None, label, field)
                except _native.SelectorError:
                    continue
                assert list(idx) == sorted(idx)


_ENV = build(cluster())


def test_results_are_sorted_across_namespaces_and_nodes() -> None:
    big: dict[str, list[Pod]] = {}
    names = [f"p{i:03d}" for i in range(40)]
    for k, (ns, name) in enumerate(itertools.product(["b", "a", "c"], reversed(names))):
        big.setdefault(f"node-{k % 7}", []).append(
            Pod(ns, name, [Container("c", 1.0, 0.0, 1)], {"i": str(k % 3)})
        )
    snap, inv = build(big)
    got = pods((snap, inv), None, "i in (0,2)", "")
    keys = [tuple(x.split("/")) for x in got]
    assert keys == sorted(keys) and len(keys) == 80


def test_selector_parsers() -> None:
    assert _native.parse_label_selector("b in (y,x,y), a, !c, d!=1, e>3") == [
        ("a", "exists", []),
        ("b", "in", ["x", "y"]),
        ("c", "!", []),
        ("d", "!=", ["1"]),
        ("e", "gt", ["3"]),
    ]
    assert _native.parse_label_selector("") == []
    assert _native.parse_field_selector("metadata.uid=x,metadata.name==a\\,b,spec.x!=y") == [
        ("metadata.name", "=", "a,b"),
        ("metadata.uid", "=", "x"),
        ("spec.x", "!=", "y"),
    ]
    with pytest.raises(_native.SelectorError, match="can't understand"):
        _native.parse_field_selector("nonsense")


KEYS = ["a", "b", "c"]
VALUES = ["x", "y", "z", "1", "10", ""]
NAMESPACES = ["ns0", "ns1", "ns2"]


@st.composite
def label_selectors(draw: st.DrawFn) -> str:
    terms = []
    for _ in range(draw(st.integers(0, 3))):
        k, v = draw(st.sampled_from(KEYS)), draw(st.sampled_from(VALUES))
        vs = ",".join(draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3)))
        terms.append(
            draw(
                st.sampled_from(
                    [f"{k}={v}", f"{k}!={v}", f"{k} in ({vs})", f"{k} notin ({vs})", k, f"!{k}"]
                    + ([f"{k}>{v}", f"{k}<{v}"] if v.isdigit() else [])
                )
            )
        )
    return ",".join(terms)


@st.composite
def field_selectors(draw: st.DrawFn) -> str:
    terms = []
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["=", "!="]))
        terms.append(
            draw(
                st.sampled_from(
                    [
                        f"metadata.name{op}p{draw(st.integers(0, 5))}",
                        f"metadata.namespace{op}{draw(st.sampled_from(NAMESPACES))}",
                        f"spec.nodeName{op}node-{draw(st.integers(0, 3))}",
                    ]
                )
            )
        )
    return ",".join(terms)


labels_maps = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(NAMESPACES), st.integers(0, 5), st.integers(0, 3), labels_maps),
        max_size=30,
        unique_by=lambda t: (t[0], t[1]),
    ),
    st.lists(
        st.tuples(label_selectors(), field_selectors(), st.booleans()), min_size=1, max_size=8
    ),
    st.sets(st.integers(0, 29), max_size=5),
)
def test_indexed_selection_equals_a_plain_scan(
    rows: list[tuple[str, int, int, dict[str, str]]],
    queries: list[tuple[str, str, bool]],
    deleted: set[int],
) -> None:
    cluster: dict[str, list[Pod]] = {f"node-{n}": [] for n in range(4)}
    for ns, p, n, labels in rows:
        cluster[f"node-{n}"].append(Pod(ns, f"p{p}", [Container("c", 1.0, 0.1, 1)], labels))
    snap, inv = build(cluster)
    view = snap.view(inv)
    for k in deleted:  # members deleted after the build: gone at once, index or not
        if k < len(rows):
            inv.delete_pod(rows[k][0], f"p{rows[k][1]}")
    for labels, fields, namespaced in queries:
        namespace = NAMESPACES[len(labels) % 3] if namespaced else None
        got = selected(view, "pods", namespace, labels, fields)
        for i in got:
            key = (str(snap.pods["namespace"][i]), int(str(snap.pods["name"][i])[1:]))
            assert key not in {(rows[k][0], rows[k][1]) for k in deleted if k < len(rows)}
