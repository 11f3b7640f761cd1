"""`/livez`, `/readyz`, `/healthz`: named checks with kube-apiserver's exact body formats.

The bodies match k8s.io/apiserver's healthz handler byte for byte, because probes, dashboards
and people compare them: `ok`; with `?verbose` one `[+]name ok` line per check then
`<endpoint> check passed`; on failure status 500 with `[-]name failed: reason withheld` lines then
`<endpoint> check failed` (details only go to the log). `?exclude=name` (repeatable) skips a check
(`[+]name excluded: ok`, and a `warn:` line for names that match nothing); `/<endpoint>/<name>`
runs one check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from kubemetrics.gostrings import go_quote

log = logging.getLogger("kubemetrics.health")

TEXT_PLAIN = "text/plain; charset=utf-8"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HealthCheck(Protocol):
    """A named check. `check()` returns None when healthy, else the reason (logged, not served).

    Checks run on the event loop for every probe: they must be cheap and never block.
    """

    @property
    def name(self) -> str: ...

    def check(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class NamedCheck:
    name: str
    fn: Callable[[], str | None]

    def check(self) -> str | None:
        return self.fn()


def ping_check() -> NamedCheck:
    return NamedCheck("ping", lambda: None)


class LogCheck:
    """Fails when logging is blocked: a flush of every handler has not finished for 2 minutes.

    Like upstream's `log` check, the flush loop starts on first use; the flush itself runs in a
    worker thread so a stuck stream (full pipe, hung terminal) stalls only that thread.
    """

    name = "log"
    FLUSH_EVERY = 60.0
    MAX_AGE = 120.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last_verified: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.flushes = 0

    def check(self) -> str | None:
        if self._task is None:
            self._last_verified = self._clock()
            # without a running loop (a synchronous caller) judge by the last flush alone
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.get_running_loop().create_task(self._loop())
        assert self._last_verified is not None
        if self._clock() - self._last_verified < self.MAX_AGE:
            return None
        return "logging blocked"

    async def _loop(self) -> None:
        while True:
            await asyncio.to_thread(_flush_all_handlers)
            self._last_verified = self._clock()
            self.flushes += 1
            await asyncio.sleep(self.FLUSH_EVERY)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def _flush_all_handlers() -> None:
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for lg in loggers:
        if isinstance(lg, logging.Logger):
            for h in lg.handlers:
                h.flush()


class ShutdownCheck:
    """`shutdown`: healthy until `begin()` is called, so load balancers drain us first."""

    name = "shutdown"

    def __init__(self) -> None:
        self._shutting_down = False

    def begin(self) -> None:
        self._shutting_down = True

    def check(self) -> str | None:
        return "process is shutting down" if self._shutting_down else None


def collection_timely_check(
    last_tick_start: Callable[[], float | None],
    resolution_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> NamedCheck:
    """`metric-collection-timely`: a tick started within 1.5 × resolution.

    `last_tick_start` gives the start of the latest tick on `clock`'s scale, or None before the
    first one (healthy, as upstream). A tick whose scrapes all failed still counts: liveness is
    about the loop running, not the kubelets answering.
    """
    max_wait = 1.5 * resolution_seconds

    def check() -> str | None:
        started = last_tick_start()
        if started is None:
            return None
        waited = clock() - started
        if waited > max_wait:
            return (
                f"metric collection didn't finish on time: last tick started {waited:.3f}s ago "
                f"(max {max_wait:.3f}s)"
            )
        return None

    return NamedCheck("metric-collection-timely", check)


def flag_check(name: str, ok: Callable[[], bool], reason: str) -> NamedCheck:
    """A check that is healthy while `ok()` is true."""
    return NamedCheck(name, lambda: None if ok() else reason)


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """The checks of each endpoint, in the order they are reported."""

    livez: tuple[HealthCheck, ...]
    readyz: tuple[HealthCheck, ...]
    healthz: tuple[HealthCheck, ...]


def standard_checks(
    *,
    informers_synced: Callable[[], bool],
    storage_ready: Callable[[], bool],
    last_tick_start: Callable[[], float | None],
    resolution_seconds: float,
    shutdown: ShutdownCheck,
    log_check: LogCheck | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> HealthChecks:
    """SPEC §6's checks: readyz ping, log, informer-sync, metric-storage-ready, shutdown;
    livez ping, log, metric-collection-timely; healthz ping, log, informer-sync."""
    ping = ping_check()
    logc = log_check if log_check is not None else LogCheck()
    informer = flag_check("informer-sync", informers_synced, "informers not synced yet")
    storage = flag_check(
        "metric-storage-ready", storage_ready, "no node and pod metrics to serve yet"
    )
    timely = collection_timely_check(last_tick_start, resolution_seconds, clock)
    return HealthChecks(
        livez=(ping, logc, timely),
        readyz=(ping, logc, informer, storage, shutdown),
        healthz=(ping, logc, informer),
    )


def _text(body: str, status: int = 200) -> web.Response:
    resp = web.Response(body=body.encode(), status=status)
    resp.headers["Content-Type"] = TEXT_PLAIN
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _root_handler(endpoint: str, checks: Sequence[HealthCheck]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        excluded = set(request.query.getall("exclude", []))
        out: list[str] = []
        failed: list[str] = []
        log_lines: list[str] = []
        for c in checks:
            if c.name in excluded:
                excluded.discard(c.name)
                out.append(f"[+]{c.name} excluded: ok\n")
                continue
            reason = c.check()
            if reason is not None:
                # The endpoint is public: the reason goes to the log only.
                out.append(f"[-]{c.name} failed: reason withheld\n")
                log_lines.append(f"[-]{c.name} failed: {reason}")
                failed.append(c.name)
            else:
                out.append(f"[+]{c.name} ok\n")
        if excluded:
            names = ",".join(go_quote(n) for n in sorted(excluded))
            out.append(f"warn: some health checks cannot be excluded: no matches for {names}\n")
            log.warning(
                "cannot exclude some health checks, no health checks are installed matching %s",
                names,
            )
        if failed:
            log.info("%s check failed: %s\n%s", ",".join(failed), endpoint, "\n".join(log_lines))
            # Go's http.Error appends a newline to the message.
            return _text("".join(out) + f"{endpoint} check failed\n", status=500)
        if "verbose" not in request.query:
            return _text("ok")
        return _text("".join(out) + f"{endpoint} check passed\n")

    return handler


def _single_handler(check: HealthCheck) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        reason = check.check()
        if reason is not None:
            return _text(f"internal server error: {reason}\n", status=500)
        return _text("ok")

    return handler


def health_routes(checks: HealthChecks) -> list[web.RouteDef]:
    """Routes for the three endpoints and their per-check paths (any method, as upstream)."""
    routes: list[web.RouteDef] = []
    for endpoint, group in (
        ("livez", checks.livez),
        ("readyz", checks.readyz),
        ("healthz", checks.healthz),
    ):
        routes.append(web.route("*", f"/{endpoint}", _root_handler(endpoint, group)))
        for c in group:
            routes.append(web.route("*", f"/{endpoint}/{c.name}", _single_handler(c)))
    return routes


async def close_checks(checks: HealthChecks) -> None:
    """Stop background work owned by the checks (the log flush loop)."""
    seen: set[int] = set()
    for c in (*checks.livez, *checks.readyz, *checks.healthz):
        if isinstance(c, LogCheck) and id(c) not in seen:
            seen.add(id(c))
            await c.close()
