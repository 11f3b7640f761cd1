"""`GET /shard/v1/points`: this replica's own latest points, for its peers (`--sharding=lease`).

The body is what the Rust core encoded at the end of the last cycle (`Store.export_points`):
compact, compressed, built once per cycle, so a peer's request costs no encoding. The path is
no open endpoint: a caller is authenticated like any other and must be allowed what a
kubelet asks of a metrics scraper, `get` on `nodes/metrics` (the attributes below), which the
server's own ServiceAccount already has through upstream's ClusterRole; no new RBAC verb.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from kubemetrics.api.hooks import RequestAttributes, UserInfo
from kubemetrics.api.status import Status, StatusError

POINTS_PATH = "/shard/v1/points"
POINTS_TYPE = "application/vnd.kubemetrics.points"

PointsSource = Callable[[], bytes | None]


def points_attributes(user: UserInfo) -> RequestAttributes:
    """The request as kube-apiserver's RBAC sees a kubelet's /metrics: get nodes/metrics."""
    return RequestAttributes(
        user=user,
        verb="get",
        path=POINTS_PATH,
        resource_request=True,
        api_group="",
        api_version="v1",
        resource="nodes",
        subresource="metrics",
    )


def points_handler(source: PointsSource) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        body = source()
        if body is None:
            raise StatusError(
                Status(
                    code=503,
                    reason="ServiceUnavailable",
                    message="no points yet: the first scrape cycle has not finished",
                )
            )
        return web.Response(body=body, content_type=POINTS_TYPE)

    return handler
