"""One replica's part in the sharded whole, as the scrape cycle uses it.

    exchange   fetch every live peer's latest points (concurrently, each bounded in time and
               bytes) and import them into the store: newest sample wins, and a node's previous
               points are at hand should this replica adopt it
    targets    the nodes to scrape this cycle: those this replica owns (rendezvous over the live
               members), and — standing in — those whose owner could not answer, has no fresh
               points for them, or failed to scrape them itself
    share      after the cycle, encode this replica's own points for the peers to fetch

Standing in covers every way an owner can fail to deliver before its Lease says so: it died
(its Lease expires only after the duration), it is unreachable from here, it is partitioned
from some kubelets, or it has just joined and not yet scraped its nodes. A node stood in for is
scraped twice for as long as that lasts, never zero times.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kubemetrics.kube.discovery import NodeTarget
from kubemetrics.logs import StateLog, kv
from kubemetrics.shard.assign import Rendezvous
from kubemetrics.shard.lease import Member, Membership
from kubemetrics.shard.peers import PeerClient, PeerError

log = logging.getLogger("kubemetrics.shard")

MAX_CONCURRENT_FETCHES = 8
# A peer's body may inflate to this many times its compressed size (and no more than the
# absolute cap): what a decompression bomb can cost.
MAX_INFLATE_RATIO = 64
MAX_DECODED_BYTES = 1 << 30


class PointsStore(Protocol):
    """The part of ``kubemetrics._native.Store`` the exchange uses."""

    def export_points(self, now_ms: int, failing: Sequence[str]) -> bytes: ...
    def import_points(
        self, data: bytes, now_ms: int, max_decoded_bytes: int
    ) -> tuple[list[str], list[str]]: ...
    def forget_node(self, node: str) -> None: ...


class ShardObserver(Protocol):
    """Self-metrics hooks (implemented by selfmetrics.py)."""

    def on_peer_fetch(self, result: str, nbytes: int, seconds: float) -> None: ...
    def set_shard(self, members: int, owned: int, standing_in: int) -> None: ...


@dataclass
class PeerState:
    """What the last exchange with one peer gave."""

    ok: bool = False
    nodes: frozenset[str] = frozenset()  # nodes it has points for
    failing: frozenset[str] = frozenset()  # nodes it failed to scrape in its last cycle
    error: str = ""


@dataclass
class ExchangeResult:
    peers: dict[str, PeerState] = field(default_factory=dict)
    bytes: int = 0


class Sharding:
    """Membership + assignment + peer exchange, for the cycle (`kubemetrics.cycle`)."""

    def __init__(
        self,
        membership: Membership,
        client: PeerClient,
        store: PointsStore,
        observer: ShardObserver,
        table: Mapping[str, NodeTarget],
        *,
        exchange_timeout: float,
    ) -> None:
        self.membership = membership
        self._exchange_timeout = exchange_timeout
        self._table = table
        self.me = membership.me
        self._client = client
        self._store = store
        self._observer = observer
        self._rendezvous = Rendezvous()
        self._last = ExchangeResult()
        self._states = StateLog(log)
        self._sem = asyncio.Semaphore(MAX_CONCURRENT_FETCHES)
        self._members: tuple[str, ...] = ()
        self.points: bytes | None = None  # this replica's latest export, served to peers
        self.owned: list[str] = []
        self.standing_in: list[str] = []
        self._targeted: set[str] = set()
        self.released: set[str] = set()  # scraped last cycle, not this one

    # --- exchange ---------------------------------------------------------------------------
    async def exchange(self, now_ms: int) -> ExchangeResult:
        """Every live peer's points, fetched at most MAX_CONCURRENT_FETCHES at a time, all
        within `exchange_timeout`: however many members a group has and however they answer,
        the exchange delays the cycle by no more than that. A peer not done by then counts as
        failed (its nodes are stood in for); an import already running in its thread still
        lands, which is harmless (newest sample wins)."""
        peers = self.membership.peers()
        tasks = [asyncio.ensure_future(self._pull(p, now_ms)) for p in peers]
        pending: set[asyncio.Future[tuple[PeerState, int]]] = set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self._exchange_timeout)
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        out = ExchangeResult()
        for peer, task in zip(peers, tasks, strict=True):
            if task in pending:
                message = f"not fetched within the exchange's {self._exchange_timeout:g}s"
                self._observer.on_peer_fetch("timeout", 0, self._exchange_timeout)
                self._states.bad(
                    peer.name, "timeout", "Cannot fetch a peer's points; standing in", err=message
                )
                state, nbytes = PeerState(error=message), 0
            else:
                state, nbytes = task.result()
            out.peers[peer.name] = state
            out.bytes += nbytes
        self._last = out
        return out

    async def _pull(self, peer: Member, now_ms: int) -> tuple[PeerState, int]:
        started = time.monotonic()
        async with self._sem:
            try:
                body = await self._client.fetch(peer)
                limit = min(max(len(body), 1 << 20) * MAX_INFLATE_RATIO, MAX_DECODED_BYTES)
                nodes, failing = await asyncio.to_thread(
                    self._store.import_points, body, now_ms, limit
                )
            except PeerError as e:
                self._observer.on_peer_fetch(e.kind, 0, time.monotonic() - started)
                self._states.bad(
                    peer.name, e.kind, "Cannot fetch a peer's points; standing in", err=str(e)
                )
                return PeerState(error=str(e)), 0
            except ValueError as e:  # the Rust decoder: a malformed or oversized body
                self._observer.on_peer_fetch("invalid", len(body), time.monotonic() - started)
                self._states.bad(peer.name, "invalid", "A peer's points are invalid", err=str(e))
                return PeerState(error=str(e)), len(body)
        # Only nodes this replica knows: a peer that has not yet seen a node's deletion (or a
        # broken one) must not leave points here that no removal would ever forget.
        for node in nodes:
            if node not in self._table:
                self._store.forget_node(node)
        self._observer.on_peer_fetch("ok", len(body), time.monotonic() - started)
        self._states.ok(peer.name, "Fetching a peer's points works again", peer=peer.name)
        return PeerState(True, frozenset(nodes), frozenset(failing)), len(body)

    # --- assignment -------------------------------------------------------------------------
    def targets(self) -> list[NodeTarget]:
        """The nodes this replica scrapes this cycle (owned, then stood in for)."""
        table = self._table
        members = self.membership.members()
        names = [m.name for m in members]
        nodes = sorted(table)
        owners = self._rendezvous.owners(nodes, names).tolist() if nodes else []
        me = names.index(self.me)
        owned: list[str] = []
        standing_in: list[str] = []
        for node, owner in zip(nodes, owners, strict=True):
            if owner == me:
                owned.append(node)
                continue
            state = self._last.peers.get(names[owner])
            if state is None or not state.ok or node not in state.nodes or node in state.failing:
                standing_in.append(node)
        if tuple(names) != self._members:
            self._members = tuple(names)
            log.info(
                "Shard members changed",
                extra=kv(members=",".join(names), owned=len(owned), nodes=len(nodes)),
            )
        self.owned, self.standing_in = owned, standing_in
        targeted = {*owned, *standing_in}
        self.released = self._targeted - targeted
        self._targeted = targeted
        self._observer.set_shard(len(names), len(owned), len(standing_in))
        return [table[n] for n in owned] + [table[n] for n in standing_in]

    def forget(self, nodes: Iterable[str]) -> None:
        self._rendezvous.forget(nodes)

    # --- share ------------------------------------------------------------------------------
    async def share(self, now_ms: int, failing: Iterable[str]) -> None:
        """Encode this replica's own points, and the nodes it failed to scrape this cycle, for
        its peers."""
        failed = sorted(n for n in failing if n in self._targeted)
        self.points = await asyncio.to_thread(self._store.export_points, now_ms, failed)

    async def close(self) -> None:
        await self._client.close()
