"""The /_sim control API (system:masters only): truth, faults, churn, backend, RBAC."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from .apiserver import ApiServer, json_response
from .cluster import AUTH_CM, Backend, Cluster
from .errors import ApiError
from .gofmt import rfc3339
from .model import Pattern
from .rbac import Grant, User, UserInfo
from .store import DictObj


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        return {}
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise ApiError(400, "BadRequest", f"invalid JSON body: {e}") from e
    if not isinstance(d, dict):
        raise ApiError(400, "BadRequest", "body must be a JSON object")
    return d


def _not_found(e: LookupError) -> ApiError:
    return ApiError(404, "NotFound", str(e.args[0]) if e.args else "not found")


class Control:
    def __init__(self, cluster: Cluster, api: ApiServer) -> None:
        self.cluster = cluster
        self.api = api
        # Attached to a real API server: /_sim/attached/... (state, workloads).
        self.attached: Callable[[str, list[str], dict[str, Any]], Awaitable[Any]] | None = None
        api.control = self.handle

    async def handle(self, request: web.Request, user: UserInfo) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p][1:]
        m = request.method
        c = self.cluster
        try:
            if parts == ["state"] and m == "GET":
                return json_response(self.state())
            if parts == ["truth"] and m == "GET":
                return json_response(
                    c.truth(request.query.get("node"), request.query.get("namespace"))
                )
            if parts == ["faults"]:
                if m == "GET":
                    return json_response(
                        {
                            n.name: {"fault": n.fault, "seconds": n.fault_seconds}
                            for n in c.nodes.values()
                            if n.fault
                        }
                    )
                if m == "POST":
                    b = await _body(request)
                    names = b.get("nodes") or [b.get("node")]
                    fault = str(b.get("fault", ""))
                    seconds = float(b.get("seconds", 0) or 0)
                    duration = float(b.get("for", 0) or 0)
                    for name in names:
                        c.set_fault(str(name), fault, seconds, duration)
                    await self.api.fleet.settle()
                    return json_response({"nodes": names, "fault": fault or "heal"})
            if parts == ["outage"] and m == "POST":
                b = await _body(request)
                seconds = float(b.get("seconds", 0))
                if not 0 < seconds <= 3600:
                    raise ValueError("seconds must be in (0, 3600]")
                self.api.outage(seconds, forget_history=bool(b.get("compact", False)))
                return json_response({"seconds": seconds})
            if parts == ["pods"] and m == "POST":
                pod = c.create_pod(await _body(request))
                return json_response(
                    {"namespace": pod.namespace, "name": pod.name, "node": pod.node}, 201
                )
            if len(parts) == 3 and parts[0] == "pods" and m == "DELETE":
                pod = c.delete_pod(parts[1], parts[2])
                return json_response({"namespace": pod.namespace, "name": pod.name})
            if len(parts) == 4 and parts[0] == "pods" and m == "POST":
                b = await _body(request)
                if parts[3] == "restart":
                    pod = c.restart_container(parts[1], parts[2], b.get("container"))
                    return json_response({"namespace": pod.namespace, "name": pod.name})
                if parts[3] == "pattern":
                    return json_response(self.set_pattern(parts[1], parts[2], b))
            if parts == ["nodes"] and m == "POST":
                node = c.add_node(await _body(request))
                await self.api.fleet.settle()
                return json_response(
                    {
                        "name": node.name,
                        "address": node.ip,
                        "port": node.port,
                        "pods": [f"{p.namespace}/{p.name}" for p in node.pods.values()],
                    },
                    201,
                )
            if len(parts) == 2 and parts[0] == "nodes" and m == "DELETE":
                node = c.remove_node(parts[1])
                return json_response({"name": node.name})
            if parts == ["churn"] and m == "POST":
                b = await _body(request)
                c.set_churn(float(b.get("interval", 0)))
                return json_response({"interval": float(b.get("interval", 0))})
            if parts == ["churn", "once"] and m == "POST":
                return json_response({"action": c.churn_once()})
            if parts == ["compact"] and m == "POST":
                return json_response({"floor": c.store.forget_history()})
            if parts == ["aggregator"]:
                if m == "GET":
                    return json_response(self.api.aggregator.describe())
                if m in ("PUT", "POST"):
                    return json_response(self.set_backend(await _body(request)))
                if m == "DELETE":
                    c.set_backend(None)
                    return json_response(None)
            if parts == ["aggregator", "endpoints"] and c.backend is not None:
                # A pod of the Service created (POST) or deleted (DELETE {"url"}).
                b = await _body(request)
                url = str(b.get("url", "")).rstrip("/")
                urls = [u for u in c.backend.urls if u != url]
                if m == "POST":
                    urls.append(url)
                elif m != "DELETE":
                    raise ValueError(f"method {m} not supported")
                c.set_backend(dataclasses.replace(c.backend, urls=tuple(urls)))
                return json_response(self.api.aggregator.describe())
            if parts == ["kubelet-requests"] and m == "GET":
                return json_response(
                    {"total": self.api.fleet.requests, "nodes": self.api.fleet.served_by_agent}
                )
            if parts == ["auth-configmap"]:
                return json_response(self.auth_configmap(m, await _body(request)))
            if parts and parts[0] == "attached" and self.attached is not None:
                return json_response(await self.attached(m, parts[1:], await _body(request)))
            if parts and parts[0] == "rbac":
                return await self.rbac(request, parts[1:])
        except LookupError as e:
            raise _not_found(e) from e
        except FileExistsError as e:
            raise ApiError(409, "AlreadyExists", str(e)) from e
        except (ValueError, TypeError, KeyError) as e:
            raise ApiError(400, "BadRequest", str(e)) from e
        raise ApiError(404, "NotFound", f"no control endpoint {m} {request.path}")

    def state(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "nodes": len(c.nodes),
            "pods": len(c.pods),
            "resource_version": c.store.rv,
            "history_floor": c.store.floor,
            "watches": self.api.watches,
            "lists": dict(self.api.lists),
            "outages": self.api.outages,
            "kubelet_requests": self.api.fleet.requests,
            "churn_events": c.churn_events,
            "backend": c.backend.to_dict() if c.backend else None,
            "object_writes": self.api.objects.writes,
            "object_conflicts": self.api.objects.conflicts,
            "kubelet_port": c.kubelet_port,
            "reviews": dict(self.api.reviews_served),
        }

    def auth_configmap(self, method: str, b: dict[str, Any]) -> dict[str, Any] | None:
        """GET / PUT {data} (replace; watchers see MODIFIED, or ADDED after a DELETE) / DELETE
        the kube-system/extension-apiserver-authentication ConfigMap (CA rotation tests)."""
        store = self.cluster.store
        cm = store.get("configmaps", *AUTH_CM)
        if method == "GET":
            if cm is None:
                raise LookupError(f'configmaps "{AUTH_CM[1]}" not found')
            return dict(cm.to_dict())
        if method == "DELETE":
            if cm is None:
                raise LookupError(f'configmaps "{AUTH_CM[1]}" not found')
            store.delete(cm)
            return None
        if method != "PUT":
            raise ValueError(f"method {method} not supported")
        data = b.get("data")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError("data must be an object of strings")
        if cm is None:
            cm = DictObj(
                "configmaps",
                "ConfigMap",
                *AUTH_CM,
                {"data": data},
                rfc3339(time.time()),
                "cm-extension-apiserver-authentication",
            )
            store.add(cm)
        else:
            assert isinstance(cm, DictObj)
            old = store.snapshot_old(cm)
            cm.body = {"data": data}
            store.modified(cm, old)
        return dict(cm.to_dict())

    def set_pattern(self, ns: str, name: str, b: dict[str, Any]) -> dict[str, Any]:
        pod = self.cluster.pods.get((ns, name))
        if pod is None:
            raise LookupError(f'pods "{name}" not found')
        pat = Pattern.from_dict(b.get("pattern") or {})
        hit = False
        for ctr in pod.containers:
            if b.get("container") in (None, ctr.name):
                ctr.pattern = pat
                hit = True
        if not hit:
            raise LookupError(f'container "{b.get("container")}" not found')
        return {"namespace": ns, "name": name, "pattern": pat.to_dict()}

    def set_backend(self, b: dict[str, Any]) -> dict[str, Any] | None:
        """{url | endpoints: [url, ...], ca_pem | ca_file, insecure, service, readiness_path,
        probe_period, failure_threshold}: the APIService's Service and its endpoints."""
        urls = b.get("endpoints") or [b.get("url", "")]
        if not isinstance(urls, list) or not urls:
            raise ValueError("endpoints must be a non-empty list of https://HOST:PORT")
        for url in urls:
            if not str(url).startswith("https://"):
                raise ValueError("url must be https://HOST:PORT")
        ca: bytes | None = None
        if b.get("ca_pem"):
            ca = str(b["ca_pem"]).encode()
        elif b.get("ca_file"):
            ca = Path(str(b["ca_file"])).read_bytes()
        service = str(b.get("service") or "kube-system/metrics-server")
        if service.count("/") != 1:
            raise ValueError("service must be NAMESPACE/NAME")
        backend = Backend(
            tuple(str(u).rstrip("/") for u in urls),
            ca,
            bool(b.get("insecure", False)),
            service=service,
            readiness_path=str(b.get("readiness_path") or ""),
            probe_period=float(b.get("probe_period") or 1.0),
            failure_threshold=int(b.get("failure_threshold") or 3),
        )
        if backend.probe_period <= 0 or backend.failure_threshold < 1:
            raise ValueError("probe_period must be > 0 and failure_threshold >= 1")
        self.cluster.set_backend(backend)
        return self.api.aggregator.describe()

    async def rbac(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        r = self.cluster.rbac
        m = request.method
        if not parts and m == "GET":
            return json_response(
                {
                    "users": {u.name: {"groups": list(u.groups)} for u in r.users.values()},
                    "grants": [g.to_dict() for g in r.grants],
                }
            )
        if parts == ["users"] and m == "POST":
            b = await _body(request)
            u = User(str(b["name"]), str(b["token"]), tuple(str(g) for g in b.get("groups", [])))
            r.add_user(u)
            return json_response({"name": u.name, "groups": list(u.groups)}, 201)
        if len(parts) == 2 and parts[0] == "users" and m == "DELETE":
            if not r.remove_user(parts[1]):
                raise LookupError(f'user "{parts[1]}" not found')
            return json_response({"name": parts[1]})
        if parts == ["grants"] and m == "POST":
            g = Grant.from_dict(await _body(request))
            r.add_grant(g)
            return json_response(g.to_dict(), 201)
        if len(parts) == 2 and parts[0] == "grants" and m == "DELETE":
            return json_response({"removed": r.remove_grants(parts[1])})
        raise ApiError(404, "NotFound", f"no control endpoint {m} {request.path}")
