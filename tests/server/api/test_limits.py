"""`--max-requests-inflight` over real TLS: past the limit a request is answered 429 with
`Retry-After` and a `Status`, as kube-apiserver's max-in-flight filter does; `system:masters`
and the health probes are never turned away; slots come back when requests end."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from kubemetrics.api.hooks import ALLOW, Decision, RequestAttributes, UserInfo
from kubemetrics.api.limits import InflightLimit
from kubemetrics.api.routes import build_app
from kubemetrics.selfmetrics import SelfMetrics
from tests.helpers.kube import run, until
from tests.helpers.serving import api_deps, assert_too_many_requests, serve_tls

NODES = "/apis/metrics.k8s.io/v1beta1/nodes"


class HeaderUsers:
    """Test authenticator: the user named by `X-Test-User`, groups from `X-Test-Group`."""

    async def authenticate(self, request: web.Request) -> UserInfo:
        return UserInfo(
            request.headers.get("X-Test-User", "system:anonymous"),
            tuple(request.headers.getall("X-Test-Group", [])),
        )


class SlowFor:
    """Test authorizer: allows everyone, but keeps user `slow` waiting until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.waiting = 0

    async def authorize(self, attributes: RequestAttributes) -> Decision:
        if attributes.user.name == "slow":
            self.waiting += 1
            await self.release.wait()
        return ALLOW


def test_requests_past_the_inflight_limit_get_429(tmp_path: Path) -> None:
    async def main() -> None:
        metrics = SelfMetrics(15.0)
        limit = InflightLimit(2)
        metrics.sources.append(limit.collect)
        authorizer = SlowFor()
        deps = api_deps(
            metrics=metrics, authenticator=HeaderUsers(), admission=limit, authorizer=authorizer
        )
        async with (
            serve_tls(build_app(deps), tmp_path) as served,
            aiohttp.ClientSession(
                f"https://127.0.0.1:{served.port}",
                connector=aiohttp.TCPConnector(ssl=served.client),
            ) as session,
        ):

            async def get(path: str, user: str, *groups: str) -> tuple[int, dict[str, str], bytes]:
                headers = [("X-Test-User", user), *(("X-Test-Group", g) for g in groups)]
                async with session.get(path, headers=headers) as resp:
                    return resp.status, dict(resp.headers), await resp.read()

            slow = [asyncio.create_task(get(NODES, "slow")) for _ in range(2)]
            await until(lambda: authorizer.waiting == 2, "two requests in flight")
            status, headers, body = await get(NODES, "alice")
            assert_too_many_requests(status, headers, body)
            # The probes and system:masters are never turned away.
            assert (await get("/livez", "system:anonymous"))[0] == 200
            assert (await get(NODES, "admin", "system:masters"))[0] == 200
            text = metrics.render().decode()
            families = {f.name: f.samples for f in text_string_to_metric_families(text)}
            assert families["kubemetrics_http_requests_inflight"][0].value == 2
            rejected = families["kubemetrics_http_requests_rejected"]
            assert [(s.labels, s.value) for s in rejected] == [({"reason": "inflight"}, 1.0)]
            authorizer.release.set()
            assert [s for s, _, _ in await asyncio.gather(*slow)] == [200, 200]
            assert (await get(NODES, "alice"))[0] == 200
            assert limit.inflight == 0

    run(main())
