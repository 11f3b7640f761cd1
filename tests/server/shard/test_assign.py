"""Rendezvous hashing: one owner per node, balance, and minimal movement."""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kubemetrics.shard.assign import Rendezvous, name_hash

NODES = [f"node-{i:04d}" for i in range(3000)]


def owner_names(r: Rendezvous, nodes: list[str], members: list[str]) -> dict[str, str]:
    members = sorted(members)
    return {n: members[o] for n, o in zip(nodes, r.owners(nodes, members).tolist(), strict=True)}


def test_hashes_are_stable_across_processes_and_versions() -> None:
    # BLAKE2b-64 of the UTF-8 name, little-endian: fixed forever, since replicas of two
    # versions must agree on owners during a rolling update.
    assert name_hash("node-0001") == 8198705668635174646
    assert name_hash("a") != name_hash("b")
    owners = Rendezvous().owners(NODES[:8], ["a", "b", "c"]).tolist()
    assert "".join("abc"[o] for o in owners) == "acaaabab"


def test_every_node_has_exactly_one_owner_and_shares_are_even() -> None:
    owners = Rendezvous().owners(NODES, ["ms-a", "ms-b", "ms-c"])
    counts = np.bincount(owners, minlength=3)
    assert counts.sum() == 3000
    # Binomial(3000, 1/3): sd ~26; 4 sd either way.
    assert all(900 <= c <= 1100 for c in counts), counts


def test_two_replicas_compute_the_same_owners() -> None:
    members = ["metrics-server-7c9-abcde", "metrics-server-7c9-fghij", "metrics-server-7c9-klmno"]
    a = owner_names(Rendezvous(), NODES, members)
    shuffled = NODES[:]
    random.Random(3).shuffle(shuffled)
    b = owner_names(Rendezvous(), shuffled, list(reversed(members)))
    assert a == b


def test_a_member_joining_takes_only_its_share_from_the_others() -> None:
    r = Rendezvous()
    before = owner_names(r, NODES, ["a", "b", "c"])
    after = owner_names(r, NODES, ["a", "b", "c", "d"])
    moved = {n for n in NODES if before[n] != after[n]}
    assert all(after[n] == "d" for n in moved)
    assert 600 <= len(moved) <= 900  # about a quarter


def test_a_member_leaving_moves_only_its_nodes() -> None:
    r = Rendezvous()
    before = owner_names(r, NODES, ["a", "b", "c"])
    after = owner_names(r, NODES, ["a", "c"])
    for n in NODES:
        if before[n] != "b":
            assert after[n] == before[n]
        else:
            assert after[n] in ("a", "c")


@settings(max_examples=50, deadline=None)
@given(
    nodes=st.lists(st.text(min_size=1, max_size=20), max_size=60, unique=True),
    members=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=6, unique=True),
    extra=st.text(min_size=1, max_size=12),
)
def test_movement_is_minimal_for_any_names(
    nodes: list[str], members: list[str], extra: str
) -> None:
    if extra in members:
        return
    r = Rendezvous()
    before = owner_names(r, nodes, members)
    after = owner_names(r, nodes, [*members, extra])
    assert all(after[n] in (before[n], extra) for n in nodes)


def test_forgotten_nodes_leave_the_cache() -> None:
    r = Rendezvous()
    r.owners(NODES[:10], ["a"])
    r.forget(NODES[:5])
    assert len(r._hashes) == 5
