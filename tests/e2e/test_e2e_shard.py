"""Sharded replicas (--sharding=lease) end to end: three servers sharing the simulator's
kubelets over real Leases, behind its aggregator, with real kubectl.

- every kubelet is scraped once per cycle, by the owner rendezvous hashing gives it;
- every replica serves every node and pod with the truth's values, and so does kubectl top;
- kill -9 of a replica: its nodes are scraped by the others within lease duration + one
  resolution (at once, in fact: the survivors stand in), and no node leaves their answers;
- SIGTERM: the Lease goes first and the nodes are taken over within one resolution;
- two replicas started at the same moment agree; a third joining takes about a third.
"""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.e2e import (
    KUBECTL,
    eventually,
    kubectl_cpu_m,
    kubectl_mem_mi,
    kubectl_node_mismatch,
    kubectl_pod_mismatch,
    table_rows,
)
from tests.helpers.shard import LEASE_DURATION, LEASES, RESOLUTION_S, Sharded, agent

NODES = 12
STANDING_IN = 'kubemetrics_shard_nodes{role="standing_in"}'


def settle(sc: Sharded) -> None:
    """Until every live replica sees all live members and stands in for nobody."""
    n = len(sc.live)
    sc.until(
        lambda: all(
            sc.metric(r, "kubemetrics_shard_members") == n and sc.metric(r, STANDING_IN) == 0
            for r in sc.live
        ),
        timeout=30,
        what="steady membership",
    )


def assert_owners_scrape_once_per_cycle(sc: Sharded, cycles: int = 5) -> None:
    seen = sc.scrapes_during(cycles * RESOLUTION_S)
    owners = sc.owners(sc.live)
    problems = []
    for node, owner in owners.items():
        agents = seen.get(node, {})
        # One request per cycle, from the owner alone (a cycle boundary may fall either side).
        if set(agents) != {agent(owner)} or not cycles - 1 <= sum(agents.values()) <= cycles + 1:
            problems.append(f"{node} (owner {owner}): {agents}")
    assert not problems, "\n".join(problems)


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sharded]:
    with Sharded.start(tmp_path_factory.mktemp("shard"), nodes=NODES, replicas=3) as c:
        settle(c)
        yield c


def test_every_kubelet_is_scraped_once_per_cycle_by_its_owner(sc: Sharded) -> None:
    assert_owners_scrape_once_per_cycle(sc)
    # The Leases are the replicas', in their namespace, naming where peers reach them.
    leases = {i["metadata"]["name"]: i for i in sc.sim.api(LEASES)["items"]}
    assert set(leases) == {"ms-0", "ms-1", "ms-2"}
    for name, lease in leases.items():
        assert lease["spec"]["holderIdentity"] == name
        assert lease["spec"]["leaseDurationSeconds"] == int(LEASE_DURATION)
        port = sc.replicas[name].port
        assert lease["metadata"]["annotations"]["kubemetrics.io/peer-address"] == (
            f"127.0.0.1:{port}"
        )


def test_every_replica_serves_every_node_and_pod_with_true_values(sc: Sharded) -> None:
    for name in sc.live:
        eventually(lambda name=name: sc.values_problem(name), attempts=6, pause=0.5)  # type: ignore[misc]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_kubectl_top_through_the_aggregator_is_complete_and_true(sc: Sharded) -> None:
    nodes = set(sc.sim.info["nodes"])

    def nodes_problem() -> str | None:
        rows = {r[0]: r for r in table_rows(sc.kubectl("top", "nodes"))}
        assert set(rows) == nodes
        truth = sc.sim.truth()["nodes"]
        problems = [
            kubectl_node_mismatch(n, kubectl_cpu_m(r[1]), kubectl_mem_mi(r[3]), truth[n])
            for n, r in rows.items()
        ]
        return "\n".join(p for p in problems if p) or None

    def pods_problem() -> str | None:
        rows = {f"{r[0]}/{r[1]}": r for r in table_rows(sc.kubectl("top", "pods", "-A"))}
        truth = sc.sim.truth()["pods"]
        assert set(rows) == set(truth)
        problems = [
            kubectl_pod_mismatch(k, kubectl_cpu_m(r[2]), kubectl_mem_mi(r[3]), truth[k])
            for k, r in rows.items()
        ]
        return "\n".join(p for p in problems if p) or None

    # Every replica behind the aggregator (a loaded machine may have failed a readiness probe).
    sc.until(lambda: len((sc.sim.aggregator() or {})["ready"]) == 3, 30, "3 ready endpoints")
    for _ in range(3):  # the aggregator picks an endpoint per request
        eventually(nodes_problem, attempts=6, pause=0.5)
        eventually(pods_problem, attempts=6, pause=0.5)

    def spread() -> bool:
        sent = (sc.sim.aggregator() or {})["sent"]
        return len([u for u, n in sent.items() if n]) >= 2

    # Picks are random: a few more answers until two replicas have given some (6 requests all
    # to one of 3 endpoints happens once in 243 runs; 20 more make it ~1 in 10^11).
    for _ in range(20):
        if spread():
            break
        eventually(nodes_problem, attempts=6, pause=0.5)
    assert spread(), (sc.sim.aggregator() or {})["sent"]  # spread over the replicas


def _points(sc: Sharded, name: str, token: str | None) -> tuple[int, bytes]:
    s = sc.replicas[name]
    ctx = ssl.create_default_context(cafile=str(s.cert_file))
    c = http.client.HTTPSConnection(s.host, s.port, context=ctx, timeout=10)
    try:
        c.request(
            "GET", "/shard/v1/points", headers={"Authorization": f"Bearer {token}"} if token else {}
        )
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_the_points_are_for_callers_allowed_get_nodes_metrics_only(sc: Sharded) -> None:
    status, body = _points(sc, "ms-0", sc.sim.token("metrics-server"))
    assert status == 200 and body[:4] == b"KMPT"
    status, body = _points(sc, "ms-0", sc.sim.token("viewer"))  # authenticated, not allowed
    assert status == 403, body
    assert b'cannot get resource \\"nodes/metrics\\"' in body
    assert _points(sc, "ms-0", None)[0] == 403  # anonymous
    assert _points(sc, "ms-0", "bogus")[0] == 401


# --- replicas leaving and joining (each its own cluster) ------------------------------------------


def _no_node_leaves(
    sc: Sharded, survivors: list[str], seconds: float, also: Callable[[], None] | None = None
) -> None:
    """Poll every survivor for `seconds`: every node in every answer, every time."""
    nodes = set(sc.sim.info["nodes"])
    deadline = time.monotonic() + seconds
    polls = 0
    while time.monotonic() < deadline:
        for r in survivors:
            missing = nodes - sc.served_nodes(r)
            assert not missing, f"{r} stopped serving {sorted(missing)} after {polls} polls"
        if also is not None:
            also()
        polls += 1
        time.sleep(0.2)


class Adoptions:
    """When survivors first scrape each of `nodes` after `since` (call `poll()` repeatedly)."""

    def __init__(self, sc: Sharded, nodes: set[str], survivors: list[str], since: float) -> None:
        self.sc, self.nodes, self.survivors, self.since = sc, nodes, survivors, since
        self.base = sc.sim.kubelet_requests()
        self.done: dict[str, float] = {}

    def poll(self) -> None:
        now = self.sc.sim.kubelet_requests()
        for node in self.nodes - set(self.done):
            for r in self.survivors:
                if now.get(node, {}).get(agent(r), 0) > self.base.get(node, {}).get(agent(r), 0):
                    self.done[node] = time.monotonic() - self.since
                    break


@pytest.mark.slow
def test_kill_9_its_nodes_are_taken_over_and_no_node_leaves(tmp_path: Path) -> None:
    # The Lease outlives the grace (6 s > 2 x 2 s), as the defaults' 15 s does against 2 x 15 s
    # once a scrape's age is counted: waiting for it to expire would lose the victim's nodes.
    lease = 3 * RESOLUTION_S
    with Sharded.start(tmp_path, nodes=NODES, replicas=3, seed=8, lease_duration=lease) as sc:
        settle(sc)
        owners = sc.owners(sc.live)
        victim = "ms-1"
        survivors = ["ms-0", "ms-2"]
        orphans = {n for n, o in owners.items() if o == victim}
        assert orphans
        t0 = sc.kill(victim, signal.SIGKILL)
        adopted = Adoptions(sc, orphans, survivors, t0)
        _no_node_leaves(sc, survivors, lease + 3 * RESOLUTION_S, also=adopted.poll)
        done = adopted.done
        assert set(done) == orphans, (done, sc.logs())
        # Within lease duration + one resolution; in fact at the next cycle, standing in.
        assert max(done.values()) <= lease + RESOLUTION_S, done
        print(f"kill -9: {len(done)} nodes taken over after {sorted(done.values())} s")
        # Its Lease has expired: the survivors own everything between them, each node once.
        settle(sc)
        assert_owners_scrape_once_per_cycle(sc, cycles=4)
        for r in survivors:
            eventually(lambda r=r: sc.values_problem(r), attempts=6, pause=0.5)  # type: ignore[misc]
        if KUBECTL is not None:
            # Once its endpoint is gone, the aggregator sends only to the survivors.
            sc.until(lambda: len((sc.sim.aggregator() or {})["ready"]) == 2, 10, "endpoint removed")
            rows = {r[0] for r in table_rows(sc.kubectl("top", "nodes"))}
            assert rows == set(owners)


@pytest.mark.slow
def test_sigterm_hands_over_within_one_resolution(tmp_path: Path) -> None:
    with Sharded.start(tmp_path, nodes=NODES, replicas=3, seed=9) as sc:
        settle(sc)
        owners = sc.owners(sc.live)
        victim = "ms-2"
        survivors = ["ms-0", "ms-1"]
        orphans = {n for n, o in owners.items() if o == victim}
        t0 = sc.kill(victim, signal.SIGTERM)
        # The goodbye comes first: the Lease is gone long before the process.
        gone = sc.until(
            lambda: sc.sim.request("GET", f"{LEASES}/{victim}")[0] == 404, 5, "Lease deleted"
        )
        assert gone < 2.0
        adopted = Adoptions(sc, orphans, survivors, t0)
        _no_node_leaves(sc, survivors, 2 * RESOLUTION_S + 1, also=adopted.poll)
        done = adopted.done
        assert set(done) == orphans, (done, sc.logs())
        # One resolution, plus the moment a cycle takes to fetch its peers.
        assert max(done.values()) <= RESOLUTION_S + 1.0, done
        print(f"SIGTERM: Lease gone after {gone:.2f} s; nodes after {sorted(done.values())} s")
        assert sc.replicas[victim].proc is not None
        assert sc.replicas[victim].proc.wait(20) == 0
        settle(sc)
        assert_owners_scrape_once_per_cycle(sc, cycles=4)


@pytest.mark.slow
def test_two_started_together_agree_and_a_third_takes_about_a_third(tmp_path: Path) -> None:
    nodes = 24
    with Sharded.start(tmp_path, nodes=nodes, replicas=2, seed=10) as sc:
        # Started at the same moment (tests/helpers/shard.py starts them concurrently).
        settle(sc)
        assert_owners_scrape_once_per_cycle(sc, cycles=4)
        before = sc.owners(["ms-0", "ms-1"])

        def check_both() -> None:
            for r in ("ms-0", "ms-1"):
                missing = set(before) - sc.served_nodes(r)
                assert not missing, f"{r} lost {sorted(missing)} while ms-2 joined"

        sc.add("ms-2")
        deadline = time.monotonic() + 20
        while not all(sc.metric(r, "kubemetrics_shard_members") == 3 for r in sc.live):
            check_both()
            assert time.monotonic() < deadline, sc.logs()
            time.sleep(0.2)
        _no_node_leaves(sc, ["ms-0", "ms-1", "ms-2"], 2 * RESOLUTION_S)
        settle(sc)
        after = sc.owners(sc.live)
        mine = {n for n, o in after.items() if o == "ms-2"}
        # Only nodes the newcomer takes change hands; it takes about a third.
        assert all(after[n] == before[n] for n in after if n not in mine)
        assert nodes / 6 <= len(mine) <= nodes / 2, mine
        assert_owners_scrape_once_per_cycle(sc, cycles=4)
        assert sc.metric("ms-2", 'kubemetrics_shard_nodes{role="owned"}') == len(mine)
        eventually(lambda: sc.values_problem("ms-2"), attempts=6, pause=0.5)
        json.dumps(sc.sim.state())  # the simulator is still well
