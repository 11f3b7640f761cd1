"""Label and field selectors (Kubernetes syntax and messages) and the selection of servable
nodes and pods: only objects in both the inventory and the snapshot, sorted."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemetrics import _native
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


def pods(env: tuple[_native.Snapshot, _native.Inventory], *args: object) -> list[str]:
    snap, inv = env
    idx = _native.select_pods(snap, inv, *args)  # type: ignore[arg-type]
    assert idx.dtype == np.int64
    return [f"{snap.pods['namespace'][i]}/{snap.pods['name'][i]}" for i in idx]


def nodes(env: tuple[_native.Snapshot, _native.Inventory], *args: str) -> list[str]:
    snap, inv = env
    idx = _native.select_nodes(snap, inv, *args)
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
        lambda: _native.select_pods(snap, inv, None, selector, ""),
        lambda: _native.select_nodes(snap, inv, selector, ""),
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
            _native.select_pods(snap, inv, None, bad, "")
    for good in ("a=" + "v" * 63, "k8s.io/x=1", "a.b_c-d=E.f_G-1", "x in (in, notin)"):
        _native.select_pods(snap, inv, None, good, "")


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
        if kind == "nodes":
            _native.select_nodes(snap, inv, "", selector)
        else:
            _native.select_pods(snap, inv, None, "", selector)
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
    assert len(_native.select_pods(snap, empty, None, "", "")) == 0
    assert len(_native.select_nodes(snap, empty, "", "")) == 0


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
            for call in (
                lambda: _native.select_pods(snap, inv, None, label, field),  # noqa: B023
                lambda: _native.select_nodes(snap, inv, label, field),  # noqa: B023
            ):
                try:
                    idx = call()
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
