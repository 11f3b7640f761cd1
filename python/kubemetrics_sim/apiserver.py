"""The simulated kube-apiserver: discovery, nodes/pods/namespaces/configmaps list/get/watch,
TokenReview/SubjectAccessReview, the metrics.k8s.io aggregation proxy, and the /_sim control API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .aggregator import Aggregator
from .cluster import Cluster
from .errors import ApiError, status_body
from .kubelet import Fleet, user_from_cert
from .objects import OBJECT_GROUPS, Objects, discovery_resources, not_found
from .protowire import decode_review
from .rbac import Attributes, UserInfo
from .selectors import SelectorError, parse_fields, parse_labels
from .store import FIELDS, Event, KObj, Watcher, decode_continue, encode_continue
from .tables import table

log = logging.getLogger("kubemetrics_sim.apiserver")

JSON = "application/json"
VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-kubemetrics-sim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.4",
    "compiler": "gc",
    "platform": "linux/amd64",
}

# resource → (kind, namespaced, verbs, short names)
CORE: dict[str, tuple[str, bool, list[str], list[str]]] = {
    "configmaps": ("ConfigMap", True, ["get", "list", "watch"], ["cm"]),
    "namespaces": ("Namespace", False, ["get", "list", "watch"], ["ns"]),
    "nodes": ("Node", False, ["get", "list", "watch"], ["no"]),
    "pods": ("Pod", True, ["delete", "get", "list", "watch"], ["po"]),
}
GROUPS: dict[str, list[dict[str, Any]]] = {
    "authentication.k8s.io": [
        {
            "name": "selfsubjectreviews",
            "singularName": "selfsubjectreview",
            "namespaced": False,
            "kind": "SelfSubjectReview",
            "verbs": ["create"],
        },
        {
            "name": "tokenreviews",
            "singularName": "tokenreview",
            "namespaced": False,
            "kind": "TokenReview",
            "verbs": ["create"],
        },
    ],
    "authorization.k8s.io": [
        {
            "name": "localsubjectaccessreviews",
            "singularName": "localsubjectaccessreview",
            "namespaced": True,
            "kind": "LocalSubjectAccessReview",
            "verbs": ["create"],
        },
        {
            "name": "selfsubjectaccessreviews",
            "singularName": "selfsubjectaccessreview",
            "namespaced": False,
            "kind": "SelfSubjectAccessReview",
            "verbs": ["create"],
        },
        {
            "name": "subjectaccessreviews",
            "singularName": "subjectaccessreview",
            "namespaced": False,
            "kind": "SubjectAccessReview",
            "verbs": ["create"],
        },
    ],
}
READ_VERBS = ("get", "list", "watch")
METRICS_GROUP = "metrics.k8s.io"
METRICS_VERSIONS = ("v1", "v1beta1")  # preferred first


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type=JSON)


def error_response(e: ApiError) -> web.Response:
    return json_response(status_body(e.code, e.reason, e.message, e.details), e.code)


@dataclass
class RequestInfo:
    is_resource: bool
    verb: str
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    rest: tuple[str, ...] = ()

    def attributes(self, path: str) -> Attributes:
        if not self.is_resource:
            return Attributes(verb=self.verb, path=path)
        return Attributes(
            verb=self.verb,
            api_group=self.api_group,
            resource=self.resource,
            subresource=self.subresource,
            namespace=self.namespace,
            name=self.name,
        )


def _true(v: str | None) -> bool:
    # Go's strconv.ParseBool spellings (kubernetes-asyncio sends "True").
    return v in ("1", "t", "T", "true", "TRUE", "True")


def request_info(method: str, path: str, query: Any) -> RequestInfo:
    """Like k8s RequestInfoFactory: split an API path into resource attributes."""
    parts = [p for p in path.strip("/").split("/") if p]
    http_verb = {
        "GET": "get",
        "HEAD": "get",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }.get(method, method.lower())
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(False, http_verb)
    if parts[0] == "api":
        if len(parts) < 3:
            return RequestInfo(False, http_verb)
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return RequestInfo(False, http_verb)
        group, version, rest = parts[1], parts[2], parts[3:]
    info = RequestInfo(True, http_verb, api_group=group, api_version=version)
    if rest[0] == "watch":  # legacy /watch/ prefix
        rest = rest[1:]
        info.verb = "watch"
    if len(rest) >= 3 and rest[0] == "namespaces":
        info.namespace = rest[1]
        rest = rest[2:]
    elif rest[0] == "namespaces" and len(rest) == 2:
        info.namespace = rest[1]
    if not rest:
        return RequestInfo(False, http_verb)
    info.resource = rest[0]
    if len(rest) >= 2:
        info.name = rest[1]
    if len(rest) >= 3:
        info.subresource = rest[2]
        info.rest = tuple(rest[3:])
    if info.verb != "watch":
        if method in ("GET", "HEAD") and not info.name:
            info.verb = "watch" if _true(query.get("watch")) else "list"
        elif method == "DELETE" and not info.name:
            info.verb = "deletecollection"
    return info


def negotiate(accept: str, watch: bool, single: bool) -> str:
    """'json', 'meta' or 'table' from the Accept header; '' when nothing acceptable."""
    if not accept:
        return "json"
    want_meta = "PartialObjectMetadata" if (single or watch) else "PartialObjectMetadataList"
    for item in accept.split(","):
        fields = [f.strip() for f in item.split(";")]
        mt = fields[0].lower()
        params = {}
        for f in fields[1:]:
            k, _, v = f.partition("=")
            params[k.strip()] = v.strip()
        if mt not in ("application/json", "*/*", "application/*", "application/yaml"):
            continue
        as_ = params.get("as")
        if as_ is None:
            return "json"
        if params.get("g") != "meta.k8s.io" or params.get("v") not in ("v1", "v1beta1"):
            continue
        if as_ == "Table":
            return "table"
        if as_ in (want_meta, "PartialObjectMetadata", "PartialObjectMetadataList"):
            return "meta"
    return ""


def _meta_obj(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": d["metadata"],
    }


class ApiServer:
    def __init__(self, cluster: Cluster, fleet: Fleet, aggregator: Aggregator) -> None:
        self.cluster = cluster
        self.fleet = fleet
        self.aggregator = aggregator
        self.store = cluster.store
        self.objects = Objects(cluster.store)
        self.enc_cache: dict[tuple[str, str, str], tuple[int, bytes, bytes]] = {}
        self.watches = 0
        # Reviews answered, by resource (tokenreviews, subjectaccessreviews, ...): lets tests
        # check a client's review caching through the control API.
        self.reviews_served: dict[str, int] = {}
        self.app = web.Application(middlewares=[self.middleware], client_max_size=16 << 20)
        self.app.router.add_route("*", "/{tail:.*}", self.dispatch)
        self.runner: web.AppRunner | None = None
        self.listening: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)
        self.lists: dict[str, int] = {}  # completed list requests by resource (relists show)
        self.outages = 0
        self._outage: asyncio.Task[None] | None = None
        self.control: Callable[[web.Request, UserInfo], Awaitable[web.StreamResponse]] | None = None
        self.attached_to = ""  # a real API server's URL: then only /_sim is served here

    # --- serving ---------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext:
        p = self.cluster.files.paths
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(p["apiserver_cert"], p["apiserver_key"])
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=p["ca"])
        return ctx

    async def start(self, host: str, port: int) -> int:
        self.runner = web.AppRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=1.0,
        )
        await self.runner.setup()
        self._ssl = self.ssl_context()
        await self._listen(host, port)
        return self.address[1]

    async def _listen(self, host: str, port: int) -> None:
        assert self.runner is not None and self.runner.server is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.listening = await asyncio.get_running_loop().create_server(
            self.runner.server, sock=sock, ssl=self._ssl
        )
        self.address = (host, int(sock.getsockname()[1]))

    def outage(self, seconds: float, *, forget_history: bool = False) -> None:
        """Refuse connections for `seconds`, as a restarting API server does: the listening
        socket closes at once (connection refused), every open connection (watches included)
        is dropped a moment later (after the caller's answer is out), and the same address
        listens again afterwards. `forget_history`: the watch history starts over then (a
        new watch cache), so resuming watches get 410."""
        if self._outage is not None and not self._outage.done():
            raise ValueError("an outage is already under way")
        self.outages += 1
        self._outage = asyncio.get_running_loop().create_task(
            self._run_outage(seconds, forget_history)
        )

    async def _run_outage(self, seconds: float, forget_history: bool) -> None:
        assert self.runner is not None and self.runner.server is not None
        if self.listening is not None:
            self.listening.close()
            self.listening = None
        log.info("API server outage: refusing connections for %gs", seconds)
        await asyncio.sleep(0.2)
        for handler in self.runner.server.connections:
            handler.force_close()
        await asyncio.sleep(seconds - 0.2)
        if forget_history:
            self.store.forget_history()
        while True:
            try:
                await self._listen(*self.address)
                break
            except OSError as e:  # the port taken meanwhile: keep trying, say so
                log.error("API server cannot listen again on %s: %s", self.address, e)
                await asyncio.sleep(1.0)
        log.info("API server outage over")

    async def stop(self) -> None:
        if self._outage is not None:
            self._outage.cancel()
        if self.listening is not None:
            self.listening.close()
        await self.aggregator.stop()
        if self.runner is not None:
            await self.runner.cleanup()

    # --- authentication / authorization ----------------------------------------------------
    def authenticate(self, request: web.Request) -> UserInfo:
        header = request.headers.get("Authorization", "")
        if header:
            if header[:7].lower() != "bearer ":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            user = self.cluster.rbac.authenticate(header[7:].strip())
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            return user
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        user = user_from_cert(peer)
        if user is not None:
            return user
        return UserInfo("system:anonymous", ("system:unauthenticated",))

    def authorize(self, user: UserInfo, info: RequestInfo, path: str) -> None:
        ok, _ = self.cluster.rbac.authorize(user, info.attributes(path))
        if ok:
            return
        if user.name == "system:anonymous" and not info.is_resource:
            raise ApiError(
                403, "Forbidden", f'forbidden: User "system:anonymous" cannot get path "{path}"', {}
            )
        if not info.is_resource:
            raise ApiError(
                403,
                "Forbidden",
                f'forbidden: User "{user.name}" cannot {info.verb} path "{path}"',
                {},
            )
        res = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        grp = f"{info.resource}.{info.api_group}" if info.api_group else info.resource
        who = f'{grp} "{info.name}"' if info.name else grp
        scope = f'in the namespace "{info.namespace}"' if info.namespace else "at the cluster scope"
        raise ApiError(
            403,
            "Forbidden",
            f'{who} is forbidden: User "{user.name}" cannot {info.verb} resource "{res}" in API '
            f'group "{info.api_group}" {scope}',
            {"name": info.name, "group": info.api_group, "kind": info.resource}
            if info.name
            else {"group": info.api_group, "kind": info.resource},
        )

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return error_response(e)
        except SelectorError as e:
            return error_response(ApiError(400, "BadRequest", str(e)))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        user = self.authenticate(request)
        if path.startswith("/_sim/") or path == "/_sim":
            if "system:masters" not in user.groups:
                raise ApiError(403, "Forbidden", "the simulator control API is for system:masters")
            assert self.control is not None
            return await self.control(request, user)
        if self.attached_to:
            raise ApiError(
                404,
                "NotFound",
                f"this simulator is attached to {self.attached_to}: it serves only /_sim",
            )
        info = request_info(request.method, path, request.query)
        self.authorize(user, info, path)
        if not info.is_resource:
            return await self.non_resource(request, path)
        if info.api_group == METRICS_GROUP:
            return await self.aggregator.proxy(request, user)
        if info.api_group in GROUPS:
            return await self.reviews(request, info, user)
        if info.api_group in OBJECT_GROUPS and info.api_version == "v1":
            return await self.group_objects(request, info)
        if info.api_group != "" or info.api_version != "v1":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return await self.core(request, info)

    # --- discovery -------------------------------------------------------------------------
    def api_groups(self) -> list[dict[str, Any]]:
        groups = []
        for g in (*GROUPS, *OBJECT_GROUPS):
            gv = {"groupVersion": f"{g}/v1", "version": "v1"}
            groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
        if self.cluster.backend is not None:
            vs = [{"groupVersion": f"{METRICS_GROUP}/{v}", "version": v} for v in METRICS_VERSIONS]
            groups.append({"name": METRICS_GROUP, "versions": vs, "preferredVersion": vs[0]})
        return groups

    async def non_resource(self, request: web.Request, path: str) -> web.StreamResponse:
        path = path.rstrip("/") or "/"
        if request.method != "GET":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        if path == "/version":
            return json_response(VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            host = f"{self.cluster.cfg.host}:{self.cluster.api_port}"
            return json_response(
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": host}
                    ],
                }
            )
        if path == "/api/v1":
            res = []
            for name, (kind, namespaced, verbs, short) in CORE.items():
                res.append(
                    {
                        "name": name,
                        "singularName": kind.lower(),
                        "namespaced": namespaced,
                        "kind": kind,
                        "verbs": verbs,
                        "shortNames": short,
                    }
                )
                if name == "nodes":
                    res.append(
                        {
                            "name": "nodes/proxy",
                            "singularName": "",
                            "namespaced": False,
                            "kind": "NodeProxyOptions",
                            "verbs": ["get"],
                        }
                    )
            for r in res:
                if r["name"] == "pods":
                    r["categories"] = ["all"]
            return json_response(
                {"kind": "APIResourceList", "groupVersion": "v1", "resources": res}
            )
        if path == "/apis":
            return json_response(
                {"kind": "APIGroupList", "apiVersion": "v1", "groups": self.api_groups()}
            )
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) >= 2:
            group = parts[1]
            for g in self.api_groups():
                if g["name"] != group:
                    continue
                if len(parts) == 2:
                    return json_response({"kind": "APIGroup", "apiVersion": "v1", **g})
                if group == METRICS_GROUP:
                    return await self.aggregator.proxy(request, self.authenticate(request))
                if len(parts) == 3 and parts[2] == "v1":
                    return json_response(
                        {
                            "kind": "APIResourceList",
                            "apiVersion": "v1",
                            "groupVersion": f"{group}/v1",
                            "resources": GROUPS[group]
                            if group in GROUPS
                            else discovery_resources(group),
                        }
                    )
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # --- core resources --------------------------------------------------------------------
    def _encoded(self, o: KObj, fmt: str) -> bytes:
        """The object's JSON as a list item (no kind/apiVersion), cached per resourceVersion."""
        key = (o.resource, o.namespace, o.name)
        hit = self.enc_cache.get(key)
        if hit is None or hit[0] != o.rv:
            d = o.to_dict()
            d.pop("kind", None)
            d.pop("apiVersion", None)
            hit = (o.rv, orjson.dumps(d), orjson.dumps({"metadata": d["metadata"]}))
            if len(self.enc_cache) > 2 * sum(len(v) for v in self.store.objects.values()) + 1000:
                self.enc_cache.clear()
            self.enc_cache[key] = hit
        return hit[1] if fmt == "json" else hit[2]

    async def core(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        if info.resource not in CORE:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kind, namespaced, _, _ = CORE[info.resource]
        if info.resource == "namespaces":
            namespaced = False
        if info.subresource:
            if info.resource == "nodes" and info.subresource == "proxy":
                return await self.node_proxy(info)
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if info.namespace and not namespaced and info.resource != "namespaces":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        q = request.query
        if info.verb == "delete":
            return self.delete(info)
        if info.verb not in ("get", "list", "watch"):
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        fmt = negotiate(request.headers.get("Accept", ""), info.verb == "watch", info.verb == "get")
        if not fmt:
            raise ApiError(
                406,
                "NotAcceptable",
                "only the following media types are accepted: application/json, "
                "application/json;as=Table;v=v1;g=meta.k8s.io, "
                "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io",
            )
        ns = info.namespace if namespaced else ""
        if info.verb == "get":
            o = self.store.get(info.resource, ns, info.name)
            if o is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'{info.resource} "{info.name}" not found',
                    {"name": info.name, "kind": info.resource},
                )
            d = o.to_dict()
            if fmt == "meta":
                return json_response(_meta_obj(d))
            if fmt == "table":
                return json_response(
                    table(info.resource, [d], self.store.rv, q.get("includeObject", "Metadata"))
                )
            return json_response(d)
        lsel = parse_labels(q.get("labelSelector", ""))
        fsel = parse_fields(q.get("fieldSelector", ""), FIELDS[info.resource])
        nsf = info.namespace if namespaced and info.namespace else None
        if info.verb == "watch":
            return await self.watch(request, info.resource, kind, nsf, lsel, fsel, fmt)
        return await self.list(request, info.resource, kind, nsf, lsel, fsel, fmt)

    async def group_objects(self, request: web.Request, info: RequestInfo) -> web.StreamResponse:
        """Leases and EndpointSlices (`objects.py`): reads here, writes validated there."""
        group, resource = info.api_group, info.resource
        kinds = OBJECT_GROUPS[group]
        if resource not in kinds or info.subresource or (info.name and not info.namespace):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        kind = kinds[resource].kind
        api_version = f"{group}/v1"
        ns = info.namespace
        if info.verb in ("create", "update", "delete"):
            raw = await request.read()
            try:
                body = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError as e:
                raise ApiError(400, "BadRequest", f"invalid request body: {e}") from e
            if info.verb == "create" and not info.name and ns:
                return json_response(self.objects.create(group, resource, ns, body), 201)
            if info.verb == "update" and info.name:
                return json_response(self.objects.update(group, resource, ns, info.name, body))
            if info.verb == "delete" and info.name:
                return json_response(self.objects.delete(group, resource, ns, info.name, body))
        if info.verb not in READ_VERBS:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )
        fmt = negotiate(request.headers.get("Accept", ""), info.verb == "watch", info.verb == "get")
        if not fmt:
            raise ApiError(406, "NotAcceptable", "only application/json is served here")
        q = request.query
        if info.verb == "get":
            o = self.store.get(resource, ns, info.name)
            if o is None:
                raise not_found(resource, group, info.name)
            d = o.to_dict()
            if fmt == "meta":
                return json_response(_meta_obj(d))
            if fmt == "table":
                return json_response(
                    table(resource, [d], self.store.rv, q.get("includeObject", "Metadata"))
                )
            return json_response(d)
        lsel = parse_labels(q.get("labelSelector", ""))
        fsel = parse_fields(q.get("fieldSelector", ""), FIELDS[resource])
        nsf = ns or None
        if info.verb == "watch":
            return await self.watch(request, resource, kind, nsf, lsel, fsel, fmt, api_version)
        return await self.list(request, resource, kind, nsf, lsel, fsel, fmt, api_version)

    async def list(
        self,
        request: web.Request,
        resource: str,
        kind: str,
        ns: str | None,
        lsel: Any,
        fsel: Any,
        fmt: str,
        api_version: str = "v1",
    ) -> web.StreamResponse:
        q = request.query
        rv = self.store.rv
        start = None
        if q.get("continue"):
            try:
                rv, start = decode_continue(q["continue"])
            except ValueError as e:
                raise ApiError(400, "BadRequest", str(e)) from e
        if q.get("resourceVersionMatch") == "Exact" and q.get("resourceVersion") not in (
            None,
            str(self.store.rv),
        ):
            raise ApiError(410, "Expired", "The resourceVersion for the provided list is too old.")
        try:
            limit = int(q.get("limit", "0") or 0)
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid limit: {q.get('limit')}") from e
        if q.get("resourceVersion") == "0" and not q.get("continue"):
            # kube-apiserver serves resourceVersion=0 from its watch cache, whole, whatever
            # `limit` says (1.37: 30,000 pods asked for with limit=500 came as one 58 MB list,
            # no continue token); clients must cope with that, so the simulator does it too.
            limit = 0
        objs = self.store.select(resource, ns, lsel, fsel, start)
        self.lists[resource] = self.lists.get(resource, 0) + 1
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        items: list[KObj] = []
        cont = False
        for o in objs:
            if limit and len(items) >= limit:
                cont = True
                break
            items.append(o)
        if cont:
            meta["continue"] = encode_continue(rv, items[-1].key)
        if fmt == "table":
            t = table(
                resource,
                [o.to_dict() for o in items],
                rv,
                q.get("includeObject", "Metadata"),
                extra_meta=meta,
            )
            return json_response(t)
        if fmt == "meta":
            head = {
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }
        else:
            head = {"kind": f"{kind}List", "apiVersion": api_version, "metadata": meta}
        prefix = orjson.dumps(head)[:-1] + b',"items":['
        resp = web.StreamResponse(headers={"Content-Type": JSON})
        if len(items) < 2000:
            body = prefix + b",".join(self._encoded(o, fmt) for o in items) + b"]}"
            return web.Response(body=body, headers={"Content-Type": JSON})
        # Large lists stream in chunks so 150,000 pods never sit in one buffer.
        await resp.prepare(request)
        await resp.write(prefix)
        for i in range(0, len(items), 2000):
            chunk = b",".join(self._encoded(o, fmt) for o in items[i : i + 2000])
            await resp.write(chunk if i == 0 else b"," + chunk)
        await resp.write(b"]}")
        await resp.write_eof()
        return resp

    def delete(self, info: RequestInfo) -> web.Response:
        if info.resource != "pods" or not info.name:
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        try:
            pod = self.cluster.delete_pod(info.namespace, info.name)
        except LookupError as e:
            raise ApiError(
                404,
                "NotFound",
                f'pods "{info.name}" not found',
                {"name": info.name, "kind": "pods"},
            ) from e
        return json_response(pod.to_dict())

    async def node_proxy(self, info: RequestInfo) -> web.StreamResponse:
        node = self.cluster.nodes.get(info.name)
        if node is None:
            raise ApiError(
                404,
                "NotFound",
                f'nodes "{info.name}" not found',
                {"name": info.name, "kind": "nodes"},
            )
        if "/".join(info.rest) != "metrics/resource":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        status, body = await self.fleet.proxy_metrics(node)
        return web.Response(
            status=status,
            body=body,
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    # --- watch -----------------------------------------------------------------------------
    def _event_line(self, type_: str, ev: Event, fmt: str, resource: str, include: str) -> bytes:
        key = f"{type_}:{fmt}"
        line = ev.enc.get(key)
        if line is None:
            if fmt == "json":
                obj = orjson.dumps(ev.obj)
            elif fmt == "meta":
                obj = orjson.dumps(_meta_obj(ev.obj))
            else:
                obj = orjson.dumps(table(resource, [ev.obj], ev.rv, include))
            line = b'{"type":"' + type_.encode() + b'","object":' + obj + b"}\n"
            ev.enc[key] = line
        return line

    def _initial_line(
        self, o: KObj, fmt: str, resource: str, kind: str, include: str, api_version: str = "v1"
    ) -> bytes:
        if fmt == "table":
            obj = orjson.dumps(table(resource, [o.to_dict()], o.rv, include))
        else:
            enc = self._encoded(o, fmt)
            if fmt == "meta":
                obj = b'{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1",' + enc[1:]
            else:
                head = f'{{"kind":"{kind}","apiVersion":"{api_version}",'.encode()
                obj = head + enc[1:]
        return b'{"type":"ADDED","object":' + obj + b"}\n"

    def _bookmark(
        self, kind: str, fmt: str, rv: int, initial_end: bool = False, api_version: str = "v1"
    ) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        if fmt == "json":
            obj = {"kind": kind, "apiVersion": api_version, "metadata": meta}
        else:
            obj = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    async def watch(
        self,
        request: web.Request,
        resource: str,
        kind: str,
        ns: str | None,
        lsel: Any,
        fsel: Any,
        fmt: str,
        api_version: str = "v1",
    ) -> web.StreamResponse:
        q = request.query
        rv_param = q.get("resourceVersion", "")
        try:
            timeout = float(q.get("timeoutSeconds", "1800") or 1800)
        except ValueError as e:
            raise ApiError(400, "BadRequest", "invalid timeoutSeconds") from e
        bookmarks = _true(q.get("allowWatchBookmarks"))
        send_initial = _true(q.get("sendInitialEvents"))
        include = q.get("includeObject", "Metadata")
        since = 0
        if rv_param not in ("", "0"):
            try:
                since = int(rv_param)
            except ValueError as e:
                raise ApiError(400, "BadRequest", f'invalid resource version: "{rv_param}"') from e
        resp = web.StreamResponse(headers={"Content-Type": JSON, "Transfer-Encoding": "chunked"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        if since and since < self.store.floor and not send_initial:
            # Like the watch cache: the stream opens, then one ERROR event says 410 Gone.
            err = status_body(
                410, "Expired", f"too old resource version: {since} ({self.store.floor})"
            )
            await resp.write(orjson.dumps({"type": "ERROR", "object": err}) + b"\n")
            await resp.write_eof()
            return resp
        w = Watcher(resource, ns, lsel, fsel, self.store.max_watch_queue)
        # Take the starting state and register in one step (no await between): no gaps.
        initial: Iterable[KObj] = []
        replay: list[tuple[str, Event]] = []
        if not since or send_initial:
            initial = list(self.store.select(resource, ns, lsel, fsel))
        else:
            for ev in self.store.events_since(since):
                seen = w.translate(ev)
                if seen is not None:
                    replay.append((seen, ev))
        start_rv = self.store.rv
        self.store.watchers.add(w)
        self.watches += 1
        deadline = time.monotonic() + timeout
        interval = self.cluster.cfg.bookmark_interval
        try:
            batch: list[bytes] = []
            for o in initial:
                batch.append(self._initial_line(o, fmt, resource, kind, include, api_version))
                if len(batch) >= 500:
                    await resp.write(b"".join(batch))
                    batch = []
            for t, ev in replay:
                batch.append(self._event_line(t, ev, fmt, resource, include))
            if batch:
                await resp.write(b"".join(batch))
            if send_initial and bookmarks:
                await resp.write(
                    self._bookmark(kind, fmt, start_rv, initial_end=True, api_version=api_version)
                )
            while not w.overflow:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    t, ev = await asyncio.wait_for(w.queue.get(), min(left, interval))
                except TimeoutError:
                    if bookmarks and w.queue.empty() and time.monotonic() < deadline:
                        await resp.write(
                            self._bookmark(kind, fmt, self.store.rv, api_version=api_version)
                        )
                    continue
                lines = [self._event_line(t, ev, fmt, resource, include)]
                while not w.queue.empty() and len(lines) < 500:
                    t, ev = w.queue.get_nowait()
                    lines.append(self._event_line(t, ev, fmt, resource, include))
                await resp.write(b"".join(lines))
            await resp.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.discard(w)
            self.watches -= 1
        return resp

    # --- reviews ---------------------------------------------------------------------------
    async def reviews(
        self, request: web.Request, info: RequestInfo, user: UserInfo
    ) -> web.StreamResponse:
        if request.method != "POST" or info.verb != "create" or info.api_version != "v1":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        raw = await request.read()
        try:
            if request.content_type == "application/vnd.kubernetes.protobuf":
                body = decode_review(raw, info.resource)
            else:
                body = orjson.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as e:
            raise ApiError(400, "BadRequest", f"invalid request body: {e}") from e
        spec = body.get("spec") or {}
        rbac = self.cluster.rbac
        self.reviews_served[info.resource] = self.reviews_served.get(info.resource, 0) + 1
        kind = body.get("kind") or {
            "tokenreviews": "TokenReview",
            "selfsubjectreviews": "SelfSubjectReview",
            "subjectaccessreviews": "SubjectAccessReview",
            "localsubjectaccessreviews": "LocalSubjectAccessReview",
            "selfsubjectaccessreviews": "SelfSubjectAccessReview",
        }.get(info.resource, "")
        out: dict[str, Any] = {
            "kind": kind,
            "apiVersion": f"{info.api_group}/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
        }
        if info.resource == "tokenreviews":
            u = rbac.authenticate(str(spec.get("token", "")))
            if u is None:
                out["status"] = {
                    "authenticated": False,
                    "user": {},
                    "error": "invalid bearer token",
                }
            else:
                out["status"] = {
                    "authenticated": True,
                    "user": u.to_dict(),
                    "audiences": spec.get("audiences")
                    or ["https://kubernetes.default.svc.cluster.local"],
                }
            return json_response(out, 201)
        if info.resource == "selfsubjectreviews":
            out["status"] = {"userInfo": user.to_dict()}
            return json_response(out, 201)
        if info.resource in (
            "subjectaccessreviews",
            "localsubjectaccessreviews",
            "selfsubjectaccessreviews",
        ):
            if info.resource == "selfsubjectaccessreviews":
                subject = user
            else:
                subject = UserInfo(
                    str(spec.get("user", "")), tuple(str(g) for g in spec.get("groups") or ())
                )
            attrs = Attributes.from_sar(spec)
            if info.resource == "localsubjectaccessreviews":
                attrs.namespace = info.namespace
            ok, reason = rbac.authorize(subject, attrs)
            st: dict[str, Any] = {"allowed": ok}
            if ok:
                st["reason"] = reason
            out["status"] = st
            return json_response(out, 201)
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
