"""/livez, /readyz, /healthz over real HTTP: bodies byte-for-byte as k8s.io/apiserver's healthz."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from kubemetrics.health import (
    HealthChecks,
    LogCheck,
    ShutdownCheck,
    close_checks,
    health_routes,
    standard_checks,
)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class State:
    """Mutable inputs of the standard checks."""

    def __init__(self) -> None:
        self.synced = True
        self.ready = True
        self.clock = Clock()
        self.last_tick: float | None = self.clock.t
        self.shutdown = ShutdownCheck()
        self.log = LogCheck(clock=self.clock)

    def checks(self, resolution: float = 15.0) -> HealthChecks:
        return standard_checks(
            informers_synced=lambda: self.synced,
            storage_ready=lambda: self.ready,
            last_tick_start=lambda: self.last_tick,
            resolution_seconds=resolution,
            shutdown=self.shutdown,
            log_check=self.log,
            clock=self.clock,
        )


Get = Callable[[str], Awaitable[tuple[int, str, dict[str, str]]]]


@contextlib.asynccontextmanager
async def serve(checks: HealthChecks) -> AsyncIterator[Get]:
    app = web.Application()
    app.router.add_routes(health_routes(checks))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with aiohttp.ClientSession() as session:

        async def get(path: str) -> tuple[int, str, dict[str, str]]:
            async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                return resp.status, await resp.text(), dict(resp.headers)

        try:
            yield get
        finally:
            await close_checks(checks)
            await runner.cleanup()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


READY_VERBOSE = (
    "[+]ping ok\n[+]log ok\n[+]informer-sync ok\n[+]metric-storage-ready ok\n[+]shutdown ok\n"
    "readyz check passed\n"
)


def test_all_healthy_bodies_and_headers() -> None:
    state = State()

    async def scenario() -> None:
        async with serve(state.checks()) as get:
            for endpoint in ("livez", "readyz", "healthz"):
                status, body, headers = await get(f"/{endpoint}")
                assert (status, body) == (200, "ok")
                assert headers["Content-Type"] == "text/plain; charset=utf-8"
                assert headers["X-Content-Type-Options"] == "nosniff"
            assert (await get("/readyz?verbose"))[:2] == (200, READY_VERBOSE)
            assert (await get("/livez?verbose=1"))[:2] == (
                200,
                "[+]ping ok\n[+]log ok\n[+]metric-collection-timely ok\nlivez check passed\n",
            )
            assert (await get("/healthz?verbose"))[:2] == (
                200,
                "[+]ping ok\n[+]log ok\n[+]informer-sync ok\nhealthz check passed\n",
            )

    run(scenario)


def test_failure_withholds_reason_and_is_always_verbose() -> None:
    state = State()
    state.ready = False

    async def scenario() -> None:
        async with serve(state.checks()) as get:
            status, body, _ = await get("/readyz")
            assert status == 500
            assert body == (
                "[+]ping ok\n[+]log ok\n[+]informer-sync ok\n"
                "[-]metric-storage-ready failed: reason withheld\n[+]shutdown ok\n"
                "readyz check failed\n"
            )
            # liveness does not depend on storage readiness
            assert (await get("/livez"))[:2] == (200, "ok")

    run(scenario)


def test_exclude_skips_and_warns_about_unknown_names() -> None:
    state = State()
    state.ready = False
    state.synced = False

    async def scenario() -> None:
        async with serve(state.checks()) as get:
            q = "/readyz?exclude=metric-storage-ready&exclude=informer-sync"
            assert (await get(q))[:2] == (200, "ok")
            status, body, _ = await get(q + "&verbose&exclude=nope&exclude=also-nope")
            assert status == 200
            assert body == (
                "[+]ping ok\n[+]log ok\n[+]informer-sync excluded: ok\n"
                "[+]metric-storage-ready excluded: ok\n[+]shutdown ok\n"
                'warn: some health checks cannot be excluded: no matches for "also-nope","nope"\n'
                "readyz check passed\n"
            )
            # one excluded failing check still leaves the other failing
            status, body, _ = await get("/readyz?exclude=informer-sync")
            assert status == 500
            assert "[-]metric-storage-ready failed: reason withheld\n" in body

    run(scenario)


def test_single_check_paths() -> None:
    state = State()

    async def scenario() -> None:
        async with serve(state.checks()) as get:
            assert (await get("/readyz/shutdown"))[:2] == (200, "ok")
            state.shutdown.begin()
            assert (await get("/readyz/shutdown"))[:2] == (
                500,
                "internal server error: process is shutting down\n",
            )
            assert (await get("/readyz"))[0] == 500
            # shutdown is a readiness matter only: still alive and healthy
            assert (await get("/livez"))[:2] == (200, "ok")
            assert (await get("/healthz"))[:2] == (200, "ok")
            assert (await get("/readyz/ping"))[:2] == (200, "ok")
            assert (await get("/healthz/informer-sync"))[:2] == (200, "ok")
            assert (await get("/readyz/no-such-check"))[0] == 404
            assert (await get("/livez/shutdown"))[0] == 404

    run(scenario)


def test_collection_timely_window_is_one_and_a_half_resolutions() -> None:
    state = State()
    state.last_tick = None

    async def scenario() -> None:
        async with serve(state.checks(resolution=10.0)) as get:
            # before the first tick: alive
            assert (await get("/livez/metric-collection-timely"))[:2] == (200, "ok")
            state.last_tick = state.clock.t - 15.0  # exactly 1.5 × resolution
            assert (await get("/livez"))[:2] == (200, "ok")
            state.last_tick = state.clock.t - 15.5
            status, body, _ = await get("/livez")
            assert status == 500
            assert body == (
                "[+]ping ok\n[+]log ok\n[-]metric-collection-timely failed: reason withheld\n"
                "livez check failed\n"
            )
            # readiness is not about liveness
            assert (await get("/readyz"))[:2] == (200, "ok")

    run(scenario)


def test_informer_sync_gates_healthz_and_readyz_not_livez() -> None:
    state = State()
    state.synced = False

    async def scenario() -> None:
        async with serve(state.checks()) as get:
            assert (await get("/healthz"))[:2] == (
                500,
                "[+]ping ok\n[+]log ok\n[-]informer-sync failed: reason withheld\n"
                "healthz check failed\n",
            )
            assert (await get("/readyz"))[0] == 500
            assert (await get("/livez"))[0] == 200
            state.synced = True
            assert (await get("/healthz"))[:2] == (200, "ok")

    run(scenario)


def test_log_check_fails_when_flushes_stop() -> None:
    clock = Clock(0.0)
    check = LogCheck(clock=clock)

    async def scenario() -> None:
        assert check.check() is None  # starts the flush loop
        for _ in range(1000):  # the first flush runs in a worker thread
            if check.flushes:
                break
            await asyncio.sleep(0.01)
        assert check.flushes == 1
        clock.t = 119.0
        assert check.check() is None
        # the loop sleeps a real minute between flushes, so the fake clock sees none
        clock.t = 121.0
        assert check.check() == "logging blocked"
        await check.close()

    asyncio.run(scenario())
