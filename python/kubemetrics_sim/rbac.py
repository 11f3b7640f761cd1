"""Users, tokens and a small RBAC: what TokenReview and SubjectAccessReview answer from.

A Grant is a flattened (Cluster)Role + binding: subjects (users or groups) may do verbs on
resources (``pods``, ``nodes/metrics``…) in API groups, in some namespaces (or everywhere), or on
non-resource URLs. Group ``system:masters`` may do everything, as in Kubernetes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class UserInfo:
    name: str
    groups: tuple[str, ...]
    uid: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"username": self.name, "uid": self.uid, "groups": list(self.groups)}


@dataclass
class User:
    name: str
    token: str
    groups: tuple[str, ...]

    def info(self) -> UserInfo:
        groups = self.groups
        if "system:authenticated" not in groups:
            groups = (*groups, "system:authenticated")
        return UserInfo(self.name, groups, uid=f"uid-{self.name}")


@dataclass
class Grant:
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("get", "list", "watch")
    api_groups: tuple[str, ...] = ("",)
    resources: tuple[str, ...] = ()
    namespaces: tuple[str, ...] | None = None  # None: every namespace and cluster scope
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    name: str = ""

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grant:
        def t(key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
            v = d.get(key)
            if v is None:
                return default
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError(f"{key} must be a list of strings")
            return tuple(v)

        ns = d.get("namespaces")
        return cls(
            users=t("users"),
            groups=t("groups"),
            verbs=t("verbs", ("get", "list", "watch")),
            api_groups=t("api_groups", ("",)),
            resources=t("resources"),
            namespaces=None if ns is None else t("namespaces"),
            resource_names=t("resource_names"),
            non_resource_urls=t("non_resource_urls"),
            name=str(d.get("name", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "users": list(self.users),
            "groups": list(self.groups),
            "verbs": list(self.verbs),
            "api_groups": list(self.api_groups),
            "resources": list(self.resources),
            "namespaces": None if self.namespaces is None else list(self.namespaces),
            "resource_names": list(self.resource_names),
            "non_resource_urls": list(self.non_resource_urls),
        }

    def applies_to(self, user: UserInfo) -> bool:
        return user.name in self.users or any(g in self.groups for g in user.groups)


@dataclass
class Attributes:
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # non-resource requests

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)

    @classmethod
    def from_sar(cls, spec: dict[str, Any]) -> Attributes:
        ra = spec.get("resourceAttributes")
        if isinstance(ra, dict):
            return cls(
                verb=str(ra.get("verb", "")),
                api_group=str(ra.get("group", "")),
                resource=str(ra.get("resource", "")),
                subresource=str(ra.get("subresource", "")),
                namespace=str(ra.get("namespace", "")),
                name=str(ra.get("name", "")),
            )
        nra = spec.get("nonResourceAttributes") or {}
        return cls(verb=str(nra.get("verb", "")), path=str(nra.get("path", "")))


def _match(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value


def _url_match(pattern: str, path: str) -> bool:
    if pattern.endswith("*"):
        return path.startswith(pattern[:-1])
    return pattern == path


class Rbac:
    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.by_token: dict[str, User] = {}
        self.grants: list[Grant] = []
        self.generation = 0  # bumps on every change so caches (kubelets) drop stale answers

    def add_user(self, user: User) -> None:
        old = self.users.get(user.name)
        if old is not None:
            self.by_token.pop(old.token, None)
        self.users[user.name] = user
        if user.token:
            self.by_token[user.token] = user
        self.generation += 1

    def remove_user(self, name: str) -> bool:
        u = self.users.pop(name, None)
        if u is None:
            return False
        self.by_token.pop(u.token, None)
        self.generation += 1
        return True

    def add_grant(self, grant: Grant) -> None:
        self.grants.append(grant)
        self.generation += 1

    def remove_grants(self, name: str) -> int:
        before = len(self.grants)
        self.grants = [g for g in self.grants if g.name != name]
        self.generation += 1
        return before - len(self.grants)

    def authenticate(self, token: str) -> UserInfo | None:
        u = self.by_token.get(token)
        return u.info() if u else None

    def authorize(self, user: UserInfo, a: Attributes) -> tuple[bool, str]:
        if "system:masters" in user.groups:
            return True, "system:masters"
        res = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
        for g in self.grants:
            if not g.applies_to(user):
                continue
            if not any(_match(v, a.verb) for v in g.verbs):
                continue
            if not a.is_resource:
                if any(_url_match(p, a.path) for p in g.non_resource_urls):
                    return True, f"allowed by grant {g.name!r}"
                continue
            if not g.resources:
                continue
            if not any(_match(x, a.api_group) for x in g.api_groups):
                continue
            if not any(_match(r, res) for r in g.resources):
                continue
            if g.namespaces is not None and (not a.namespace or a.namespace not in g.namespaces):
                continue
            if g.resource_names and a.name not in g.resource_names:
                continue
            return True, f"allowed by grant {g.name!r}"
        return False, ""


def default_grants(viewer_namespace: str) -> list[Grant]:
    """Roughly the bootstrap ClusterRoles plus the metrics-server manifest's bindings."""
    sa = "system:serviceaccount:kube-system:metrics-server"
    return [
        Grant(
            name="system:public-info-viewer",
            groups=("system:authenticated", "system:unauthenticated"),
            verbs=("get",),
            non_resource_urls=("/version", "/version/", "/healthz", "/livez", "/readyz"),
        ),
        Grant(
            name="system:discovery",
            groups=("system:authenticated",),
            verbs=("get",),
            non_resource_urls=(
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/version",
                "/version/",
                "/healthz",
                "/livez",
                "/readyz",
                "/openapi",
                "/openapi/*",
            ),
        ),
        Grant(
            name="system:basic-user",
            groups=("system:authenticated",),
            verbs=("create",),
            api_groups=("authorization.k8s.io", "authentication.k8s.io"),
            resources=("selfsubjectaccessreviews", "selfsubjectrulesreviews", "selfsubjectreviews"),
        ),
        # metrics-server's own ClusterRole and bindings (upstream manifest).
        Grant(
            name="system:metrics-server",
            users=(sa,),
            verbs=("get", "list", "watch"),
            resources=("nodes", "pods", "namespaces"),
        ),
        Grant(
            name="system:metrics-server:nodes-metrics",
            users=(sa,),
            verbs=("get",),
            resources=("nodes/metrics",),
        ),
        Grant(
            name="system:auth-delegator",
            users=(sa,),
            verbs=("create",),
            api_groups=("authentication.k8s.io", "authorization.k8s.io"),
            resources=("tokenreviews", "subjectaccessreviews"),
        ),
        Grant(
            name="extension-apiserver-authentication-reader",
            users=(sa,),
            verbs=("get", "list", "watch"),
            resources=("configmaps",),
            namespaces=("kube-system",),
        ),
        # The namespace-scoped viewer: read pods and their metrics in one namespace.
        Grant(
            name="viewer",
            groups=("viewers",),
            verbs=("get", "list", "watch"),
            api_groups=("", "metrics.k8s.io"),
            resources=("pods",),
            namespaces=(viewer_namespace,),
        ),
    ]


@dataclass
class TokenCache:
    """Kubelet-side cache of (token → user, allowed) answers, like the kubelet's webhook cache."""

    ttl: float = 10.0
    entries: dict[tuple[str, str, int], tuple[float, UserInfo | None, bool]] = field(
        default_factory=dict
    )
