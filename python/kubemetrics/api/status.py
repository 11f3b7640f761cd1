"""Kubernetes `Status` error objects, shaped exactly as kube-apiserver writes them.

`StatusError` is the one exception for "a request failed with this `Status`", as client-go's
`errors.StatusError` is: our handlers raise it and the error middleware renders it, and the
API-server client (`kube.client`) raises it for the API server's own failure answers. This
module is a leaf (it imports nothing of the server but `gostrings`), so every layer may use it:
the listener answers with these too, for the requests it refuses before the app sees them.

Field order follows Go's `metav1.Status` JSON encoding (kind, apiVersion, metadata, status,
message, reason, details, code) and empty detail fields are omitted, as `omitempty` does, so
clients that compare bodies byte for byte (and humans diffing against upstream) see no change.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from kubemetrics.gostrings import go_quote

METRICS_GROUP = "metrics.k8s.io"


@dataclass(frozen=True, slots=True)
class StatusDetails:
    name: str = ""
    group: str = ""
    kind: str = ""
    causes: tuple[str, ...] = ()
    retry_after_seconds: int = 0

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.name:
            out["name"] = self.name
        if self.group:
            out["group"] = self.group
        if self.kind:
            out["kind"] = self.kind
        if self.causes:
            out["causes"] = [{"message": c} for c in self.causes]
        if self.retry_after_seconds:
            out["retryAfterSeconds"] = self.retry_after_seconds
        return out


@dataclass(frozen=True, slots=True)
class Status:
    """A failure `Status` (`status: "Failure"`)."""

    code: int
    reason: str
    message: str
    details: StatusDetails | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
        }
        if self.message:
            out["message"] = self.message
        if self.reason:
            out["reason"] = self.reason
        if self.details is not None:
            out["details"] = self.details.as_dict()
        out["code"] = self.code
        return out

    def to_json(self) -> bytes:
        # kube-apiserver's JSON serializer ends every document with a newline.
        return orjson.dumps(self.as_dict()) + b"\n"

    @classmethod
    def from_answer(cls, code: int, obj: Any) -> Status:
        """The `Status` an HTTP answer with status `code` carried (a decoded JSON body, or
        None); the HTTP code wins, as client-go's does when the body's is missing."""
        if not isinstance(obj, dict):
            return cls(code=code, reason="", message="")
        reason, message = obj.get("reason"), obj.get("message")
        return cls(
            code=code,
            reason=reason if isinstance(reason, str) else "",
            message=message if isinstance(message, str) else "",
        )


class StatusError(Exception):
    """A request failed with `status`: raised by our handlers (rendered by the error
    middleware) and by the API-server client (the API server's answer)."""

    def __init__(self, status: Status, message: str | None = None) -> None:
        super().__init__(message or status.message)
        self.status = status

    @property
    def code(self) -> int:
        return self.status.code

    @property
    def reason(self) -> str:
        return self.status.reason


def status_response(status: Status) -> web.Response:
    """The HTTP answer carrying `status` (with `Retry-After` when it names one)."""
    # kube-apiserver would encode Status as protobuf for a protobuf-only client; every client
    # of this API (client-go, kubectl, the HPA) decodes by the response Content-Type, so JSON
    # is always understood and keeps error bodies readable.
    resp = web.Response(body=status.to_json(), status=status.code, content_type="application/json")
    if status.details is not None and status.details.retry_after_seconds:
        resp.headers["Retry-After"] = str(status.details.retry_after_seconds)
    return resp


def _qualified(group: str, resource: str) -> str:
    # schema.GroupResource.String(): "resource.group", or just "resource" for the core group.
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> Status:
    """`errors.NewNotFound(GroupResource{group, resource}, name)`."""
    return Status(
        code=404,
        reason="NotFound",
        message=f"{_qualified(group, resource)} {go_quote(name)} not found",
        details=StatusDetails(name=name, group=group, kind=resource),
    )


def path_not_found() -> Status:
    """What kube-apiserver answers for a path nothing is installed at."""
    return Status(
        code=404,
        reason="NotFound",
        message="the server could not find the requested resource",
        details=StatusDetails(),
    )


def method_not_supported(group: str, resource: str, action: str) -> Status:
    """`errors.NewMethodNotSupported`: e.g. `watch` on a storage that cannot watch."""
    return Status(
        code=405,
        reason="MethodNotAllowed",
        message=(
            f"{action} is not supported on resources of kind "
            f"{go_quote(_qualified(group, resource))}"
        ),
        details=StatusDetails(group=group, kind=resource),
    )


def method_not_allowed() -> Status:
    """go-restful's answer to a method no route is registered for."""
    return Status(
        code=405,
        reason="MethodNotAllowed",
        message="the server does not allow this method on the requested resource",
        details=StatusDetails(),
    )


def bad_request(message: str) -> Status:
    return Status(code=400, reason="BadRequest", message=message)


def not_acceptable(supported: tuple[str, ...]) -> Status:
    return Status(
        code=406,
        reason="NotAcceptable",
        message="only the following media types are accepted: " + ", ".join(supported),
    )


def malformed_request(what: str) -> Status:
    """A request aiohttp's parser refused (bad request line, header, framing): a 400 that
    names what was wrong, in the parser's words (the sender's own bytes, nobody else's)."""
    return bad_request(f"malformed HTTP request: {what}" if what else "malformed HTTP request")


def header_timeout(seconds: float) -> Status:
    """The request head did not arrive within --read-header-timeout (408; there is no
    Kubernetes reason for it, and "Timeout" is the nearest)."""
    return Status(
        code=408,
        reason="Timeout",
        message=f"the request head did not arrive within {seconds:g}s",
    )


def header_too_large(limit: int) -> Status:
    """The request head is over --max-header-bytes (431; "RequestEntityTooLarge" is the
    Kubernetes reason nearest to it)."""
    return Status(
        code=431,
        reason="RequestEntityTooLarge",
        message=f"the request head is larger than {limit} bytes",
    )


def unauthorized() -> Status:
    return Status(code=401, reason="Unauthorized", message="Unauthorized")


def forbidden(group: str, resource: str, name: str, message: str) -> Status:
    """`errors.NewForbidden` with the authorizer's message (see `api.auth`)."""
    if not group and not resource:
        text = f"forbidden: {message}"
    elif not name:
        text = f"{_qualified(group, resource)} is forbidden: {message}"
    else:
        text = f"{_qualified(group, resource)} {go_quote(name)} is forbidden: {message}"
    return Status(
        code=403,
        reason="Forbidden",
        message=text,
        details=StatusDetails(name=name, group=group, kind=resource),
    )


def too_many_requests(retry_after_seconds: int) -> Status:
    """`errors.NewTooManyRequests`; answered with a matching `Retry-After` header."""
    return Status(
        code=429,
        reason="TooManyRequests",
        message="Too many requests, please try again later.",
        details=StatusDetails(retry_after_seconds=retry_after_seconds),
    )


def internal_error(message: str) -> Status:
    return Status(
        code=500,
        reason="InternalError",
        message=f"Internal error occurred: {message}",
        details=StatusDetails(causes=(message,)),
    )


def withheld_internal_error(what: str) -> tuple[Status, str]:
    """A 500 that says only `what` failed, and the reference under which the caller logs the
    details: exception text and the API server's messages are for the log, not for clients
    (who may not even be authenticated)."""
    reference = secrets.token_hex(6)
    return internal_error(f"{what} (details in the server log, reference {reference})"), reference
