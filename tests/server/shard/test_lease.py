"""Membership over real Lease traffic: the simulator's coordination.k8s.io, list+watch, RBAC."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kubemetrics.config import ShardingConfig
from kubemetrics.kube.client import ApiClient, load_credentials
from kubemetrics.shard.lease import (
    ADDRESS_ANNOTATION,
    CERT_ANNOTATION,
    GROUP_LABEL,
    Identity,
    Membership,
    micro_time,
)
from kubemetrics_sim.launch import SimProcess

LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
CERT = "ab" * 32
SA = "system:serviceaccount:kube-system:metrics-server"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    with SimProcess(tmp_path_factory.mktemp("sim"), nodes=1, pods_per_node=1, seed=3) as s:
        # What the high-availability overlay's Role grants.
        s.control(
            "POST",
            "rbac/grants",
            {
                "name": "shard-leases",
                "users": [SA],
                "verbs": ["get", "list", "watch", "create", "update", "delete"],
                "api_groups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "namespaces": ["kube-system"],
            },
        )
        yield s


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def settings(name: str, group: str, duration: float = 3.0) -> ShardingConfig:
    return ShardingConfig("lease", duration, name, "kube-system", "127.0.0.1", group)


def ident(port: int) -> Any:
    async def get() -> Identity:
        return Identity(f"127.0.0.1:{port}", CERT)

    return get


@contextlib.asynccontextmanager
async def client(sim: SimProcess, user: str = "metrics-server") -> AsyncIterator[ApiClient]:
    async with ApiClient(await load_credentials(sim.kubeconfig(user))) as c:
        yield c


@contextlib.asynccontextmanager
async def running(m: Membership) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(m.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Any, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def names(m: Membership) -> list[str]:
    return [x.name for x in m.members()]


def external_lease(name: str, group: str, renewed: float, annotated: bool = True) -> dict[str, Any]:
    ann = {ADDRESS_ANNOTATION: "127.0.0.9:1", CERT_ANNOTATION: CERT} if annotated else {}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "labels": {GROUP_LABEL: group}, "annotations": ann},
        "spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": 3,
            "renewTime": micro_time(renewed),
        },
    }


def test_own_lease_is_created_and_renewed(sim: SimProcess) -> None:
    async def main() -> None:
        async with client(sim) as c:
            m = Membership(c, settings("own-a", "g-own"), ident(4443))
            assert await m.renew()
            first = sim.api(f"{LEASES}/own-a")
            meta, spec = first["metadata"], first["spec"]
            assert meta["labels"] == {GROUP_LABEL: "g-own"}
            assert meta["annotations"] == {
                ADDRESS_ANNOTATION: "127.0.0.1:4443",
                CERT_ANNOTATION: CERT,
            }
            assert spec["holderIdentity"] == "own-a" and spec["leaseDurationSeconds"] == 3
            await asyncio.sleep(0.01)
            assert await m.renew()
            second = sim.api(f"{LEASES}/own-a")
            assert second["spec"]["renewTime"] > spec["renewTime"]
            assert second["spec"]["acquireTime"] == spec["acquireTime"]
            assert second["metadata"]["uid"] == meta["uid"]
            assert await m.release()
            assert sim.request("GET", f"{LEASES}/own-a")[0] == 404

    asyncio.run(main())


def test_members_see_each_other_and_drop_one_that_goes_silent(sim: SimProcess) -> None:
    start = time.time()

    async def main() -> None:
        clock = Clock()
        async with client(sim) as c:
            # a's wall clock stays at `start`, before any of b's renewals: b is seen as renewed
            # just now however late a lists it, so only a's own clock decides below.
            a = Membership(c, settings("m-a", "g-see"), ident(1), clock=clock, wall=lambda: start)
            b = Membership(c, settings("m-b", "g-see"), ident(2))
            async with running(a):
                async with running(b):
                    await until(lambda: names(a) == ["m-a", "m-b"])
                    assert [m.address for m in a.members()] == ["127.0.0.1:1", "127.0.0.1:2"]
                # b stopped renewing (no goodbye): alive until a's clock passes its duration.
                clock.t += 2.9
                assert names(a) == ["m-a", "m-b"]
                clock.t += 0.2
                assert names(a) == ["m-a"]
            await b.release()
            await a.release()

    asyncio.run(main())


def test_a_released_lease_leaves_at_once(sim: SimProcess) -> None:
    async def main() -> None:
        async with client(sim) as c:
            a = Membership(c, settings("r-a", "g-rel", duration=60), ident(1))
            b = Membership(c, settings("r-b", "g-rel", duration=60), ident(2))
            async with running(a), running(b):
                await until(lambda: names(a) == ["r-a", "r-b"])
                assert await b.release()
                await until(lambda: names(a) == ["r-a"], within=2.0)
                assert await b.renew() is False  # released is final
            await a.release()

    asyncio.run(main())


def test_first_sight_judges_renew_time_and_skips_unusable_leases(sim: SimProcess) -> None:
    now = time.time()
    for lease in (
        external_lease("ghost", "g-first", now - 3600),  # killed long ago
        external_lease("fresh", "g-first", now),
        external_lease("noaddr", "g-first", now, annotated=False),
        external_lease("other", "g-elsewhere", now),
    ):
        status, _, body = sim.request("POST", LEASES, lease)
        assert status == 201, body

    async def main() -> None:
        async with client(sim) as c:
            a = Membership(c, settings("f-a", "g-first"), ident(1))
            async with running(a):
                await a.wait_synced()
                assert names(a) == ["f-a", "fresh"]

    try:
        asyncio.run(main())
    finally:
        for n in ("ghost", "fresh", "noaddr", "other", "f-a"):
            sim.request("DELETE", f"{LEASES}/{n}")


def test_writes_behind_its_back_are_survived(sim: SimProcess) -> None:
    async def main() -> None:
        async with client(sim) as c:
            m = Membership(c, settings("w-a", "g-w"), ident(1))
            assert await m.renew()
            lease = sim.api(f"{LEASES}/w-a")
            lease["spec"]["holderIdentity"] = "someone"
            assert sim.request("PUT", f"{LEASES}/w-a", lease)[0] == 200
            assert await m.renew()  # 409 Conflict: re-read, write again
            assert sim.api(f"{LEASES}/w-a")["spec"]["holderIdentity"] == "w-a"
            assert sim.request("DELETE", f"{LEASES}/w-a")[0] == 200
            assert await m.renew()  # 404: created again
            assert sim.api(f"{LEASES}/w-a")["spec"]["holderIdentity"] == "w-a"
            # A restarted container finds its old Lease: 409 AlreadyExists, then adopted.
            again = Membership(c, settings("w-a", "g-w"), ident(9))
            assert await again.renew()
            got = sim.api(f"{LEASES}/w-a")["metadata"]["annotations"][ADDRESS_ANNOTATION]
            assert got == "127.0.0.1:9"
            await again.release()
            assert m.renewals == 3

    asyncio.run(main())


def test_without_lease_rights_the_replica_is_alone_and_says_so(
    sim: SimProcess, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        async with client(sim, "nobody") as c:
            m = Membership(c, settings("n-a", "g-n"), ident(1))
            assert not await m.renew()
            assert not await m.renew()
            assert names(m) == ["n-a"]

    asyncio.run(main())
    lines = [r for r in caplog.records if "Cannot renew" in r.getMessage()]
    assert len(lines) == 1  # once per state, not per attempt


def test_long_expired_leases_are_collected_with_a_precondition(sim: SimProcess) -> None:
    written = time.time()
    status, _, _ = sim.request("POST", LEASES, external_lease("gc-old", "g-gc", written))
    assert status == 201

    async def main() -> None:
        clock = Clock()
        async with client(sim) as c:
            # First sight reads the Lease's age off the wall clock: pinned, so that however long
            # this machine takes to list it, the Lease is seen as renewed just now.
            m = Membership(c, settings("gc-a", "g-gc"), ident(1), clock=clock, wall=lambda: written)
            async with running(m):
                await until(lambda: "gc-old" in m._leases)
                clock.t += 29.0  # 10 durations not yet passed
                await m._collect_garbage()
                assert sim.request("GET", f"{LEASES}/gc-old")[0] == 200
                clock.t += 2.0
                await m._collect_garbage()
                assert sim.request("GET", f"{LEASES}/gc-old")[0] == 404
            await m.release()

    asyncio.run(main())
