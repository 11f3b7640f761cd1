"""A replica's part: exchange with peers, the nodes it scrapes (owned and stood in for)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from kubemetrics import _native
from kubemetrics.kube.discovery import NodeTarget
from kubemetrics.selfmetrics import SelfMetrics
from kubemetrics.shard.assign import Rendezvous
from kubemetrics.shard.lease import Member
from kubemetrics.shard.peers import PeerError
from kubemetrics.shard.sharding import MAX_CONCURRENT_FETCHES, PeerState, Sharding
from kubemetrics_sim.payload import ContainerSample, NodeSample, kubelet_text

NODES = [f"node-{i:03d}" for i in range(60)]
TABLE = {n: NodeTarget(n, "127.0.0.1", 10250) for n in NODES}
MEMBERS = ["a", "b", "c"]


class FakeMembership:
    def __init__(self, me: str, members: list[str]) -> None:
        self.me = me
        self.names = members

    def members(self) -> list[Member]:
        return [Member(n, f"{n}:1", "00" * 32) for n in sorted(self.names)]

    def peers(self) -> list[Member]:
        return [m for m in self.members() if m.name != self.me]


class FakePeers:
    """Answers per peer name: bytes, a PeerError, or a delay then bytes."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.fetched: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def fetch(self, peer: Member) -> bytes:
        self.fetched.append(peer.name)
        a = self.answers.get(peer.name, PeerError("unreachable", "no answer configured"))
        if isinstance(a, tuple):
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                await asyncio.sleep(a[0])
            finally:
                self.in_flight -= 1
            a = a[1]
        if isinstance(a, Exception):
            raise a
        return bytes(a)

    async def close(self) -> None:
        pass


def owners() -> dict[str, str]:
    o = Rendezvous().owners(NODES, MEMBERS).tolist()
    return {n: MEMBERS[i] for n, i in zip(NODES, o, strict=True)}


def payload(ts: int, k: int) -> bytes:
    return kubelet_text(
        NodeSample(100.0 + k, 1 << 30, ts),
        [ContainerSample("ns", "p", "c", 1.0 + k, 1 << 20, 1e9, ts)],
    )


def body_of(nodes: list[str], failing: list[str], now_ms: int) -> bytes:
    s = _native.Store(15.0)
    for n in nodes:
        s.ingest(n, payload(now_ms - 10_000, 0), now_ms - 10_000)
        s.ingest(n, payload(now_ms, 1), now_ms)
    return s.export_points(now_ms, failing)


def sharding(
    me: str = "a", members: list[str] | None = None, exchange_timeout: float = 30.0
) -> tuple[Sharding, FakePeers, Any]:
    peers = FakePeers()
    store = _native.Store(15.0)
    metrics = SelfMetrics(15.0)
    s = Sharding(
        FakeMembership(me, members or MEMBERS),  # type: ignore[arg-type]
        peers,  # type: ignore[arg-type]
        store,
        metrics,
        TABLE,
        exchange_timeout=exchange_timeout,
    )
    return s, peers, (store, metrics)


def test_healthy_peers_leave_this_replica_its_own_share_only() -> None:
    own = owners()
    now = int(time.time() * 1000)
    s, peers, (store, metrics) = sharding()
    for p in ("b", "c"):
        peers.answers[p] = body_of([n for n in NODES if own[n] == p], [], now)
    asyncio.run(s.exchange(now))
    got = [t.name for t in s.targets()]
    assert got == [n for n in NODES if own[n] == "a"]
    assert s.standing_in == []
    # Every node is served here, two thirds of them from the peers' points.
    assert len(store.snapshot(now).nodes["name"]) == len(NODES) - len(got)
    text = metrics.render().decode()
    assert "kubemetrics_shard_members 3" in text
    assert f'kubemetrics_shard_nodes{{role="owned"}} {len(got)}' in text
    assert 'kubemetrics_shard_peer_requests_total{result="ok"} 2' in text


def test_stand_in_for_what_an_owner_cannot_deliver() -> None:
    own = owners()
    now = int(time.time() * 1000)
    s, peers, _ = sharding()
    b_nodes = [n for n in NODES if own[n] == "b"]
    c_nodes = [n for n in NODES if own[n] == "c"]
    # b is unreachable; c has no points for its first node and failed its second.
    peers.answers["b"] = PeerError("unreachable", "connection refused")
    peers.answers["c"] = body_of(c_nodes[1:], [c_nodes[1]], now)
    asyncio.run(s.exchange(now))
    targets = [t.name for t in s.targets()]
    owned = [n for n in NODES if own[n] == "a"]
    assert targets[: len(owned)] == owned
    assert sorted(s.standing_in) == sorted([*b_nodes, c_nodes[0], c_nodes[1]])
    # b answers again: the stand-ins for it end, and they are released.
    peers.answers["b"] = body_of(b_nodes, [], now)
    asyncio.run(s.exchange(now))
    s.targets()
    assert sorted(s.standing_in) == sorted(c_nodes[:2])
    assert s.released == set(b_nodes)


def test_a_member_not_yet_fetched_is_stood_in_for() -> None:
    # A replica that joined after this cycle's exchange has no points anywhere yet.
    s, _, _ = sharding(members=["a", "b"])
    asyncio.run(s.exchange(int(time.time() * 1000)))  # b unreachable
    s.membership.names = MEMBERS  # type: ignore[attr-defined]
    s.targets()
    own = owners()
    assert {n for n in NODES if own[n] != "a"} == set(s.standing_in)


def test_a_lone_replica_scrapes_everything() -> None:
    s, peers, _ = sharding(members=["a"])
    asyncio.run(s.exchange(int(time.time() * 1000)))
    assert [t.name for t in s.targets()] == NODES and peers.fetched == []


def test_an_invalid_body_is_a_failed_peer() -> None:
    s, peers, (store, metrics) = sharding()
    peers.answers["b"] = b"KMPT\x01\x01not deflate"
    peers.answers["c"] = b"<html>"
    result = asyncio.run(s.exchange(int(time.time() * 1000)))
    assert not result.peers["b"].ok and not result.peers["c"].ok
    assert store.points() == (0, 0)
    assert 'kubemetrics_shard_peer_requests_total{result="invalid"} 2' in metrics.render().decode()
    s.targets()
    assert len(s.standing_in) == len(NODES) - len(s.owned)


def test_a_slow_peer_delays_the_exchange_by_its_own_time_only() -> None:
    # The PeerClient bounds each fetch (tests/server/shard/test_peers.py); fetches run at once,
    # so one slow peer does not add to another's time.
    s, peers, _ = sharding()
    now = int(time.time() * 1000)
    peers.answers["b"] = (0.5, body_of([], [], now))
    peers.answers["c"] = (0.5, body_of([], [], now))
    t0 = time.monotonic()
    asyncio.run(s.exchange(now))
    assert time.monotonic() - t0 < 0.9


def test_share_lists_only_failures_of_nodes_scraped_this_cycle() -> None:
    s, _, _ = sharding()
    now = int(time.time() * 1000)
    asyncio.run(s.exchange(now))
    s.targets()
    mine = s.owned[0]
    asyncio.run(s.share(now, [mine, "node-not-targeted"]))
    assert s.points is not None
    _, failing = _native.Store(15.0).import_points(s.points, now, 1 << 20)
    assert failing == [mine]


@pytest.mark.parametrize("me", MEMBERS)
def test_the_three_replicas_cover_every_node_once(me: str) -> None:
    own = owners()
    s, _, _ = sharding(me)
    s._last.peers = {  # every peer answered with its full share
        p: PeerState(True, frozenset(n for n in NODES if own[n] == p)) for p in MEMBERS if p != me
    }
    assert [t.name for t in s.targets()] == [n for n in NODES if own[n] == me]


MANY = [f"m{i:02d}" for i in range(40)]


def test_fetches_in_flight_are_bounded_however_many_members() -> None:
    s, peers, _ = sharding(members=["a", *MANY])
    now = int(time.time() * 1000)
    for p in MANY:
        peers.answers[p] = (0.05, body_of([], [], now))
    result = asyncio.run(s.exchange(now))
    assert all(result.peers[p].ok for p in MANY)
    assert peers.most_in_flight == MAX_CONCURRENT_FETCHES


def test_the_whole_exchange_is_bounded_in_time_however_many_members() -> None:
    # 40 peers that each take their full fetch timeout (1 s): 5 rounds of 8 without the
    # exchange's own deadline; with it, the cycle waits 1.5 s and stands in for the rest.
    s, peers, (_, metrics) = sharding(members=["a", *MANY], exchange_timeout=1.5)
    now = int(time.time() * 1000)
    for p in MANY:
        peers.answers[p] = (1.0, PeerError("timeout", "no answer within 1s"))
    t0 = time.monotonic()
    result = asyncio.run(s.exchange(now))
    assert time.monotonic() - t0 < 3.5
    assert not any(result.peers[p].ok for p in MANY)
    assert 'kubemetrics_shard_peer_requests_total{result="timeout"} 40' in metrics.render().decode()
    s.targets()
    assert len(s.standing_in) == len(NODES) - len(s.owned)


def test_a_peer_s_points_for_unknown_nodes_are_not_kept() -> None:
    # A node deleted from the cluster that a peer still exports (it has not seen the deletion
    # yet), or any name a broken peer sends: nothing would ever forget it.
    s, peers, (store, _) = sharding()
    now = int(time.time() * 1000)
    ghosts = [f"gone-{i}" for i in range(50)]
    peers.answers["b"] = body_of([NODES[0], *ghosts], [], now)
    result = asyncio.run(s.exchange(now))
    assert result.peers["b"].ok
    assert store.points()[0] == 1
    assert list(store.snapshot(now).nodes["name"]) == [NODES[0]]
