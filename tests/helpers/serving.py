"""An aiohttp app served the way the server serves it: through `kubemetrics.listener` over
real TLS on 127.0.0.1 (a throwaway CA), with the listener's bracket outermost; and the API's
dependencies with nothing scraped, for tests about everything but the metrics."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from kubemetrics import _native
from kubemetrics.api.routes import ApiDependencies
from kubemetrics.health import ShutdownCheck, standard_checks
from kubemetrics.listener import Listener, ListenerLimits, bracket
from kubemetrics.selfmetrics import SelfMetrics
from tests.helpers.kube import CA


def api_deps(**kw: Any) -> ApiDependencies:
    """`ApiDependencies` over an empty store, healthy and ready; `kw` overrides any field."""
    kw.setdefault("snapshot", lambda: _native.Store(15.0).snapshot(0))
    kw.setdefault("inventory", _native.Inventory())
    kw.setdefault("metrics", SelfMetrics(15.0))
    kw.setdefault(
        "health",
        standard_checks(
            informers_synced=lambda: True,
            storage_ready=lambda: True,
            last_tick_start=lambda: None,
            resolution_seconds=15.0,
            shutdown=ShutdownCheck(),
        ),
    )
    return ApiDependencies(**kw)


def assert_too_many_requests(status: int, headers: Mapping[str, str], body: bytes) -> None:
    """The answer kube-apiserver's flow control gives: 429, `Retry-After: 1`, a `Status`."""
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert orjson.loads(body) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Too many requests, please try again later.",
        "reason": "TooManyRequests",
        "details": {"retryAfterSeconds": 1},
        "code": 429,
    }


@dataclass
class Served:
    listener: Listener
    port: int
    ca: CA
    client: ssl.SSLContext  # trusts the CA, presents no certificate

    def client_with_cert(self, cn: str, org: str | None = None) -> ssl.SSLContext:
        """A client context presenting a certificate the CA issued (CN `cn`, O `org`)."""
        pair = self.ca.issue(cn, server=False, org=org)
        ctx = ssl.create_default_context(cafile=str(self.ca.cert_file))
        ctx.load_cert_chain(pair.cert_file, pair.key_file)
        return ctx


@contextlib.asynccontextmanager
async def serve_tls(
    app: web.Application,
    tmp_path: Path,
    limits: ListenerLimits | None = None,
    *,
    client_ca: bool = False,
    ca: CA | None = None,
) -> AsyncIterator[Served]:
    """Serve `app` until the block ends (the serving pair from `ca`, else a new CA).
    `client_ca`: ask for client certificates from the same CA (they reach the app as
    `request.transport`'s peer certificate)."""
    limits = limits or ListenerLimits()
    ca = ca or CA(tmp_path)
    ctx = ca.server_context(ca.issue("server"))
    if client_ca:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=str(ca.cert_file))
    app.middlewares.insert(0, bracket)
    runner = web.AppRunner(app, **limits.runner_options())
    await runner.setup()
    assert runner.server is not None
    listener = Listener(runner.server, ctx, limits)
    await listener.start("127.0.0.1", 0)
    try:
        client = ssl.create_default_context(cafile=str(ca.cert_file))
        yield Served(listener, listener.addresses[0][1], ca, client)
    finally:
        await listener.close(1.0)
        await runner.cleanup()
