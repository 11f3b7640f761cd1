"""Objects of the API groups beyond core that the simulator stores as plain JSON.

- `coordination.k8s.io/v1` Leases: create, get, update (optimistic concurrency: a stale
  `metadata.resourceVersion` is a 409 Conflict), delete (with `preconditions`), list, watch —
  what replicas sharding over Leases use, with kube-apiserver's status codes and messages.
- `discovery.k8s.io/v1` EndpointSlices: get, list, watch; written only by the simulator's
  endpoint controller (`aggregator.py`), as the EndpointSlice controller owns them in a cluster.

Reads go through the API server's shared list and watch code; this module validates and applies
writes to the store.
"""

from __future__ import annotations

import datetime
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .errors import ApiError
from .gofmt import rfc3339
from .store import DictObj, Store


@dataclass(frozen=True)
class ObjectKind:
    kind: str
    singular: str
    verbs: tuple[str, ...]
    short_names: tuple[str, ...] = ()


READ = ("get", "list", "watch")
# group → resource → what discovery says about it; every group is served at v1.
OBJECT_GROUPS: dict[str, dict[str, ObjectKind]] = {
    "coordination.k8s.io": {
        "leases": ObjectKind("Lease", "lease", ("create", "delete", *READ, "update")),
    },
    "discovery.k8s.io": {
        "endpointslices": ObjectKind("EndpointSlice", "endpointslice", READ),
    },
}

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_BODY_KEYS = 64


def discovery_resources(group: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "singularName": k.singular,
            "namespaced": True,
            "kind": k.kind,
            "verbs": list(k.verbs),
            **({"shortNames": list(k.short_names)} if k.short_names else {}),
        }
        for name, k in OBJECT_GROUPS[group].items()
    ]


def _qualified(resource: str, group: str) -> str:
    return f"{resource}.{group}"


def _details(resource: str, group: str, name: str) -> dict[str, Any]:
    return {"name": name, "group": group, "kind": resource}


def not_found(resource: str, group: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_qualified(resource, group)} "{name}" not found',
        _details(resource, group, name),
    )


def _conflict(resource: str, group: str, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {_qualified(resource, group)} "{name}": {why}',
        _details(resource, group, name),
    )


def _invalid(kind: str, group: str, name: str, field: str, value: Any, why: str) -> ApiError:
    return ApiError(
        422,
        "Invalid",
        f'{kind}.{group} "{name}" is invalid: {field}: Invalid value: {value!r}: {why}',
        {"name": name, "group": group, "kind": kind},
    )


def _micro_time(value: Any) -> bool:
    """metav1.MicroTime's RFC 3339 text (fractional seconds optional)."""
    if not isinstance(value, str):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _string_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ApiError(400, "BadRequest", f"metadata.{what} must be a map of strings")
    return dict(value)


def _lease_spec(spec: Any, name: str) -> dict[str, Any]:
    group = "coordination.k8s.io"
    if spec is None:
        return {}
    if not isinstance(spec, dict) or len(spec) > _MAX_BODY_KEYS:
        raise ApiError(400, "BadRequest", "spec must be an object")
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if value is None:
            continue
        if key in ("holderIdentity", "strategy", "preferredHolder"):
            if not isinstance(value, str):
                raise ApiError(400, "BadRequest", f"spec.{key} must be a string")
        elif key in ("leaseDurationSeconds", "leaseTransitions"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ApiError(400, "BadRequest", f"spec.{key} must be an integer")
            if key == "leaseDurationSeconds" and value <= 0:
                raise _invalid("Lease", group, name, f"spec.{key}", value, "must be greater than 0")
            if key == "leaseTransitions" and value < 0:
                raise _invalid("Lease", group, name, f"spec.{key}", value, "must be >= 0")
        elif key in ("acquireTime", "renewTime"):
            if not _micro_time(value):
                raise ApiError(400, "BadRequest", f"spec.{key}: invalid time {value!r}")
        else:
            raise ApiError(400, "BadRequest", f'unknown field "spec.{key}"')
        out[key] = value
    return out


class Objects:
    """Writes to the JSON objects of `OBJECT_GROUPS` (only Leases are writable by clients)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.writes = 0  # accepted creates, updates and deletes (tests, /_sim/state)
        self.conflicts = 0  # 409s answered to writers

    def _meta(self, body: Any, group: str, resource: str, namespace: str) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the request body must be an object")
        kind = OBJECT_GROUPS[group][resource].kind
        if body.get("kind") not in (None, kind) or body.get("apiVersion") not in (
            None,
            f"{group}/v1",
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the body is {body.get('apiVersion')}/{body.get('kind')}, want {group}/v1 {kind}",
            )
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            raise ApiError(400, "BadRequest", "metadata must be an object")
        ns = meta.get("namespace")
        if ns not in (None, "", namespace):
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )
        return meta

    def create(self, group: str, resource: str, namespace: str, body: Any) -> dict[str, Any]:
        if resource != "leases":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        meta = self._meta(body, group, resource, namespace)
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            raise ApiError(
                422, "Invalid", "Lease.coordination.k8s.io is invalid: metadata.name: Required"
            )
        if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise _invalid(
                "Lease", group, name, "metadata.name", name, "a lowercase RFC 1123 subdomain"
            )
        if self.store.get(resource, namespace, name) is not None:
            self.conflicts += 1
            raise ApiError(
                409,
                "AlreadyExists",
                f'{_qualified(resource, group)} "{name}" already exists',
                _details(resource, group, name),
            )
        obj = DictObj(
            resource,
            "Lease",
            namespace,
            name,
            {"spec": _lease_spec(body.get("spec"), name)},
            rfc3339(time.time()),
            str(uuid.uuid4()),
            _string_map(meta.get("labels"), "labels"),
            api_version=f"{group}/v1",
            annotations=_string_map(meta.get("annotations"), "annotations"),
        )
        self.store.add(obj)
        self.writes += 1
        return obj.to_dict()

    def update(
        self, group: str, resource: str, namespace: str, name: str, body: Any
    ) -> dict[str, Any]:
        if resource != "leases":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        meta = self._meta(body, group, resource, namespace)
        if meta.get("name") != name:
            raise ApiError(
                400,
                "BadRequest",
                f"the name of the object ({meta.get('name')}) does not match the name on the URL "
                f"({name})",
            )
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, group, name)
        assert isinstance(obj, DictObj)
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != str(obj.rv):
            self.conflicts += 1
            raise _conflict(
                resource,
                group,
                name,
                "the object has been modified; please apply your changes to the latest version "
                "and try again",
            )
        spec = _lease_spec(body.get("spec"), name)
        labels = _string_map(meta.get("labels"), "labels")
        annotations = _string_map(meta.get("annotations"), "annotations")
        old = self.store.snapshot_old(obj)
        obj.body = {"spec": spec}
        obj.labels = labels
        obj.annotations = annotations
        self.store.modified(obj, old)
        self.writes += 1
        return obj.to_dict()

    def delete(
        self, group: str, resource: str, namespace: str, name: str, options: Any
    ) -> dict[str, Any]:
        if resource != "leases":
            raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
        obj = self.store.get(resource, namespace, name)
        if obj is None:
            raise not_found(resource, group, name)
        assert isinstance(obj, DictObj)
        pre = options.get("preconditions") if isinstance(options, dict) else None
        if isinstance(pre, dict):
            want_rv, want_uid = pre.get("resourceVersion"), pre.get("uid")
            if want_rv not in (None, "") and want_rv != str(obj.rv):
                self.conflicts += 1
                raise _conflict(
                    resource,
                    group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {want_rv}, "
                    f"ResourceVersion in object meta: {obj.rv}",
                )
            if want_uid not in (None, "") and want_uid != obj.uid:
                self.conflicts += 1
                raise _conflict(
                    resource,
                    group,
                    name,
                    f"Precondition failed: UID in precondition: {want_uid}, UID in object meta: "
                    f"{obj.uid}",
                )
        self.store.delete(obj)
        self.writes += 1
        # Resources without graceful deletion answer with a Success Status, not the object.
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {**_details(resource, group, name), "uid": obj.uid},
        }
