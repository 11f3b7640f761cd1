"""OpenAPI documents for the metrics.k8s.io group: v2 (`/openapi/v2`) and v3 (`/openapi/v3`,
`/openapi/v3/apis/metrics.k8s.io/VERSION`).

kube-apiserver merges an aggregated server's documents into its own, which is what `kubectl
explain` and client generators see. Built once from a small description of the types below
(field names, types, required lists, descriptions as the upstream Go types document them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from kubemetrics.api.discovery import RESOURCES, VERSIONS, Resource
from kubemetrics.api.status import METRICS_GROUP

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
METRICS_PKG = "io.k8s.metrics.pkg.apis.metrics"

KIND_DESC = (
    "Kind is a string value representing the REST resource this object represents. Servers may "
    "infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
    "api-conventions.md#types-kinds"
)
API_VERSION_DESC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized "
    "values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
    "api-conventions.md#resources"
)
QUANTITY_DESC = (
    "Quantity is a fixed-point representation of a number. It provides convenient "
    "marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() accessors. "
    'Serialized as a string in canonical form, e.g. "1500m" (1.5) or "1536Mi" (1.5Gi).'
)


def _ref(name: str, v3: bool) -> str:
    return ("#/components/schemas/" if v3 else "#/definitions/") + name


@dataclass(frozen=True, slots=True)
class _Doc:
    v3: bool

    def ref(self, name: str) -> dict[str, object]:
        return {"$ref": _ref(name, self.v3)}

    def ref_prop(self, name: str, description: str = "", default: object = None) -> object:
        """A property that is a `$ref`; v3 wraps it in allOf so siblings stay meaningful."""
        if not self.v3:
            out: dict[str, object] = {}
            if description:
                out["description"] = description
            if default is not None:
                out["default"] = default
            out["$ref"] = _ref(name, False)
            return out
        wrapped: dict[str, object] = {"allOf": [self.ref(name)]}
        if description:
            wrapped["description"] = description
        if default is not None:
            wrapped["default"] = default
        return wrapped


def _definitions(doc: _Doc) -> dict[str, object]:
    defs: dict[str, object] = {}
    usage: dict[str, object] = {
        "description": "The memory usage is the memory working set.",
        "type": "object",
        "additionalProperties": doc.ref(QUANTITY),
    }
    defs[QUANTITY] = (
        {"description": QUANTITY_DESC, "oneOf": [{"type": "string"}, {"type": "number"}]}
        if doc.v3
        else {"description": QUANTITY_DESC, "type": "string"}
    )
    defs[f"{META}.Time"] = {
        "description": "Time is a wrapper around time.Time which supports correct marshaling to "
        "YAML and JSON.  Wrappers are provided for many of the factory methods that the time "
        "package offers.",
        "type": "string",
        "format": "date-time",
    }
    defs[f"{META}.Duration"] = {
        "description": "Duration is a wrapper around time.Duration which supports correct "
        "marshaling to YAML and JSON. In particular, it marshals into strings, which can be used "
        "as map keys in json.",
        "type": "string",
    }
    defs[f"{META}.ListMeta"] = {
        "description": "ListMeta describes metadata that synthetic resources must have, "
        "including lists and various status objects.",
        "type": "object",
        "properties": {
            "continue": {
                "description": "continue may be set if the user set a limit.",
                "type": "string",
            },
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": {
                "description": "String that identifies the server's internal "
                "version of this object.",
                "type": "string",
            },
            "selfLink": {
                "description": "Deprecated: selfLink is a legacy read-only field "
                "that is no longer populated by the system.",
                "type": "string",
            },
        },
    }
    defs[f"{META}.ObjectMeta"] = {
        "description": "ObjectMeta is metadata that all persisted resources must have, which "
        "includes all objects users must create.",
        "type": "object",
        "properties": {
            "name": {"description": "Name must be unique within a namespace.", "type": "string"},
            "namespace": {
                "description": "Namespace defines the space within which each name must be unique.",
                "type": "string",
            },
            "creationTimestamp": doc.ref_prop(
                f"{META}.Time",
                "CreationTimestamp is a timestamp representing the server time when this object "
                "was created.",
            ),
            "labels": {
                "description": "Map of string keys and values that can be used to organize and "
                "categorize (scope and select) objects.",
                "type": "object",
                "additionalProperties": {"type": "string", "default": ""},
            },
            "annotations": {
                "type": "object",
                "additionalProperties": {"type": "string", "default": ""},
            },
            "resourceVersion": {"type": "string"},
            "uid": {"type": "string"},
            "selfLink": {"type": "string"},
        },
    }
    defs[f"{META}.StatusDetails"] = {
        "description": "StatusDetails is a set of additional properties that MAY be set by the "
        "server to provide additional information about a response.",
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "group": {"type": "string"},
            "kind": {"type": "string"},
            "uid": {"type": "string"},
            "causes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                    },
                },
            },
            "retryAfterSeconds": {"type": "integer", "format": "int32"},
        },
    }
    defs[f"{META}.Status"] = {
        "description": "Status is a return value for calls that don't return other objects.",
        "type": "object",
        "properties": {
            "apiVersion": {"description": API_VERSION_DESC, "type": "string"},
            "kind": {"description": KIND_DESC, "type": "string"},
            "metadata": doc.ref_prop(f"{META}.ListMeta", "Standard list metadata.", {}),
            "status": {
                "description": 'Status of the operation. One of: "Success" or "Failure".',
                "type": "string",
            },
            "message": {
                "description": "A human-readable description of the status of this operation.",
                "type": "string",
            },
            "reason": {
                "description": "A machine-readable description of why this operation "
                'is in the "Failure" status.',
                "type": "string",
            },
            "details": doc.ref_prop(
                f"{META}.StatusDetails", "Extended data associated with the reason."
            ),
            "code": {
                "description": "Suggested HTTP return code for this status, 0 if not set.",
                "type": "integer",
                "format": "int32",
            },
        },
        "x-kubernetes-group-version-kind": [{"group": "", "kind": "Status", "version": "v1"}],
    }
    for v in VERSIONS:
        pkg = f"{METRICS_PKG}.{v}"

        def gvk(kind: str, v: str = v) -> list[dict[str, str]]:
            return [{"group": METRICS_GROUP, "kind": kind, "version": v}]

        common: dict[str, object] = {
            "apiVersion": {"description": API_VERSION_DESC, "type": "string"},
            "kind": {"description": KIND_DESC, "type": "string"},
            "metadata": doc.ref_prop(
                f"{META}.ObjectMeta",
                "Standard object's metadata. More info: https://git.k8s.io/community/"
                "contributors/devel/sig-architecture/api-conventions.md#metadata",
                {},
            ),
            "timestamp": doc.ref_prop(
                f"{META}.Time",
                "The following fields define time interval from which metrics were collected "
                "from the interval [Timestamp-Window, Timestamp].",
            ),
            "window": doc.ref(f"{META}.Duration"),
        }
        defs[f"{pkg}.ContainerMetrics"] = {
            "description": "ContainerMetrics sets resource usage metrics of a container.",
            "type": "object",
            "required": ["name", "usage"],
            "properties": {
                "name": {
                    "description": "Container name corresponding to the one from "
                    "pod.spec.containers.",
                    "type": "string",
                    "default": "",
                },
                "usage": usage,
            },
        }
        defs[f"{pkg}.NodeMetrics"] = {
            "description": "NodeMetrics sets resource usage metrics of a node.",
            "type": "object",
            "required": ["timestamp", "window", "usage"],
            "properties": common | {"usage": usage},
            "x-kubernetes-group-version-kind": gvk("NodeMetrics"),
        }
        defs[f"{pkg}.PodMetrics"] = {
            "description": "PodMetrics sets resource usage metrics of a pod.",
            "type": "object",
            "required": ["timestamp", "window", "containers"],
            "properties": common
            | {
                "containers": {
                    "description": "Metrics for all containers are collected within the same "
                    "time window.",
                    "type": "array",
                    "items": doc.ref(f"{pkg}.ContainerMetrics"),
                    "x-kubernetes-list-type": "atomic",
                },
            },
            "x-kubernetes-group-version-kind": gvk("PodMetrics"),
        }
        for kind, what in (("NodeMetrics", "node"), ("PodMetrics", "pod")):
            defs[f"{pkg}.{kind}List"] = {
                "description": f"{kind}List is a list of {kind}.",
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"description": API_VERSION_DESC, "type": "string"},
                    "kind": {"description": KIND_DESC, "type": "string"},
                    "metadata": doc.ref_prop(
                        f"{META}.ListMeta",
                        "Standard list metadata. More info: https://git.k8s.io/community/"
                        "contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                        {},
                    ),
                    "items": {
                        "description": f"List of {what} metrics.",
                        "type": "array",
                        "items": doc.ref(f"{pkg}.{kind}"),
                    },
                },
                "x-kubernetes-group-version-kind": gvk(f"{kind}List"),
            }
    return defs


_MEDIA = ["application/json", "application/vnd.kubernetes.protobuf"]
_TABLE_MEDIA = ["application/json;as=Table;v=v1;g=meta.k8s.io"]


def _param(name: str, description: str, v3: bool, type_: str = "string") -> dict[str, object]:
    p: dict[str, object] = {
        "name": name,
        "in": "query",
        "description": description,
        "uniqueItems": True,
    }
    if v3:
        p["schema"] = {"type": type_, "uniqueItems": True}
        del p["uniqueItems"]
    else:
        p["type"] = type_
    return p


def _path_param(name: str, description: str, v3: bool) -> dict[str, object]:
    p: dict[str, object] = {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
    }
    if v3:
        p["schema"] = {"type": "string", "uniqueItems": True}
    else:
        p["type"] = "string"
        p["uniqueItems"] = True
    return p


def _operation(
    doc: _Doc, version: str, r: Resource, *, single: bool, namespaced_path: bool
) -> dict[str, object]:
    kind = r.kind if single else r.list_kind
    verb = "read" if single else "list"
    scope = "Namespaced" if namespaced_path else ""
    suffix = "ForAllNamespaces" if (r.namespaced and not namespaced_path and not single) else ""
    op_id = f"{verb}MetricsV1{'beta1' if version == 'v1beta1' else ''}{scope}{r.kind}{suffix}"
    ok_schema = doc.ref(f"{METRICS_PKG}.{version}.{kind}")
    params: list[dict[str, object]] = []
    if not single:
        params = [
            _param(
                "labelSelector",
                "A selector to restrict the list of returned objects by "
                "their labels. Defaults to everything.",
                doc.v3,
            ),
            _param(
                "fieldSelector",
                "A selector to restrict the list of returned objects by "
                "their fields. Defaults to everything.",
                doc.v3,
            ),
        ]
    op: dict[str, object] = {
        "description": f"{'read the specified' if single else 'list objects of kind'} {r.kind}",
        "operationId": op_id,
        "tags": [f"metrics_{version}"],
        "x-kubernetes-action": "get" if single else "list",
        "x-kubernetes-group-version-kind": {
            "group": METRICS_GROUP,
            "version": version,
            "kind": r.kind,
        },
    }
    if params:
        op["parameters"] = params
    if doc.v3:
        op["responses"] = {
            "200": {
                "description": "OK",
                "content": {m: {"schema": ok_schema} for m in _MEDIA},
            },
            "401": {"description": "Unauthorized"},
        }
    else:
        op["consumes"] = ["*/*"]
        op["produces"] = [*_MEDIA]
        op["schemes"] = ["https"]
        op["responses"] = {
            "200": {"description": "OK", "schema": ok_schema},
            "401": {"description": "Unauthorized"},
        }
    return op


def _paths(doc: _Doc, versions: tuple[str, ...]) -> dict[str, object]:
    paths: dict[str, object] = {}
    for v in versions:
        base = f"/apis/{METRICS_GROUP}/{v}"
        for r in RESOURCES:
            if r.namespaced:
                paths[f"{base}/{r.name}"] = {
                    "get": _operation(doc, v, r, single=False, namespaced_path=False)
                }
                ns = _path_param(
                    "namespace",
                    "object name and auth scope, such as for teams and projects",
                    doc.v3,
                )
                paths[f"{base}/namespaces/{{namespace}}/{r.name}"] = {
                    "get": _operation(doc, v, r, single=False, namespaced_path=True),
                    "parameters": [ns],
                }
                paths[f"{base}/namespaces/{{namespace}}/{r.name}/{{name}}"] = {
                    "get": _operation(doc, v, r, single=True, namespaced_path=True),
                    "parameters": [
                        _path_param("name", f"name of the {r.kind}", doc.v3),
                        ns,
                    ],
                }
            else:
                paths[f"{base}/{r.name}"] = {
                    "get": _operation(doc, v, r, single=False, namespaced_path=False)
                }
                paths[f"{base}/{r.name}/{{name}}"] = {
                    "get": _operation(doc, v, r, single=True, namespaced_path=False),
                    "parameters": [_path_param("name", f"name of the {r.kind}", doc.v3)],
                }
    return paths


def _used_definitions(defs: dict[str, object], paths: object) -> dict[str, object]:
    """Only the definitions reachable from `paths` (so per-version v3 documents stay small)."""
    prefix_v2, prefix_v3 = "#/definitions/", "#/components/schemas/"
    seen: set[str] = set()
    stack: list[object] = [paths]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.removeprefix(prefix_v2).removeprefix(prefix_v3)
                if name not in seen:
                    seen.add(name)
                    stack.append(defs[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return {k: defs[k] for k in sorted(seen)}


def _info(version: str) -> dict[str, str]:
    return {"title": "kubemetrics", "version": version}


def openapi_v2(server_version: str) -> bytes:
    doc = _Doc(v3=False)
    paths = _paths(doc, VERSIONS)
    out = {
        "swagger": "2.0",
        "info": _info(server_version),
        "paths": paths,
        "definitions": _used_definitions(_definitions(doc), paths),
        "securityDefinitions": {
            "BearerToken": {
                "description": "Bearer Token authentication",
                "type": "apiKey",
                "name": "authorization",
                "in": "header",
            }
        },
        "security": [{"BearerToken": []}],
    }
    return orjson.dumps(out)


def openapi_v3_group_version(version: str, server_version: str) -> bytes:
    doc = _Doc(v3=True)
    paths = _paths(doc, (version,))
    out = {
        "openapi": "3.0.0",
        "info": _info(server_version),
        "paths": paths,
        "components": {
            "schemas": _used_definitions(_definitions(doc), paths),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }
    return orjson.dumps(out)


@dataclass(frozen=True, slots=True)
class OpenAPIDocuments:
    """Every document, rendered once, with the hashes the v3 discovery index refers to."""

    v2: bytes
    v2_etag: str
    v3_group_versions: dict[str, bytes]  # "apis/metrics.k8s.io/v1beta1" → document
    v3_hashes: dict[str, str]
    v3_index: bytes


def _hash(data: bytes) -> str:
    # kube-openapi uses an uppercase hex SHA-512 of the document as its content hash
    return hashlib.sha512(data).hexdigest().upper()


def build_documents(server_version: str) -> OpenAPIDocuments:
    v2 = openapi_v2(server_version)
    group_versions: dict[str, bytes] = {}
    hashes: dict[str, str] = {}
    for v in VERSIONS:
        key = f"apis/{METRICS_GROUP}/{v}"
        data = openapi_v3_group_version(v, server_version)
        group_versions[key] = data
        hashes[key] = _hash(data)
    index = orjson.dumps(
        {
            "paths": {
                key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={hashes[key]}"}
                for key in sorted(group_versions)
            }
        }
    )
    return OpenAPIDocuments(
        v2=v2,
        v2_etag=f'"{_hash(v2)}"',
        v3_group_versions=group_versions,
        v3_hashes=hashes,
        v3_index=index,
    )


__all__ = ["OpenAPIDocuments", "build_documents", "openapi_v2", "openapi_v3_group_version"]
