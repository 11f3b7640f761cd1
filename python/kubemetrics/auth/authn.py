"""Delegated authentication: who is asking.

The chain, in kube-apiserver's order for aggregated servers (k8s.io/apiserver's delegating
authenticator):

1. front-proxy request headers (`X-Remote-User`, `X-Remote-Group`, `X-Remote-Extra-*`, names
   configurable), believed only when the TLS client certificate verifies against the
   request-header CA and its CN is among the allowed names (none listed: any CN);
2. a client certificate verified against the client CA: CN is the user, O the groups;
3. a bearer token, checked with a `TokenReview` (answers cached, keyed by a hash of the token);
4. anonymous: `system:anonymous` in `system:unauthenticated`.

Like upstream's union authenticator, a later step may succeed after an earlier one failed; when
none succeeds and any failed (an unverifiable certificate, a rejected token, TokenReview
unreachable), the request is refused with 401 rather than treated as anonymous.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubemetrics.api.hooks import ANONYMOUS, AuthenticationError, UserInfo
from kubemetrics.api.status import StatusError, too_many_requests
from kubemetrics.auth.cache import TTLCache
from kubemetrics.auth.throttle import ReviewBudget, ReviewThrottled
from kubemetrics.kube.client import ApiConnectionError

log = logging.getLogger("kubemetrics.auth")

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
TOKEN_REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
REVIEW_TIMEOUT = 10.0  # seconds per review request
THROTTLED_RETRY_AFTER = 1  # Retry-After of a request whose review the budget refused
VERIFIED_TTL = 60.0  # seconds a successful client-certificate verification is reused


# --- certificates ----------------------------------------------------------------------------


class CertificateError(Exception):
    """A client certificate does not verify against a CA bundle (or is not for clients)."""


@dataclass(frozen=True)
class CABundle:
    """A PEM bundle of trusted CA certificates (every one a trust anchor, as in Go)."""

    pem: bytes
    certs: tuple[x509.Certificate, ...]
    source: str = ""
    # Leaf DER -> when its successful verification must be redone. The aggregator sends every
    # request with the same certificate; one chain verification per minute is plenty.
    _verified: dict[bytes, float] = field(default_factory=dict, compare=False, repr=False)
    # Leaf DER -> (until when, why) for certificates that did not verify: a client whose
    # certificate is from another CA (the front-proxy step sees every direct client's) would
    # otherwise pay a failing chain verification on every request.
    _failed: dict[bytes, tuple[float, str]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_pem(cls, pem: bytes | str, source: str = "") -> CABundle:
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            certs = tuple(x509.load_pem_x509_certificates(data))
        except ValueError as e:
            raise ValueError(f"{source or 'CA bundle'}: no valid PEM certificates: {e}") from e
        return cls(data, certs, source)

    def __bool__(self) -> bool:
        return bool(self.certs)

    def verify_client(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate] = (),
        now: datetime.datetime | None = None,
    ) -> None:
        """Raise CertificateError unless `leaf` chains to one of these CAs as a client cert."""
        if not self.certs:
            raise CertificateError("no CA configured")
        der = leaf.public_bytes(serialization.Encoding.DER)
        wall = time.time()
        if now is None:
            if self._verified.get(der, 0.0) > wall:
                return
            failed = self._failed.get(der)
            if failed is not None and failed[0] > wall:
                raise CertificateError(failed[1])
        try:
            self._verify(leaf, intermediates, now)
        except CertificateError as e:
            if now is None:
                if len(self._failed) > 1024:
                    self._failed.clear()
                self._failed[der] = (wall + VERIFIED_TTL, str(e))
            raise
        if now is None:
            if len(self._verified) > 1024:
                self._verified.clear()
            expires = leaf.not_valid_after_utc.timestamp()
            self._verified[der] = min(wall + VERIFIED_TTL, expires)

    def _verify(
        self,
        leaf: x509.Certificate,
        intermediates: Sequence[x509.Certificate],
        now: datetime.datetime | None,
    ) -> None:
        _check_client_usage(leaf)
        builder = (
            verification.PolicyBuilder()
            .store(verification.Store(list(self.certs)))
            .time(now or datetime.datetime.now(datetime.UTC))
            .extension_policies(
                # CA rules as the Web PKI has them; the leaf's extended key usage is checked
                # above the way Go does it (client auth, any, or none at all).
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
        )
        try:
            builder.build_client_verifier().verify(leaf, list(intermediates))
        except verification.VerificationError as e:
            raise CertificateError(str(e)) from None


def _check_client_usage(leaf: x509.Certificate) -> None:
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in eku:
        return
    raise CertificateError("certificate specifies an incompatible key usage")


def _names(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    out: list[str] = []
    for attr in cert.subject.get_attributes_for_oid(oid):
        value = attr.value
        out.append(value.decode(errors="replace") if isinstance(value, bytes) else value)
    return out


def common_name(cert: x509.Certificate) -> str:
    names = _names(cert, NameOID.COMMON_NAME)
    return names[0] if names else ""


def _describe(cert: x509.Certificate) -> str:
    return f'"{cert.subject.rfc4514_string()}" issued by "{cert.issuer.rfc4514_string()}"'


@dataclass(frozen=True)
class PeerCertificates:
    """The client's certificate and any intermediates it sent, as parsed certificates."""

    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...] = ()


def peer_certificates(request: web.Request) -> PeerCertificates | None:
    """The TLS client certificate of this request's connection, if one was presented.

    The handshake already verified it against the union of the trusted CAs; which CA vouches
    for it is decided per authenticator.
    """
    transport = request.transport
    if transport is None:
        return None
    sslobj = transport.get_extra_info("ssl_object")
    if not isinstance(sslobj, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return None
    cached = _PEER_CACHE.get(der)
    if cached is not None:
        return cached
    leaf = x509.load_der_x509_certificate(der)
    inter: list[x509.Certificate] = []
    # Python 3.13 has SSLObject.get_unverified_chain(); 3.10-3.12 have it on the private
    # _sslobj. Without it only the leaf is known (then it must be issued by a bundle's CA).
    getter = getattr(sslobj, "get_unverified_chain", None) or getattr(
        getattr(sslobj, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is not None:
        try:
            for c in (getter() or [])[1:]:
                inter.append(x509.load_der_x509_certificate(c.public_bytes(_ENCODING_DER)))
        except (ValueError, AttributeError, ssl.SSLError):
            inter = []
    peer = PeerCertificates(leaf, tuple(inter))
    if len(_PEER_CACHE) > 1024:
        _PEER_CACHE.clear()
    _PEER_CACHE[der] = peer
    return peer


# _ssl.ENCODING_DER (not in typeshed): the format argument of Certificate.public_bytes.
_ENCODING_DER: int = getattr(ssl, "ENCODING_DER", 2)
# Parsed peer certificates by DER: a kept-alive connection (the aggregator's) sends many
# requests with the same certificate.
_PEER_CACHE: dict[bytes, PeerCertificates] = {}


# --- the steps of the chain ------------------------------------------------------------------


class _Step(Protocol):
    async def __call__(self, request: web.Request) -> UserInfo | None:
        """The user, None when this step has no opinion; raise AuthenticationError if failed."""
        ...


@dataclass(frozen=True)
class RequestHeaderConfig:
    """Front-proxy settings: the CA its client certificate must verify against, the CNs
    allowed to assert identities (empty: any), and the header names."""

    ca: CABundle
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    uid_headers: tuple[str, ...] = ()
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_headers_prefix: tuple[str, ...] = ("X-Remote-Extra-",)


def _first_value(headers: Mapping[str, str], names: Sequence[str]) -> str:
    getall = getattr(headers, "getall", None)
    for name in names:
        name = name.strip()
        if not name:
            continue
        values = getall(name, []) if getall else [headers.get(name, "")]
        if values and values[0]:
            return str(values[0])
    return ""


def _all_values(headers: Any, names: Sequence[str]) -> list[str]:
    out: list[str] = []
    for name in names:
        name = name.strip()
        if name:
            out += [v for v in headers.getall(name, []) if v]
    return out


def _extra(headers: Any, prefixes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    extra: dict[str, list[str]] = {}
    lowered = [p.strip().lower() for p in prefixes if p.strip()]
    for name, value in headers.items():
        lname = name.lower()
        for prefix in lowered:
            if lname.startswith(prefix) and len(lname) > len(prefix):
                # Keys are percent-encoded on the wire (KEP 1013) and case-insensitive.
                key = unquote(lname[len(prefix) :])
                extra.setdefault(key, []).append(value)
                break
    return {k: tuple(v) for k, v in extra.items()}


class RequestHeaderAuthenticator:
    """Step 1: identities asserted by kube-apiserver's front proxy."""

    def __init__(self, config: Callable[[], RequestHeaderConfig | None]) -> None:
        self._config = config

    async def __call__(self, request: web.Request) -> UserInfo | None:
        cfg = self._config()
        if cfg is None or not cfg.ca:
            return None
        peer = peer_certificates(request)
        if peer is None:
            return None
        try:
            cfg.ca.verify_client(peer.leaf, peer.intermediates)
        except CertificateError as e:
            raise AuthenticationError(
                f"front-proxy: certificate {_describe(peer.leaf)} does not verify against the "
                f"request-header CA: {e}"
            ) from None
        cn = common_name(peer.leaf)
        if cfg.allowed_names and cn not in cfg.allowed_names:
            raise AuthenticationError(
                f"front-proxy: certificate CN {cn!r} is not in the allowed names "
                f"{list(cfg.allowed_names)}"
            )
        headers = request.headers
        name = _first_value(headers, cfg.username_headers)
        if not name:
            return None
        return UserInfo(
            name=name,
            groups=tuple(_all_values(headers, cfg.group_headers)),
            uid=_first_value(headers, cfg.uid_headers),
            extra=_extra(headers, cfg.extra_headers_prefix),
        )


class ClientCertAuthenticator:
    """Step 2: a client certificate from the client CA (CN = user, O = groups)."""

    def __init__(self, ca: Callable[[], CABundle | None]) -> None:
        self._ca = ca

    async def __call__(self, request: web.Request) -> UserInfo | None:
        ca = self._ca()
        if ca is None or not ca:
            return None
        peer = peer_certificates(request)
        if peer is None:
            return None
        try:
            ca.verify_client(peer.leaf, peer.intermediates)
        except CertificateError as e:
            raise AuthenticationError(
                f"x509: certificate {_describe(peer.leaf)} does not verify against the client "
                f"CA: {e}"
            ) from None
        cn = common_name(peer.leaf)
        if not cn:
            raise AuthenticationError("x509: certificate has no common name")
        return UserInfo(name=cn, groups=tuple(_names(peer.leaf, NameOID.ORGANIZATION_NAME)))


class ReviewClient(Protocol):
    """What the reviews need from `kube.client.ApiClient`."""

    async def post_json(self, path: str, obj: Any, request_timeout: float | None = None) -> Any: ...


@dataclass(frozen=True)
class TokenAnswer:
    user: UserInfo | None  # None: the token was rejected
    error: str = ""


def client_of(request: web.Request) -> str:
    """The client's address: whose fair share of the TokenReview budget a request spends."""
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer TOKEN` (scheme case-insensitive), else None."""
    auth = request.headers.get("Authorization", "").strip()
    if not auth:
        return None
    parts = auth.split(" ", 2)
    if len(parts) < 2 or parts[0].lower() != "bearer" or not parts[1]:
        return None
    return parts[1]


class TokenReviewAuthenticator:
    """Step 3: bearer tokens checked with `TokenReview` (authentication.k8s.io/v1).

    Accepted and rejected answers are cached for `ttl` seconds under a SHA-256 of the token (the
    token itself is never kept), as upstream caches both; rejections in a partition of their
    own, so bogus tokens never push out accepted ones. A review that could not be made is not
    cached. Reviews are made within `budget` (`auth.throttle`), each client address its fair
    share; past it the request is answered 429.
    """

    def __init__(
        self,
        client: ReviewClient | None,
        ttl: float = 10.0,
        *,
        audiences: tuple[str, ...] = (),
        budget: ReviewBudget | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._client = client
        self._audiences = audiences
        self.budget = budget or ReviewBudget("tokenreviews")
        kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
        self._cache: TTLCache[bytes, TokenAnswer] = TTLCache(
            lambda _a: ttl, expendable=lambda a: a.user is None, **kwargs
        )
        self.reviews = 0  # TokenReviews sent, for tests and debugging

    @property
    def cache(self) -> TTLCache[bytes, TokenAnswer]:
        return self._cache

    async def __call__(self, request: web.Request) -> UserInfo | None:
        token = bearer_token(request)
        if token is None:
            return None
        if self._client is None:
            raise AuthenticationError("bearer token given but no authentication-kubeconfig")
        key = hashlib.sha256(token.encode()).digest()
        answer = await self._cache.get_or_load(key, lambda: self._review(token, client_of(request)))
        if answer.user is None:
            raise AuthenticationError(f"token rejected: {answer.error or 'invalid bearer token'}")
        return answer.user

    async def _review(self, token: str, caller: str) -> TokenAnswer:
        assert self._client is not None
        spec: dict[str, Any] = {"token": token}
        if self._audiences:
            spec["audiences"] = list(self._audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        try:
            async with self.budget.slot(caller):
                self.reviews += 1
                out = await self._client.post_json(
                    TOKEN_REVIEW_PATH, body, request_timeout=REVIEW_TIMEOUT
                )
        except ReviewThrottled:
            raise StatusError(too_many_requests(THROTTLED_RETRY_AFTER)) from None
        except (StatusError, ApiConnectionError) as e:
            # Not an answer about the token: refuse this request, ask again next time.
            raise AuthenticationError(f"TokenReview failed: {e}") from None
        status = out.get("status") if isinstance(out, dict) else None
        if not isinstance(status, dict):
            raise AuthenticationError("TokenReview failed: response without a status")
        if not status.get("authenticated"):
            return TokenAnswer(None, str(status.get("error") or ""))
        u = status.get("user") or {}
        extra = u.get("extra") or {}
        return TokenAnswer(
            UserInfo(
                name=str(u.get("username", "")),
                groups=tuple(str(g) for g in u.get("groups") or ()),
                uid=str(u.get("uid", "")),
                extra={str(k): tuple(str(x) for x in v or ()) for k, v in extra.items()},
            )
        )


# --- the chain -------------------------------------------------------------------------------


@dataclass
class AuthenticatorChain:
    """The `api.hooks.Authenticator`: the steps in order, then anonymous."""

    steps: list[_Step] = field(default_factory=list)
    anonymous: bool = True

    async def authenticate(self, request: web.Request) -> UserInfo:
        errors: list[str] = []
        for step in self.steps:
            try:
                user = await step(request)
            except AuthenticationError as e:
                errors.append(str(e))
                continue
            if user is not None:
                return _with_authenticated_group(user)
        if errors:
            raise AuthenticationError("; ".join(errors))
        if not self.anonymous:
            raise AuthenticationError("no credentials")
        return ANONYMOUS


def _with_authenticated_group(user: UserInfo) -> UserInfo:
    """Every authenticated user is in system:authenticated (upstream's group adder)."""
    if AUTHENTICATED in user.groups or UNAUTHENTICATED in user.groups:
        return user
    return UserInfo(user.name, (*user.groups, AUTHENTICATED), user.uid, user.extra)
