"""The security slot: who is asking (authentication), may they be served now (admission),
and may they (authorization).

The HTTP layer derives kube-apiserver's request attributes from every request (resource requests
under `/apis/metrics.k8s.io/VERSION/...`, non-resource requests for everything else), asks the
`Authenticator` for the user, enters the `Admission` (kube-apiserver's max-in-flight filter sits
there too, between authentication and authorization), then asks the `Authorizer` for a decision,
and renders 401/403 `Status` bodies the way kube-apiserver does. Delegated authn/authz
(TokenReview, SubjectAccessReview, front-proxy headers, client certificates, always-allow paths,
`system:masters`) plugs in here by implementing the Protocols; routes never change. The
defaults allow everything.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from kubemetrics.gostrings import go_quote


@dataclass(frozen=True, slots=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


ANONYMOUS = UserInfo("system:anonymous", ("system:unauthenticated",))


class AuthenticationError(Exception):
    """An authenticator failed (bad token, review error): 401, never a fall back to anonymous."""


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request) -> UserInfo:
        """The requester. TLS peer certificates are on `request.transport`; headers on
        `request.headers`. Return `ANONYMOUS` when no credential was presented; raise
        `AuthenticationError` when one was and it failed."""
        ...


@dataclass(frozen=True, slots=True)
class RequestAttributes:
    """kube-apiserver's `authorizer.Attributes` for one request.

    Resource requests (`resource_request=True`): `verb` is get/list/watch (create, update, patch,
    delete, deletecollection for other methods), `api_group` `metrics.k8s.io`, `api_version`,
    `resource` (`nodes`/`pods`), `subresource`, `namespace`, `name`. Non-resource requests: `path`
    and `verb` = the lower-cased HTTP method.
    """

    user: UserInfo
    verb: str
    path: str
    resource_request: bool
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOW = Decision(True)


class Authorizer(Protocol):
    async def authorize(self, attributes: RequestAttributes) -> Decision: ...


class Admission(Protocol):
    def admit(
        self, request: web.Request, user: UserInfo
    ) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while the request is authorized and handled; raise `StatusError` (429) to
        turn it away."""
        ...


class AdmitAll:
    """Default admission: no limit."""

    @contextlib.asynccontextmanager
    async def admit(self, request: web.Request, user: UserInfo) -> AsyncIterator[None]:
        yield


class AllowAnonymous:
    """Default authenticator until delegated authentication is wired: everyone is anonymous."""

    async def authenticate(self, request: web.Request) -> UserInfo:
        return ANONYMOUS


class AllowAll:
    """Default authorizer until delegated authorization is wired."""

    async def authorize(self, attributes: RequestAttributes) -> Decision:
        return ALLOW


def forbidden_message(attrs: RequestAttributes) -> str:
    """kube-apiserver's `forbiddenMessage` (responsewriters/errors.go)."""
    user = go_quote(attrs.user.name)
    if not attrs.resource_request:
        return f"User {user} cannot {attrs.verb} path {go_quote(attrs.path)}"
    resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    if attrs.namespace:
        return (
            f"User {user} cannot {attrs.verb} resource {go_quote(resource)} in API group "
            f"{go_quote(attrs.api_group)} in the namespace {go_quote(attrs.namespace)}"
        )
    return (
        f"User {user} cannot {attrs.verb} resource {go_quote(resource)} in API group "
        f"{go_quote(attrs.api_group)} at the cluster scope"
    )
