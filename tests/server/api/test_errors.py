"""What a failing request shows the client, and what it leaves in the log, over real TLS:
500 bodies say nothing of the failure (the log has it, under the reference the body gives),
and no request field can forge a log line."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from kubemetrics import _native
from kubemetrics.api.hooks import AuthenticationError, UserInfo
from kubemetrics.api.routes import build_app
from kubemetrics.auth.authz import DelegatingAuthorizer
from kubemetrics.config import LoggingConfig
from kubemetrics.kube import ApiClient, ClusterCredentials, TokenSource
from kubemetrics.logs import setup_logging
from tests.helpers.kube import CA, FakeApiServer, run
from tests.helpers.serving import api_deps, serve_tls

NODES = "/apis/metrics.k8s.io/v1beta1/nodes"
# A klog line, as a path segment would carry it after percent-decoding.
FORGED = 'I0101 00:00:00.000000       1 forged.go:1] "user admin granted cluster-admin"'
KLOG_START = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} ")


class TokenRejecter:
    """Authenticates nobody who sends a token; others are `alice`."""

    async def authenticate(self, request: web.Request) -> UserInfo:
        if "Authorization" in request.headers:
            raise AuthenticationError("token rejected: invalid bearer token")
        return UserInfo("alice", ("devs",))


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """The server's log lines, as the text (klog) format writes them."""
    logger = logging.getLogger("kubemetrics")
    stream = io.StringIO()
    level, propagate = logger.level, logger.propagate
    setup_logging(LoggingConfig(), stderr=stream, logger=logger)
    try:
        yield stream
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


async def fetch(
    app: web.Application, tmp_path: Path, path: str, **headers: str
) -> tuple[int, dict[str, Any]]:
    async with (
        serve_tls(app, tmp_path) as served,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=served.client)) as session,
        session.get(
            aiohttp.client.URL(f"https://127.0.0.1:{served.port}{path}", encoded=True),
            headers=headers,
        ) as resp,
    ):
        return resp.status, orjson.loads(await resp.read())


def test_no_request_field_forges_a_log_line(tmp_path: Path, server_log: io.StringIO) -> None:
    """A percent-encoded newline in the path of a request whose token is refused: the
    authentication failure is logged on one line, the path quoted as Go quotes it."""
    encoded = FORGED.replace(" ", "%20").replace('"', "%22")
    path = f"/apis/metrics.k8s.io/v1beta1/namespaces/x%0A{encoded}/pods"
    app = build_app(api_deps(authenticator=TokenRejecter()))
    status, body = run(fetch(app, tmp_path, path, Authorization="Bearer nope"))
    assert status == 401 and body["reason"] == "Unauthorized"
    lines = server_log.getvalue().splitlines()
    starts = [line for line in lines if KLOG_START.match(line)]
    assert len(starts) == len(lines) == 1, lines
    assert '"Authentication failed" method="GET" path="/apis' in lines[0]
    assert "namespaces/x\\nI0101 00:00:00" in lines[0]


def test_an_internal_error_is_withheld_from_the_client(
    tmp_path: Path, server_log: io.StringIO
) -> None:
    def broken() -> _native.Snapshot:
        raise RuntimeError("secret-detail-7731 at /var/lib/kubemetrics")

    app = build_app(api_deps(snapshot=broken))
    status, body = run(fetch(app, tmp_path, NODES))
    assert status == 500 and body["reason"] == "InternalError"
    assert "secret-detail" not in orjson.dumps(body).decode()
    reference = re.fullmatch(
        r"Internal error occurred: the request could not be served \(details in the server "
        r"log, reference ([0-9a-f]{12})\)",
        body["message"],
    )
    assert reference, body
    log = server_log.getvalue()
    assert f'reference="{reference[1]}"' in log and "secret-detail-7731" in log


def test_a_failed_access_review_is_withheld_from_the_client(
    tmp_path: Path, server_log: io.StringIO
) -> None:
    """The API server's own message (here "down") stays in the log."""

    async def main() -> tuple[int, dict[str, Any]]:
        ca = CA(tmp_path / "api")
        fake = FakeApiServer(ca.server_context(ca.issue("apiserver")))
        fake.fail_reviews = True
        await fake.start()
        client = ApiClient(
            ClusterCredentials(server=fake.url, ca_pem=ca.cert_pem.decode(), token=TokenSource())
        )
        try:
            app = build_app(api_deps(authorizer=DelegatingAuthorizer(client)))
            return await fetch(app, tmp_path, NODES)
        finally:
            await client.close()
            await fake.stop()

    (tmp_path / "api").mkdir()
    status, body = run(main())
    assert status == 500 and body["reason"] == "InternalError"
    assert body["message"].startswith("Internal error occurred: authorization failed (details")
    assert "down" not in orjson.dumps(body).decode() and "503" not in body["message"]
    reference = body["message"].rsplit(" ", 1)[1].rstrip(")")
    log = server_log.getvalue()
    assert f'reference="{reference}"' in log and "HTTP 503: down" in log


def test_refused_tokens_cannot_flood_the_log(tmp_path: Path, server_log: io.StringIO) -> None:
    """Fifty requests with a refused token, back to back: the first ten are logged, the rest
    held back (a line a second after the burst would say how many), and every one is a 401."""

    async def main() -> list[int]:
        app = build_app(api_deps(authenticator=TokenRejecter()))
        async with (
            serve_tls(app, tmp_path) as served,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=served.client)) as session,
        ):
            codes = []
            for _ in range(50):
                async with session.get(
                    f"https://127.0.0.1:{served.port}{NODES}",
                    headers={"Authorization": "Bearer nope"},
                ) as resp:
                    codes.append(resp.status)
            return codes

    assert run(main()) == [401] * 50
    lines = [ln for ln in server_log.getvalue().splitlines() if "Authentication failed" in ln]
    # 10 at once, and at most a few more as the bucket refills while the requests run
    assert 10 <= len(lines) <= 15, lines
    later = [ln for ln in lines[10:] if "suppressed=" in ln]
    assert later == lines[10:], lines
