"""Store.export_points / Store.import_points through the binding: what peers exchange."""

from __future__ import annotations

import zlib

import pytest

from kubemetrics import _native
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text

T0 = 1_700_000_000_000


def payload(k: int, pods: int = 3) -> bytes:
    t = T0 + 10_000 * k
    return kubelet_text(
        NodeSample(100.0 + k, 1 << 30, t),
        [
            ContainerSample("ns", f"pod-{i}", "c", 10.0 + k * (i + 1) / 10, 1 << 20, 1.0e9, t)
            for i in range(pods)
        ],
    )


def owner_with(nodes: list[str], samples: int = 2) -> _native.Store:
    s = _native.Store(15.0)
    for n in nodes:
        for k in range(samples):
            s.ingest(n, payload(k), T0 + 10_000 * k)
    return s


def columns(snap: _native.Snapshot) -> dict[str, list[object]]:
    return {
        **{f"node.{k}": v.tolist() for k, v in snap.nodes.items()},
        **{f"pod.{k}": v.tolist() for k, v in snap.pods.items()},
        **{f"container.{k}": v.tolist() for k, v in snap.containers.items()},
    }


def test_a_peer_serves_the_owners_values_and_learns_its_failures() -> None:
    owner = owner_with(["n1", "n2"])
    now = T0 + 10_000
    body = owner.export_points(now, ["n3"])
    assert isinstance(body, bytes) and body[:4] == b"KMPT"
    peer = _native.Store(15.0)
    nodes, failing = peer.import_points(body, now, 1 << 20)
    assert sorted(nodes) == ["n1", "n2"] and failing == ["n3"]
    assert columns(peer.snapshot(now)) == columns(owner.snapshot(now))
    # What a replica imported is not its own: it never travels on.
    assert peer.import_points(peer.export_points(now, []), now, 1 << 20) == ([], [])


def test_the_adopter_has_a_rate_from_its_first_scrape() -> None:
    owner = owner_with(["n1"])
    adopter = _native.Store(15.0)
    adopter.import_points(owner.export_points(T0 + 10_000, []), T0 + 10_000, 1 << 20)
    adopter.ingest("n1", payload(2), T0 + 20_000)
    snap = adopter.snapshot(T0 + 20_000)
    assert snap.nodes["window_ms"].tolist() == [10_000]
    assert len(snap.pods["name"]) == 3


def test_bad_bodies_raise_value_error_and_change_nothing() -> None:
    peer = owner_with(["n1"])
    before = columns(peer.snapshot(T0 + 10_000))
    for bad in (b"", b"KMPT", b"KMPT\x01\x01" + b"\x00" * 50, b"HTTP/1.1 200 OK\r\n"):
        with pytest.raises(ValueError):
            peer.import_points(bad, T0 + 10_000, 1 << 20)
    bomb = b"KMPT\x01\x01" + zlib.compress(b"\0" * (8 << 20), 1)[2:-4]  # raw deflate
    with pytest.raises(ValueError, match="inflates past 65536 bytes"):
        peer.import_points(bomb, T0 + 10_000, 65536)
    assert columns(peer.snapshot(T0 + 10_000)) == before


def test_the_decoded_size_bound_is_what_the_caller_gives() -> None:
    body = owner_with([f"n{i}" for i in range(50)]).export_points(T0 + 10_000, [])
    with pytest.raises(ValueError, match="inflates past"):
        _native.Store(15.0).import_points(body, T0 + 10_000, 1024)
    nodes, _ = _native.Store(15.0).import_points(body, T0 + 10_000, 1 << 20)
    assert len(nodes) == 50
