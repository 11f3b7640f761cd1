"""Discovery documents (`/apis`, `/apis/metrics.k8s.io`, `/apis/metrics.k8s.io/VERSION`) and
`/version`, rendered once: they never change while the server runs.

kube-apiserver's aggregator reads `/apis/metrics.k8s.io/VERSION` to decide whether the APIService
is available; `kubectl` reads the resource list to learn that `nodes`/`pods` exist, their kinds,
scope and verbs.
"""

from __future__ import annotations

import platform
import re
import sys
from dataclasses import dataclass

import orjson

from kubemetrics.api.status import METRICS_GROUP

# Served versions, most preferred first: v1 is GA (KEP-5207) and has the same schema.
VERSIONS: tuple[str, ...] = ("v1", "v1beta1")
PREFERRED_VERSION = VERSIONS[0]


@dataclass(frozen=True, slots=True)
class Resource:
    name: str
    kind: str
    list_kind: str
    namespaced: bool


NODES = Resource("nodes", "NodeMetrics", "NodeMetricsList", namespaced=False)
PODS = Resource("pods", "PodMetrics", "PodMetricsList", namespaced=True)
RESOURCES: tuple[Resource, ...] = (NODES, PODS)
VERBS: tuple[str, ...] = ("get", "list")


def _gv(version: str) -> dict[str, str]:
    return {"groupVersion": f"{METRICS_GROUP}/{version}", "version": version}


def _group() -> dict[str, object]:
    return {
        "name": METRICS_GROUP,
        "versions": [_gv(v) for v in VERSIONS],
        "preferredVersion": _gv(PREFERRED_VERSION),
    }


def _dumps(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


def api_group_list() -> bytes:
    """`GET /apis`."""
    return _dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group()]})


def api_group() -> bytes:
    """`GET /apis/metrics.k8s.io`."""
    return _dumps({"kind": "APIGroup", "apiVersion": "v1", **_group()})


def api_resource_list(version: str) -> bytes:
    """`GET /apis/metrics.k8s.io/VERSION` (upstream reports an empty `singularName`)."""
    return _dumps(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{METRICS_GROUP}/{version}",
            "resources": [
                {
                    "name": r.name,
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": list(VERBS),
                }
                for r in RESOURCES
            ],
        }
    )


def version_info(version: str, git_commit: str = "", build_date: str = "") -> bytes:
    """`GET /version`: `k8s.io/apimachinery/pkg/version.Info` describing this build."""
    m = re.match(r"v?(\d+)\.(\d+)", version)
    major, minor = (m.group(1), m.group(2)) if m else ("", "")
    git_version = version if version.startswith("v") else f"v{version}"
    return _dumps(
        {
            "major": major,
            "minor": minor,
            "gitVersion": git_version,
            "gitCommit": git_commit,
            "gitTreeState": "",
            "buildDate": build_date,
            # the Info schema names the toolchain "goVersion"; ours is the Python runtime
            "goVersion": f"python{platform.python_version()}",
            "compiler": sys.implementation.name,
            "platform": f"{sys.platform}/{_arch()}",
        }
    )


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
