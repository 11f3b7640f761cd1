"""Which replica scrapes which node: rendezvous (highest-random-weight) hashing.

Each (node, member) pair gets a pseudo-random weight; a node's owner is the live member with
the highest weight. Every replica that sees the same members computes the same owners with no
coordination, every node has exactly one owner, and a member coming or going moves only the
nodes it gains or loses (about 1/n of them): the others keep their owner, their kept-alive
kubelet connections and their previous points.

A node name is hashed once (BLAKE2b, 64 bits, cached); a weight is SplitMix64's finaliser of
`node_hash XOR member_hash`, computed for all nodes of a member at once with numpy, so 100,000
nodes × 10 members cost a few milliseconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]


def name_hash(name: str) -> int:
    """A stable 64-bit hash of a name (the same on every replica and Python version)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def _mix(x: U64) -> U64:
    """SplitMix64's finaliser, elementwise (uint64 arithmetic wraps, as intended)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


class Rendezvous:
    """Owners of node names among members; node hashes are cached across calls."""

    def __init__(self) -> None:
        self._hashes: dict[str, int] = {}

    def _node_hashes(self, nodes: Sequence[str]) -> U64:
        cache = self._hashes
        out = np.empty(len(nodes), dtype=np.uint64)
        for i, n in enumerate(nodes):
            h = cache.get(n)
            if h is None:
                h = cache[n] = name_hash(n)
            out[i] = h
        return out

    def forget(self, names: Iterable[str]) -> None:
        """Nodes that left the cluster: drop their cached hashes."""
        for n in names:
            self._hashes.pop(n, None)

    def owners(self, nodes: Sequence[str], members: Sequence[str]) -> npt.NDArray[np.intp]:
        """For each node, the index in `members` of its owner (members must be non-empty)."""
        if not members:
            raise ValueError("no members to assign nodes to")
        hashes = self._node_hashes(nodes)
        best = np.zeros(len(nodes), dtype=np.intp)
        top: U64 | None = None
        for m, member in enumerate(members):
            w = _mix(hashes ^ np.uint64(name_hash(member)))
            if top is None:
                top = w
                continue
            # Ties (a 2^-64 event) go to the member listed first: members arrive sorted.
            wins = w > top
            best[wins] = m
            top = np.where(wins, w, top)
        return best

    def owned(self, nodes: Sequence[str], members: Sequence[str], me: str) -> list[str]:
        """The nodes `me` (one of `members`) owns, in the order given."""
        idx = members.index(me)
        owners = self.owners(nodes, members)
        return [n for n, o in zip(nodes, owners.tolist(), strict=True) if o == idx]
