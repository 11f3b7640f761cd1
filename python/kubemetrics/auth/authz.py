"""Delegated authorization: may this user do this?

In upstream's order (k8s.io/apiserver's delegating authorizer), first decision wins:

1. a user in an always-allowed group (`system:masters`) may do anything — this is what lets
   kube-apiserver's availability probe (`system:kube-aggregator`) through;
2. non-resource requests to `--authorization-always-allow-paths` (exact, or a prefix when the
   entry ends in `*`) are allowed for everyone;
3. everything else is a `SubjectAccessReview` (authorization.k8s.io/v1) for the end user; allowed
   and denied answers are cached for their own TTLs.

A review that cannot be made (API server unreachable, an error status) is neither allowed nor
denied: the request fails with 500, as kube-apiserver's authorization filter answers when its
authorizer errors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubemetrics.api.hooks import ALLOW, Decision, RequestAttributes, UserInfo
from kubemetrics.api.status import StatusError, too_many_requests, withheld_internal_error
from kubemetrics.auth.authn import REVIEW_TIMEOUT, THROTTLED_RETRY_AFTER, ReviewClient
from kubemetrics.auth.cache import TTLCache
from kubemetrics.auth.throttle import ReviewBudget, ReviewThrottled
from kubemetrics.kube.client import ApiConnectionError
from kubemetrics.logs import kv

log = logging.getLogger("kubemetrics.auth")

SUBJECT_ACCESS_REVIEW_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


def _withheld(what: str, detail: str) -> StatusError:
    """The 500 a failed review gives: no detail for the client, all of it in the log."""
    status, reference = withheld_internal_error("authorization failed")
    log.warning(what, extra=kv(err=detail, reference=reference))
    return StatusError(status)


class PathMatcher:
    """`--authorization-always-allow-paths`: exact paths, or prefixes written `/prefix*`."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._exact = frozenset(p for p in patterns if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def __call__(self, path: str) -> bool:
        return path in self._exact or any(path.startswith(p) for p in self._prefixes)


def _review_key(a: RequestAttributes) -> tuple[Any, ...]:
    u = a.user
    extra = tuple(sorted((k, tuple(v)) for k, v in u.extra.items()))
    if a.resource_request:
        what: tuple[str, ...] = (
            "r",
            a.verb,
            a.api_group,
            a.api_version,
            a.resource,
            a.subresource,
            a.namespace,
            a.name,
        )
    else:
        what = ("n", a.verb, a.path)
    return (u.name, u.uid, tuple(u.groups), extra, what)


def subject_access_review(a: RequestAttributes) -> dict[str, Any]:
    """The SubjectAccessReview body for these attributes (end user, resource or path)."""
    u: UserInfo = a.user
    spec: dict[str, Any] = {"user": u.name, "groups": list(u.groups)}
    if u.uid:
        spec["uid"] = u.uid
    if u.extra:
        spec["extra"] = {k: list(v) for k, v in u.extra.items()}
    if a.resource_request:
        spec["resourceAttributes"] = {
            k: v
            for k, v in (
                ("namespace", a.namespace),
                ("verb", a.verb),
                ("group", a.api_group),
                ("version", a.api_version),
                ("resource", a.resource),
                ("subresource", a.subresource),
                ("name", a.name),
            )
            if v
        }
    else:
        spec["nonResourceAttributes"] = {"path": a.path, "verb": a.verb}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}


@dataclass(frozen=True)
class _Answer:
    decision: Decision
    denied: bool = False  # an explicit deny, as opposed to "no opinion"


class DelegatingAuthorizer:
    """The `api.hooks.Authorizer`."""

    def __init__(
        self,
        client: ReviewClient | None,
        *,
        always_allow_groups: tuple[str, ...] = ("system:masters",),
        always_allow_paths: tuple[str, ...] = ("/healthz", "/readyz", "/livez"),
        allowed_ttl: float = 10.0,
        denied_ttl: float = 10.0,
        budget: ReviewBudget | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._client = client
        self._groups = frozenset(always_allow_groups)
        self._paths = PathMatcher(always_allow_paths)
        # Each user spends their own fair share (auth.throttle); past it, 429.
        self.budget = budget or ReviewBudget("subjectaccessreviews")
        kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
        # Denials in their own partition: a stream of denied requests never evicts what
        # allowed users are answered from.
        self._cache: TTLCache[tuple[Any, ...], _Answer] = TTLCache(
            lambda a: allowed_ttl if a.decision.allowed else denied_ttl,
            expendable=lambda a: not a.decision.allowed,
            **kwargs,
        )
        self.reviews = 0  # SubjectAccessReviews sent, for tests and debugging

    @property
    def cache(self) -> TTLCache[tuple[Any, ...], _Answer]:
        return self._cache

    async def authorize(self, attributes: RequestAttributes) -> Decision:
        if self._groups.intersection(attributes.user.groups):
            return ALLOW
        if not attributes.resource_request and self._paths(attributes.path):
            return ALLOW
        if self._client is None:
            return Decision(False, "no authorization-kubeconfig to ask the cluster with")
        answer = await self._cache.get_or_load(
            _review_key(attributes), lambda: self._review(attributes)
        )
        return answer.decision

    async def _review(self, a: RequestAttributes) -> _Answer:
        assert self._client is not None
        try:
            async with self.budget.slot(a.user.name):
                self.reviews += 1
                out = await self._client.post_json(
                    SUBJECT_ACCESS_REVIEW_PATH,
                    subject_access_review(a),
                    request_timeout=REVIEW_TIMEOUT,
                )
        except ReviewThrottled:
            raise StatusError(too_many_requests(THROTTLED_RETRY_AFTER)) from None
        except (StatusError, ApiConnectionError) as e:
            raise _withheld("SubjectAccessReview failed", str(e)) from None
        status = out.get("status") if isinstance(out, dict) else None
        if not isinstance(status, dict):
            raise _withheld("SubjectAccessReview answer without a status", repr(out)[:200])
        reason = str(status.get("reason") or "")
        if status.get("allowed"):
            return _Answer(Decision(True, reason))
        err = str(status.get("evaluationError") or "")
        if err and not reason:
            reason = err
        return _Answer(Decision(False, reason), denied=bool(status.get("denied")))
