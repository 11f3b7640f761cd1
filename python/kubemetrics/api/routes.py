"""The HTTP surface: metrics.k8s.io (v1beta1, v1), discovery, OpenAPI, `/version`, health probes
and `/metrics`, as one aiohttp application.

Build it with `build_app(ApiDependencies(...))`. Handlers never touch per-pod data in Python:
they negotiate and authorize, then hand the request to the current snapshot's served `View`
(built once per scrape cycle), which selects and encodes; `api.stream` sends the body in bounded
chunks within the server-wide send budget. The freshness histogram takes one vectorised update
per response.

Every request passes, in order: the error middleware (turns failures into kube-apiserver-shaped
`Status` bodies), authentication, authorization (`api.hooks`; allow-all by default), then the
route.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from kubemetrics import _native
from kubemetrics.api import discovery, openapi
from kubemetrics.api.hooks import (
    Admission,
    AdmitAll,
    AllowAll,
    AllowAnonymous,
    AuthenticationError,
    Authenticator,
    Authorizer,
    RequestAttributes,
    UserInfo,
    forbidden_message,
)
from kubemetrics.api.negotiation import (
    SUPPORTED_MEDIA_TYPES,
    Format,
    Negotiated,
    negotiate,
)
from kubemetrics.api.points import POINTS_PATH, PointsSource, points_attributes, points_handler
from kubemetrics.api.status import (
    METRICS_GROUP,
    StatusError,
    bad_request,
    forbidden,
    method_not_allowed,
    method_not_supported,
    not_acceptable,
    not_found,
    path_not_found,
    status_response,
    unauthorized,
    withheld_internal_error,
)
from kubemetrics.api.stream import accepts_gzip, check_room, send, send_budget
from kubemetrics.budget import ByteBudget
from kubemetrics.config import DEFAULT_REQUEST_TIMEOUT
from kubemetrics.gostrings import go_quote
from kubemetrics.health import HealthChecks, health_routes
from kubemetrics.logs import LogThrottle, clip, kv
from kubemetrics.selfmetrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from kubemetrics.selfmetrics import SelfMetrics

log = logging.getLogger("kubemetrics.api")

JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SnapshotSource = Callable[[], _native.Snapshot]
Clock = Callable[[], float]
T = TypeVar("T")

_VERSION_PATTERN = "|".join(discovery.VERSIONS)

# Selection and response planning release the GIL; when a query examines this many candidates
# (its `cost`: a full list on a big cluster, a selector only negative terms can express) they
# run on a worker thread so the event loop keeps answering meanwhile. Below it (an HPA's
# namespace + selector list, a get) the thread hop costs more than the work.
OFFLOAD_ITEMS = 4096
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # Go's strconv.ParseBool
# Table `includeObject` values → the encoder's table formats.
_TABLE_ROW_OBJECT = {
    "": "table",
    "Metadata": "table",
    "Object": "table-object",
    "None": "table-none",
}


@dataclass(frozen=True)
class ApiDependencies:
    """What the HTTP layer needs; the app wires the real objects in.

    - `snapshot`: returns the current `Snapshot` (the app replaces it once per scrape cycle;
      before the first cycle, an empty store's snapshot).
    - `inventory`: the `Inventory` discovery maintains (Running pods, selected nodes, labels).
    - `health`: the checks behind `/livez`, `/readyz`, `/healthz`.
    - `metrics`: `SelfMetrics`, rendered at `/metrics` and fed the API freshness histogram.
    - `clock`: wall-clock seconds (`creationTimestamp`, freshness).
    - `authenticator`/`authorizer`: the security slot (issue 5); defaults allow everything.
    - `admission`: entered between the two (`--max-requests-inflight`); default no limit.
    - `send_budget`: bytes held for clients across the server (`api.stream`).
    - `response_deadline`: seconds a response may take to be written (`--request-timeout`).
    """

    snapshot: SnapshotSource
    inventory: _native.Inventory
    health: HealthChecks
    metrics: SelfMetrics
    clock: Clock = time.time
    send_budget: ByteBudget = field(default_factory=send_budget)
    response_deadline: float = DEFAULT_REQUEST_TIMEOUT
    authenticator: Authenticator = field(default_factory=AllowAnonymous)
    authorizer: Authorizer = field(default_factory=AllowAll)
    admission: Admission = field(default_factory=AdmitAll)
    # --sharding=lease: this replica's own points for its peers (`api/points.py`)
    peer_points: PointsSource | None = None
    server_version: str = _native.__version__
    git_commit: str = ""
    build_date: str = ""


def _request_attributes(request: web.Request, user: UserInfo) -> RequestAttributes:
    """kube-apiserver's RequestInfoFactory, for the paths this server can serve."""
    path = request.path
    if path == POINTS_PATH:
        return points_attributes(user)
    method = request.method.upper()
    parts = [p for p in path.strip("/").split("/") if p] if path != "/" else []
    if len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
        namespace = ""
        if rest[0] == "namespaces" and len(rest) > 1:
            namespace = rest[1]
            if len(rest) > 2:
                rest = rest[2:]
        resource = rest[0]
        name = rest[1] if len(rest) > 1 else ""
        subresource = rest[2] if len(rest) > 2 else ""
        verb = {
            "GET": "get",
            "HEAD": "get",
            "POST": "create",
            "PUT": "update",
            "PATCH": "patch",
            "DELETE": "delete",
        }.get(method, method.lower())
        if not name and verb == "get":
            verb = "watch" if request.query.get("watch", "") in _TRUE else "list"
            # kube-apiserver names the object a fieldSelector pins down, so RBAC rules with
            # resourceNames apply to `list ?fieldSelector=metadata.name=x` as to `get x`.
            name = _selected_name(request.query.get("fieldSelector", ""))
        elif not name and verb == "delete":
            verb = "deletecollection"
        return RequestAttributes(
            user=user,
            verb=verb,
            path=path,
            resource_request=True,
            api_group=group,
            api_version=version,
            resource=resource,
            subresource=subresource,
            namespace=namespace,
            name=name,
        )
    return RequestAttributes(user=user, verb=method.lower(), path=path, resource_request=False)


def _selected_name(field_selector: str) -> str:
    """The name a list's fieldSelector requires (`metadata.name=x` or `==x`), as
    kube-apiserver's RequestInfo takes it: terms in sorted order, the first match wins;
    a malformed selector or a name that is no valid path segment gives none."""
    try:
        terms = _native.parse_field_selector(field_selector)
    except _native.SelectorError:
        return ""
    found = next((v for f, op, v in terms if f == "metadata.name" and op == "="), "")
    if not found or found in (".", "..") or "/" in found or "%" in found:
        return ""
    return found


def _errors_middleware() -> Middleware:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except StatusError as e:
            return status_response(e.status)
        except web.HTTPNotFound:
            return status_response(path_not_found())
        except web.HTTPMethodNotAllowed:
            return status_response(method_not_allowed())
        except web.HTTPException:
            raise
        except Exception:
            status, reference = withheld_internal_error("the request could not be served")
            log.exception(
                "Internal error serving a request",
                extra=kv(method=request.method, path=clip(request.path), reference=reference),
            )
            return status_response(status)

    return errors


def _auth_middleware(
    authenticator: Authenticator, admission: Admission, authorizer: Authorizer
) -> Middleware:
    # Anyone can send a bogus token as often as they like: a line each would let them write
    # the log at network speed. Past a burst, a line a second says how many were held back.
    throttle = LogThrottle(rate=1.0, burst=10)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            user = await authenticator.authenticate(request)
        except AuthenticationError as e:
            held = throttle.admit()
            if held is not None:
                pairs: dict[str, object] = {
                    "method": request.method,
                    "path": clip(request.path),
                    "err": clip(str(e)),
                }
                if held:
                    pairs["suppressed"] = held
                log.info("Authentication failed", extra=kv(**pairs))
            raise StatusError(unauthorized()) from None
        async with admission.admit(request, user):
            attrs = _request_attributes(request, user)
            decision = await authorizer.authorize(attrs)
            if not decision.allowed:
                msg = forbidden_message(attrs)
                if decision.reason:
                    msg = f"{msg}: {decision.reason}"
                raise StatusError(forbidden(attrs.api_group, attrs.resource, attrs.name, msg))
            return await handler(request)

    return auth


async def _call(offload: bool, fn: Callable[..., T], *args: object) -> T:
    if offload:
        return await asyncio.to_thread(fn, *args)
    return fn(*args)


class _MetricsApi:
    """Handlers of the metrics.k8s.io resources."""

    def __init__(self, deps: ApiDependencies) -> None:
        self._deps = deps

    @staticmethod
    def _negotiate(request: web.Request) -> Negotiated:
        chosen = negotiate(request.headers.get("Accept"))
        if chosen is None:
            raise StatusError(not_acceptable(SUPPORTED_MEDIA_TYPES))
        return chosen

    @staticmethod
    def _fmt(request: web.Request, chosen: Negotiated) -> str:
        """The encoder's format; for a Table, what each row's `object` holds (`includeObject`:
        Metadata by default, Object for the whole item, None for null), as kube-apiserver does."""
        if chosen.format is not Format.TABLE:
            return str(chosen.format.value)
        include = request.query.get("includeObject", "")
        fmt = _TABLE_ROW_OBJECT.get(include)
        if fmt is None:
            raise StatusError(bad_request(f"unrecognized includeObject value: {go_quote(include)}"))
        return fmt

    @staticmethod
    def _selectors(request: web.Request, resource: str) -> tuple[str, str]:
        if request.query.get("watch", "") in _TRUE:
            raise StatusError(method_not_supported(METRICS_GROUP, resource, "watch"))
        return request.query.get("labelSelector", ""), request.query.get("fieldSelector", "")

    def _view(self) -> _native.View:
        # Built by the scrape cycle before it publishes the snapshot; only a snapshot nobody
        # prepared (tests, the empty one before the first cycle) builds it here.
        return self._deps.snapshot().view(self._deps.inventory)

    async def _send(
        self, request: web.Request, chosen: Negotiated, body: _native.Body, now: float
    ) -> web.StreamResponse:
        self._deps.metrics.observe_freshness(now, body.timestamps_ms())
        deps = self._deps
        return await send(
            request, body, chosen.content_type, deps.send_budget, deps.response_deadline
        )

    async def _list(
        self, request: web.Request, kind: str, namespace: str | None
    ) -> web.StreamResponse:
        label, fields = self._selectors(request, kind)
        chosen = self._negotiate(request)
        check_room(self._deps.send_budget)
        try:
            query = self._view().query(kind, namespace, label, fields)
        except _native.SelectorError as e:
            raise StatusError(bad_request(str(e))) from None
        fmt = self._fmt(request, chosen)
        now = self._deps.clock()
        body = await _call(
            query.cost >= OFFLOAD_ITEMS,
            functools.partial(
                query.respond,
                api_version=request.match_info["version"],
                fmt=fmt,
                now_s=now,
                table_version=chosen.table_version,
                gzip=accepts_gzip(request),
            ),
        )
        return await self._send(request, chosen, body, now)

    async def _get(
        self, request: web.Request, kind: str, namespace: str, name: str
    ) -> web.StreamResponse:
        chosen = self._negotiate(request)
        check_room(self._deps.send_budget)
        view = self._view()
        now = self._deps.clock()
        version = request.match_info["version"]
        try:
            fmt = self._fmt(request, chosen)
        except StatusError:
            # A missing object is a 404 before its (Table) rendering is looked at.
            if view.get(kind, namespace, name, api_version=version, fmt="json", now_s=now):
                raise
            fmt = "json"
        body = view.get(
            kind,
            namespace,
            name,
            api_version=version,
            fmt=fmt,
            now_s=now,
            table_version=chosen.table_version,
            gzip=accepts_gzip(request),
        )
        if body is None:
            if kind == "nodes":
                raise StatusError(not_found(METRICS_GROUP, "nodemetrics", name))
            raise StatusError(not_found(METRICS_GROUP, "podmetrics", f"{namespace}/{name}"))
        return await self._send(request, chosen, body, now)

    async def list_nodes(self, request: web.Request) -> web.StreamResponse:
        return await self._list(request, "nodes", None)

    async def get_node(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if not self._deps.inventory.has_node(name):
            # upstream: the typed node lister's NotFound (resource "node", core group)
            self._negotiate(request)
            raise StatusError(not_found("", "node", name))
        return await self._get(request, "nodes", "", name)

    async def list_pods(self, request: web.Request) -> web.StreamResponse:
        return await self._list(request, "pods", request.match_info.get("namespace"))

    async def get_pod(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        name = request.match_info["name"]
        if not self._deps.inventory.has_pod(namespace, name):
            # upstream: the pod metadata lister's NotFound (resource "pods", core group)
            self._negotiate(request)
            raise StatusError(not_found("", "pods", name))
        return await self._get(request, "pods", namespace, name)


def _static(body: bytes, content_type: str = JSON) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type=content_type)

    return handler


def _openapi_handlers(docs: openapi.OpenAPIDocuments) -> tuple[Handler, Handler, Handler]:
    async def v2(request: web.Request) -> web.StreamResponse:
        if docs.v2_etag in request.headers.getall("If-None-Match", []):
            return web.Response(status=304, headers={"ETag": docs.v2_etag})
        return web.Response(body=docs.v2, content_type=JSON, headers={"ETag": docs.v2_etag})

    async def v3_index(request: web.Request) -> web.StreamResponse:
        return web.Response(body=docs.v3_index, content_type=JSON)

    async def v3_group_version(request: web.Request) -> web.StreamResponse:
        key = f"apis/{METRICS_GROUP}/{request.match_info['version']}"
        data = docs.v3_group_versions[key]
        current = docs.v3_hashes[key]
        etag = f'"{current}"'
        wanted = request.query.get("hash")
        if wanted is not None and wanted != current:
            # kube-openapi redirects a stale hash to the current document
            raise web.HTTPMovedPermanently(f"/openapi/v3/{key}?hash={current}")
        headers = {"ETag": etag}
        if wanted is not None:
            # content-addressed: a hashed URL never changes
            headers["Cache-Control"] = "public, immutable"
        else:
            headers["Cache-Control"] = "no-cache, private"
        if etag in request.headers.getall("If-None-Match", []):
            return web.Response(status=304, headers=headers)
        return web.Response(body=data, content_type=JSON, headers=headers)

    return v2, v3_index, v3_group_version


def _metrics_handler(metrics: SelfMetrics) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.Response(body=metrics.render())
        resp.headers["Content-Type"] = METRICS_CONTENT_TYPE
        return resp

    return handler


def build_app(deps: ApiDependencies, *, client_max_size: int = 1 << 20) -> web.Application:
    """The whole HTTP surface as an aiohttp Application (serve it with TLS via AppRunner)."""
    app = web.Application(
        middlewares=[
            _errors_middleware(),
            _auth_middleware(deps.authenticator, deps.admission, deps.authorizer),
        ],
        client_max_size=client_max_size,
    )
    api = _MetricsApi(deps)
    docs = openapi.build_documents(deps.server_version)
    oa_v2, oa_v3_index, oa_v3_gv = _openapi_handlers(docs)
    group = f"/apis/{METRICS_GROUP}"
    v = f"{{version:{_VERSION_PATTERN}}}"
    r = app.router

    def get(path: str, handler: Handler, *, slash: bool = False) -> None:
        r.add_get(path, handler)
        if slash:
            r.add_get(path + "/", handler)

    get("/apis", _static(discovery.api_group_list()), slash=True)
    get(group, _static(discovery.api_group()), slash=True)
    for version in discovery.VERSIONS:
        get(f"{group}/{version}", _static(discovery.api_resource_list(version)), slash=True)
    get(f"{group}/{v}/nodes", api.list_nodes, slash=True)
    get(f"{group}/{v}/nodes/{{name}}", api.get_node)
    get(f"{group}/{v}/pods", api.list_pods, slash=True)
    get(f"{group}/{v}/namespaces/{{namespace}}/pods", api.list_pods, slash=True)
    get(f"{group}/{v}/namespaces/{{namespace}}/pods/{{name}}", api.get_pod)
    get(
        "/version",
        _static(discovery.version_info(deps.server_version, deps.git_commit, deps.build_date)),
    )
    get("/openapi/v2", oa_v2)
    get("/openapi/v3", oa_v3_index, slash=True)
    get(f"/openapi/v3{group}/{v}", oa_v3_gv)
    r.add_route("*", "/metrics", _metrics_handler(deps.metrics))
    r.add_routes(health_routes(deps.health))
    if deps.peer_points is not None:
        get(POINTS_PATH, points_handler(deps.peer_points))

    # "/" lists every path, as kube-apiserver's index does.
    paths = sorted(
        {
            res.canonical
            for res in r.resources()
            if "{" not in res.canonical and res.canonical != "/"
        }
        | {f"{group}/{ver}" for ver in discovery.VERSIONS}
    )
    get("/", _static(orjson.dumps({"paths": paths}) + b"\n"))
    return app
