"""`--max-requests-inflight`: how many requests are authorized and handled at once.

kube-apiserver's max-in-flight filter, as the generic apiserver runs it (upstream
metrics-server inherits its default of 400 without exposing the flag): it sits after
authentication and before authorization, answers `429 Too Many Requests` with `Retry-After: 1`
past the limit (client-go retries that by itself), and lets `system:masters` through. The
health probes are let through as well, as kube-apiserver's flow control exempts them: a
kubelet probe turned away would restart a server that is merely busy.

The connection layer (`listener`) bounds what an unauthenticated peer can hold; this bounds
the work authenticated requests can start at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from kubemetrics.api.hooks import UserInfo
from kubemetrics.api.status import StatusError, too_many_requests
from kubemetrics.selfmetrics import MetricWriter

EXEMPT_GROUPS = frozenset({"system:masters"})
EXEMPT_PATHS = ("/livez", "/readyz", "/healthz")
RETRY_AFTER_SECONDS = 1


def _exempt(request: web.Request, user: UserInfo) -> bool:
    if EXEMPT_GROUPS.intersection(user.groups):
        return True
    path = request.path
    return any(path == p or path.startswith(p + "/") for p in EXEMPT_PATHS)


class InflightLimit:
    """The `api.hooks.Admission` for `--max-requests-inflight` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self.rejected = 0

    @contextlib.asynccontextmanager
    async def admit(self, request: web.Request, user: UserInfo) -> AsyncIterator[None]:
        if self.limit <= 0 or _exempt(request, user):
            yield
            return
        if self.inflight >= self.limit:
            self.rejected += 1
            raise StatusError(too_many_requests(RETRY_AFTER_SECONDS))
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    def collect(self, w: MetricWriter) -> None:
        name = "kubemetrics_http_requests_inflight"
        w.header(name, "Requests being authorized or handled, counted against the limit.", "gauge")
        w.sample(name, [], self.inflight)
        name = "kubemetrics_http_requests_rejected_total"
        w.header(name, "Requests answered 429 because too many were in flight.", "counter")
        w.sample(name, [("reason", "inflight")], self.rejected)
