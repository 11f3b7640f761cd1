"""What reviews may cost: the review budget's rules, the review caches' partitions, and a
flood of bogus tokens over real TLS that must not starve anyone else."""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kubemetrics.api.routes import build_app
from kubemetrics.auth import start_security
from kubemetrics.auth.cache import TTLCache
from kubemetrics.auth.throttle import ReviewBudget, ReviewThrottled
from kubemetrics.config import AuthnConfig, Config
from kubemetrics.kube import ApiClient, ClusterCredentials, TokenSource
from tests.helpers.kube import CA, FakeApiServer, run, until
from tests.helpers.serving import api_deps, serve_tls

NODES = "/apis/metrics.k8s.io/v1beta1/nodes"


# --- the budget's rules ---------------------------------------------------------------------------


def test_a_caller_past_its_share_is_refused_at_once_others_are_not() -> None:
    async def main() -> None:
        budget = ReviewBudget("tokenreviews", concurrency=4, per_key=2, max_wait=5.0)
        release = asyncio.Event()

        async def review(key: str) -> str:
            try:
                async with budget.slot(key):
                    await release.wait()
                    return "made"
            except ReviewThrottled:
                return "throttled"

        flood = [asyncio.create_task(review("10.0.0.66")) for _ in range(5)]
        await asyncio.sleep(0.05)
        done = [t.result() for t in flood if t.done()]
        assert done == ["throttled"] * 3  # past its share of 2, at once
        other = asyncio.create_task(review("10.0.0.7"))
        await asyncio.sleep(0.05)
        assert not other.done()  # holding one of the two free slots
        release.set()
        assert await other == "made"
        assert [await t for t in flood] == ["made", "made", "throttled", "throttled", "throttled"]
        assert (budget.made, budget.throttled) == (3, 3)

    run(main())


def test_waiters_beyond_the_concurrency_go_in_order_or_time_out() -> None:
    async def main() -> None:
        budget = ReviewBudget("subjectaccessreviews", concurrency=1, per_key=10, max_wait=0.3)
        order: list[int] = []
        gate = asyncio.Event()

        async def review(i: int, hold: bool = False) -> str:
            try:
                async with budget.slot(f"user-{i}"):
                    order.append(i)
                    if hold:
                        await gate.wait()
                    return "made"
            except ReviewThrottled:
                return "throttled"

        first = asyncio.create_task(review(0, hold=True))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(review(i)) for i in (1, 2)]
        assert [await t for t in waiting] == ["throttled", "throttled"]  # 0.3 s passed
        late = [asyncio.create_task(review(i)) for i in (3, 4)]
        await asyncio.sleep(0.01)
        gate.set()
        assert [await t for t in late] == ["made", "made"]
        assert await first == "made"
        assert order == [0, 3, 4]

    run(main())


def test_the_rate_is_a_token_bucket() -> None:
    async def main() -> None:
        now = [0.0]
        budget = ReviewBudget("tokenreviews", qps=10, burst=3, per_key=100, clock=lambda: now[0])
        for _ in range(3):  # the burst
            async with budget.slot("a"):
                pass
        waiting = asyncio.create_task(_made(budget))
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no token left: it waits for one
        now[0] = 0.1  # one token later (the dispatcher's timer re-checks the clock)
        assert await asyncio.wait_for(waiting, 5) is True

    run(main())


async def _made(budget: ReviewBudget) -> bool:
    async with budget.slot("b"):
        return True


def test_refusals_never_evict_accepted_answers() -> None:
    """A flood of refused tokens fills the refusals' partition only."""
    cache: TTLCache[str, bool] = TTLCache(
        lambda _v: 60.0, max_entries=4, expendable=lambda v: not v
    )
    cache.put("alice", True)
    cache.put("bob", True)
    for i in range(1000):
        cache.put(f"bogus-{i}", False)
    assert cache.get("alice") is True and cache.get("bob") is True
    assert cache.get("bogus-999") is False and cache.get("bogus-0") is None
    assert len(cache) == 6


# --- a flood over real TLS ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_flood_of_bogus_tokens_starves_nobody(tmp_path: Path) -> None:
    """300 requests with made-up tokens from one address, against an API server that takes a
    second per review: a user with a good token from another address, and a user with a
    client certificate (whose request needs a SubjectAccessReview), are each served within
    seconds. The flood costs kube-apiserver at most its fair share of reviews at a time; the
    rest is answered 429. Before, every review queued in one 16-connection pool shared with
    the reflectors, and both users failed after the 10 s review timeout."""

    async def main() -> None:
        ca = CA(tmp_path)
        fake = FakeApiServer(
            ca.server_context(ca.issue("apiserver")),
            tokens={"good-token": {"username": "bob", "groups": ["devs"]}},
            allow=lambda spec: (True, ""),
        )
        fake.review_delay = 1.0
        await fake.start()
        client = ApiClient(
            ClusterCredentials(server=fake.url, ca_pem=ca.cert_pem.decode(), token=TokenSource())
        )
        config = Config(authn=AuthnConfig(skip_lookup=True, client_ca_file=str(ca.cert_file)))
        security = await start_security(config, client)
        deps = api_deps(authenticator=security.authenticator, authorizer=security.authorizer)
        try:
            async with serve_tls(build_app(deps), tmp_path, client_ca=True, ca=ca) as served:
                url = f"https://127.0.0.1:{served.port}{NODES}"

                async def get(
                    ssl_ctx: Any, token: str | None = None, source: str = "127.0.0.1"
                ) -> tuple[int, float]:
                    t0 = time.monotonic()
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    connector = aiohttp.TCPConnector(ssl=ssl_ctx, local_addr=(source, 0))
                    async with (
                        aiohttp.ClientSession(connector=connector) as session,
                        session.get(url, headers=headers) as resp,
                    ):
                        await resp.read()
                        return resp.status, time.monotonic() - t0

                flood = [
                    asyncio.create_task(get(served.client, f"bogus-{secrets.token_hex(8)}"))
                    for _ in range(300)
                ]
                await until(
                    lambda: fake.reviews_in_flight["tokenreviews"] >= 8, "the flood to arrive"
                )
                bob, carol = await asyncio.gather(
                    get(served.client, "good-token", source="127.0.0.2"),
                    get(served.client_with_cert("carol", org="devs")),
                )
                assert bob[0] == 200 and bob[1] < 5.0, bob
                assert carol[0] == 200 and carol[1] < 5.0, carol
                statuses = [s for s, _ in await asyncio.gather(*flood)]
                assert set(statuses) == {401, 429}, set(statuses)
                assert statuses.count(429) >= 250
                budget = security.tokens.budget
                assert fake.max_reviews_in_flight["tokenreviews"] <= budget.per_key + 1
        finally:
            await security.close()
            await client.close()
            await fake.stop()

    run(main(), timeout=120)
