"""Delegated authentication and authorization, in process, over real TLS and real HTTP.

The API server is a small aiohttp double that speaks the real review protocol
(`TokenReview`, `SubjectAccessReview` v1, the authentication ConfigMap) and counts what it is
asked; the server side is the real chain behind `DynamicServingTLS`. Certificates come from
throwaway CAs.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubemetrics.api.hooks import AuthenticationError, RequestAttributes, UserInfo
from kubemetrics.api.status import StatusError
from kubemetrics.auth import DelegatedAuthentication, DynamicServingTLS
from kubemetrics.auth.authn import (
    AuthenticatorChain,
    CABundle,
    CertificateError,
    ClientCertAuthenticator,
    RequestHeaderAuthenticator,
    TokenReviewAuthenticator,
)
from kubemetrics.auth.authz import DelegatingAuthorizer, PathMatcher, subject_access_review
from kubemetrics.auth.cache import TTLCache
from kubemetrics.auth.delegation import AuthConfigError, parse_configmap
from kubemetrics.config import AuthnConfig, ServingConfig
from kubemetrics.kube.client import ApiClient, ClusterCredentials, TokenSource
from kubemetrics_sim.certs import Authority
from tests.helpers.kube import FakeApiServer, until

# --- helpers -----------------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@dataclass
class Pki:
    """A client CA, a front-proxy CA, a stranger CA and a serving pair, on disk."""

    root: Path
    client_ca: Authority = field(default_factory=lambda: Authority.create("client-ca"))
    proxy_ca: Authority = field(default_factory=lambda: Authority.create("front-proxy-ca"))
    stranger_ca: Authority = field(default_factory=lambda: Authority.create("stranger-ca"))
    server_ca: Authority = field(default_factory=lambda: Authority.create("serving-ca"))

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.client_ca_file = write(self.root / "client-ca.crt", self.client_ca.cert_pem)
        self.proxy_ca_file = write(self.root / "proxy-ca.crt", self.proxy_ca.cert_pem)
        self.server_ca_file = write(self.root / "serving-ca.crt", self.server_ca.cert_pem)
        cert, key = self.server_ca.issue("localhost", ips=("127.0.0.1",), server=True)
        self.cert_file = write(self.root / "tls.crt", cert)
        self.key_file = write(self.root / "tls.key", key)

    def client(self, ca: Authority, cn: str, *orgs: str, client: bool = True) -> tuple[str, str]:
        cert, key = ca.issue(cn, organizations=orgs, client=client, server=not client)
        base = self.root / f"{ca.name}-{cn}"
        return write(base.with_suffix(".crt"), cert), write(base.with_suffix(".key"), key)


@contextlib.asynccontextmanager
async def fake_apiserver(fake: FakeApiServer) -> AsyncIterator[ApiClient]:
    """The fake API server (plain HTTP) and a client of it."""
    await fake.start()
    client = ApiClient(ClusterCredentials(server=fake.url, token=TokenSource("Bearer sa")))
    try:
        yield client
    finally:
        await client.close()
        await fake.stop()


# --- a TLS server whose handler reports the authenticated user --------------------------------


@contextlib.asynccontextmanager
async def whoami_server(
    pki: Pki, chain: AuthenticatorChain, sources: DelegatedAuthentication
) -> AsyncIterator[tuple[str, DynamicServingTLS]]:
    async def whoami(request: web.Request) -> web.Response:
        try:
            user = await chain.authenticate(request)
        except AuthenticationError as e:
            return web.json_response({"error": str(e)}, status=401)
        return web.json_response(
            {
                "name": user.name,
                "groups": list(user.groups),
                "uid": user.uid,
                "extra": {k: list(v) for k, v in user.extra.items()},
            }
        )

    app = web.Application()
    app.router.add_get("/", whoami)
    tls = DynamicServingTLS(
        ServingConfig(),
        pki.cert_file,
        pki.key_file,
        client_cas=sources.trusted_pem,
        poll_seconds=0.1,
    )
    sources.listeners.append(tls.client_cas_changed)
    base = await tls.start()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=base)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"https://{host}:{port}/", tls
    finally:
        await runner.cleanup()
        await tls.close()
        await sources.close()


async def get(
    url: str,
    pki: Pki,
    cert: tuple[str, str] | None = None,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
) -> tuple[int, dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=pki.server_ca_file)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    async with (
        aiohttp.ClientSession() as s,
        # a list keeps repeated headers (a mapping would merge them)
        s.get(
            url,
            ssl=ctx,
            headers=list(dict(headers or {}).items()) if not isinstance(headers, list) else headers,
        ) as r,
    ):
        return r.status, await r.json()


def make_chain(
    pki: Pki, client: ApiClient | None, **authn: Any
) -> tuple[AuthenticatorChain, DelegatedAuthentication, TokenReviewAuthenticator]:
    cfg = AuthnConfig(
        skip_lookup=True,
        client_ca_file=pki.client_ca_file,
        requestheader_client_ca_file=pki.proxy_ca_file,
        requestheader_allowed_names=("front-proxy-client",),
        **authn,
    )
    sources = DelegatedAuthentication(cfg, None, file_poll_seconds=0.1)
    tokens = TokenReviewAuthenticator(client, ttl=10.0)
    chain = AuthenticatorChain(
        [
            RequestHeaderAuthenticator(sources.request_header),
            ClientCertAuthenticator(sources.client_ca),
            tokens,
        ]
    )
    return chain, sources, tokens


# --- caches -----------------------------------------------------------------------------------


def test_ttl_cache_expires_and_shares_one_load_between_concurrent_callers() -> None:
    async def main() -> None:
        clock = Clock()
        cache: TTLCache[str, int] = TTLCache(lambda v: 5.0 if v > 0 else 1.0, clock=clock)
        loads = 0
        gate = asyncio.Event()

        async def load() -> int:
            nonlocal loads
            loads += 1
            await gate.wait()
            return 7

        waiters = [asyncio.create_task(cache.get_or_load("k", load)) for _ in range(5)]
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.gather(*waiters) == [7] * 5
        assert loads == 1
        clock.now += 4.9
        assert await cache.get_or_load("k", load) == 7 and loads == 1
        clock.now += 0.2
        assert await cache.get_or_load("k", load) == 7 and loads == 2

        async def negative() -> int:
            return -1

        assert await cache.get_or_load("n", negative) == -1
        clock.now += 1.0  # the TTL is chosen per value
        assert cache.get("n") is None

        async def boom() -> int:
            raise RuntimeError("review failed")

        with pytest.raises(RuntimeError):
            await cache.get_or_load("e", boom)
        assert cache.get("e") is None  # failures are not cached

        small: TTLCache[int, int] = TTLCache(lambda v: 60.0, max_entries=3, clock=clock)
        for i in range(5):
            small.put(i, i)
        assert [small.get(i) for i in range(5)] == [None, None, 2, 3, 4]

    run(main())


# --- certificates -----------------------------------------------------------------------------


def _cert(ca: Authority, cn: str, **kw: Any) -> x509.Certificate:
    return x509.load_pem_x509_certificate(ca.issue(cn, **kw)[0])


def test_ca_bundle_remembers_failed_verifications_with_their_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca, other = Authority.create("ca"), Authority.create("other")
    only_ca = CABundle.from_pem(ca.cert_pem)
    calls: list[int] = []
    verify = CABundle._verify

    def counted(self: CABundle, *args: Any) -> None:
        calls.append(1)
        verify(self, *args)

    monkeypatch.setattr(CABundle, "_verify", counted)
    stranger = _cert(other, "bob", client=True)
    with pytest.raises(CertificateError) as first:
        only_ca.verify_client(stranger)
    with pytest.raises(CertificateError) as second:
        only_ca.verify_client(stranger)
    assert len(calls) == 1, "a direct client's foreign certificate is verified once a minute"
    assert str(second.value) == str(first.value)
    # A verification at a given time is never remembered, nor answered from memory.
    with pytest.raises(CertificateError):
        only_ca.verify_client(stranger, now=datetime.datetime.now(datetime.UTC))
    assert len(calls) == 2
    # A rotated bundle decides afresh.
    CABundle.from_pem(ca.cert_pem + other.cert_pem).verify_client(stranger)
    assert len(calls) == 3


def test_ca_bundle_verifies_client_certificates_like_go() -> None:
    ca, other = Authority.create("ca"), Authority.create("other")
    bundle = CABundle.from_pem(ca.cert_pem + other.cert_pem, "test")
    only_ca = CABundle.from_pem(ca.cert_pem)
    only_ca.verify_client(_cert(ca, "alice", client=True))
    bundle.verify_client(_cert(other, "bob", client=True))
    with pytest.raises(CertificateError):
        only_ca.verify_client(_cert(other, "bob", client=True))
    with pytest.raises(CertificateError, match="key usage"):
        only_ca.verify_client(_cert(ca, "server-only", server=True))
    # no extended key usage at all: any usage, as in Go
    key = ca.key
    no_eku = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plain")]))
        .issuer_name(ca.cert.subject)
        .public_key(_cert(ca, "x", client=True).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1))
        .not_valid_after(datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    only_ca.verify_client(no_eku)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    with pytest.raises(CertificateError):
        only_ca.verify_client(_cert(ca, "alice", client=True), now=later)
    # successful verifications are remembered per bundle; a rotated bundle decides afresh
    alice = _cert(ca, "alice", client=True)
    only_ca.verify_client(alice)
    only_ca.verify_client(alice)
    assert len(only_ca._verified) >= 1
    with pytest.raises(CertificateError):
        CABundle.from_pem(other.cert_pem).verify_client(alice)
    with pytest.raises(CertificateError, match="no CA"):
        CABundle(b"", ()).verify_client(no_eku)
    with pytest.raises(ValueError, match="no valid PEM"):
        CABundle.from_pem(b"garbage", "flag")
    eku = _cert(ca, "alice", client=True).extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku.value


def test_configmap_parsing() -> None:
    ca = Authority.create("ca").cert_pem.decode()
    client_ca, rh = parse_configmap(
        {
            "client-ca-file": ca,
            "requestheader-client-ca-file": ca,
            "requestheader-allowed-names": '["front-proxy-client"]',
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        }
    )
    assert client_ca is not None and len(client_ca.certs) == 1
    assert rh is not None
    assert rh.allowed_names == ("front-proxy-client",)
    assert rh.username_headers == ("X-Remote-User",)
    assert rh.group_headers == ("X-Remote-Group",)
    assert rh.extra_headers_prefix == ("X-Remote-Extra-",)
    assert rh.uid_headers == ()
    assert parse_configmap({}) == (None, None)
    with pytest.raises(ValueError, match="requestheader-allowed-names"):
        parse_configmap({"requestheader-client-ca-file": ca, "requestheader-allowed-names": "x"})
    with pytest.raises(ValueError, match="no valid PEM"):
        parse_configmap({"client-ca-file": "not pem"})
    for malformed in (["client-ca-file"], "data", {"client-ca-file": 7}):
        with pytest.raises(ValueError, match="not a map of strings"):
            parse_configmap(malformed)  # type: ignore[arg-type]


# --- the chain over TLS -------------------------------------------------------------------------


def test_authentication_chain_over_real_tls(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    fake = FakeApiServer(
        tokens={"good": {"username": "tina", "uid": "u-1", "groups": ["devs"], "extra": {}}}
    )

    async def main() -> None:
        async with fake_apiserver(fake) as client:
            chain, sources, tokens = make_chain(pki, client)
            await sources.start()
            async with whoami_server(pki, chain, sources) as (url, _):
                proxy = pki.client(pki.proxy_ca, "front-proxy-client")
                # nothing presented: anonymous
                assert await get(url, pki) == (
                    200,
                    {
                        "name": "system:anonymous",
                        "groups": ["system:unauthenticated"],
                        "uid": "",
                        "extra": {},
                    },
                )
                # identity headers without the front-proxy certificate are ignored
                st, body = await get(
                    url, pki, headers={"X-Remote-User": "admin", "X-Remote-Group": "system:masters"}
                )
                assert (st, body["name"]) == (200, "system:anonymous")
                # the front proxy: user, every group value, extras (keys unescaped, lowered)
                st, body = await get(
                    url,
                    pki,
                    proxy,
                    [
                        ("X-Remote-User", "viewer"),
                        ("X-Remote-Group", "viewers"),
                        ("X-Remote-Group", "system:authenticated"),
                        ("X-Remote-Extra-Scopes", "a"),
                        ("X-Remote-Extra-Acme.com%2Fteam", "red"),
                    ],
                )
                assert st == 200, body
                assert body["name"] == "viewer"
                assert body["groups"] == ["viewers", "system:authenticated"]
                assert body["extra"] == {"scopes": ["a"], "acme.com/team": ["red"]}
                # a front-proxy certificate whose CN is not allowed: refused, not anonymous
                intruder = pki.client(pki.proxy_ca, "intruder")
                st, body = await get(url, pki, intruder, {"X-Remote-User": "admin"})
                assert st == 401 and "not in the allowed names" in body["error"]
                # the front-proxy certificate without a user header is nobody: refused
                st, body = await get(url, pki, proxy)
                assert st == 401
                # a client certificate: CN and O; asserted headers count for nothing
                alice = pki.client(pki.client_ca, "alice", "team-a", "ops")
                st, body = await get(url, pki, alice, {"X-Remote-User": "admin"})
                assert (st, body["name"]) == (200, "alice")
                assert body["groups"] == ["team-a", "ops", "system:authenticated"]
                # a certificate from a CA nobody trusts never completes the handshake
                stranger = pki.client(pki.stranger_ca, "front-proxy-client")
                with pytest.raises(aiohttp.ClientError):
                    await get(url, pki, stranger, {"X-Remote-User": "admin"})
                # a certificate for servers only (no client auth usage) is refused too
                server_only = pki.client(pki.client_ca, "svc", client=False)
                with pytest.raises(aiohttp.ClientError):
                    await get(url, pki, server_only)

                # bearer tokens: reviewed once per TTL, keyed by a hash
                st, body = await get(url, pki, headers={"Authorization": "Bearer good"})
                assert (st, body["name"], body["uid"]) == (200, "tina", "u-1")
                assert body["groups"] == ["devs", "system:authenticated"]
                assert len(fake.token_reviews) == 1
                assert fake.token_reviews[0]["spec"] == {"token": "good"}
                await get(url, pki, headers={"Authorization": "bearer good"})
                assert len(fake.token_reviews) == 1  # cached
                assert b"good" not in b"".join(
                    k
                    for k in tokens.cache._entries  # the cache never holds the token
                )
                st, body = await get(url, pki, headers={"Authorization": "Bearer bad"})
                assert st == 401 and "invalid bearer token" in body["error"]
                await get(url, pki, headers={"Authorization": "Bearer bad"})
                assert len(fake.token_reviews) == 2  # rejections are cached as well
                # other schemes and empty tokens are no credentials at all
                st, body = await get(url, pki, headers={"Authorization": "Basic Zm9vOmJhcg=="})
                assert (st, body["name"]) == (200, "system:anonymous")
                # TokenReview unavailable: 401, never anonymous, and not cached
                fake.fail_reviews = True
                st, body = await get(url, pki, headers={"Authorization": "Bearer other"})
                assert st == 401 and "TokenReview failed" in body["error"]
                fake.fail_reviews = False
                st, body = await get(url, pki, headers={"Authorization": "Bearer other"})
                assert st == 401 and "invalid bearer token" in body["error"]
                assert len(fake.token_reviews) == 4

    run(main())


def test_token_cache_ttl_is_honoured(tmp_path: Path) -> None:
    fake = FakeApiServer(tokens={"t": {"username": "u", "groups": []}})

    async def main() -> None:
        async with fake_apiserver(fake) as client:
            clock = Clock()
            tokens = TokenReviewAuthenticator(client, ttl=10.0, clock=clock)
            req = _request({"Authorization": "Bearer t"})
            assert (await tokens(req)) == UserInfo("u", (), "", {})
            clock.now += 9.9
            await tokens(req)
            assert len(fake.token_reviews) == 1
            clock.now += 0.2
            await tokens(req)
            assert len(fake.token_reviews) == 2
            zero = TokenReviewAuthenticator(client, ttl=0.0, clock=clock)
            await zero(req)
            await zero(req)
            assert len(fake.token_reviews) == 4  # TTL 0: no caching

    run(main())


def _request(headers: dict[str, str]) -> web.Request:
    from aiohttp.test_utils import make_mocked_request

    return make_mocked_request("GET", "/", headers=headers)


# --- authorization ------------------------------------------------------------------------------


def _attrs(user: UserInfo, path: str, **kw: Any) -> RequestAttributes:
    return RequestAttributes(user=user, path=path, **kw)


VIEWER = UserInfo("viewer", ("viewers", "system:authenticated"), "uid-v", {"scopes": ("a",)})


def test_subject_access_review_bodies() -> None:
    pods = _attrs(
        VIEWER,
        "/apis/metrics.k8s.io/v1beta1/namespaces/team-a/pods/web",
        verb="get",
        resource_request=True,
        api_group="metrics.k8s.io",
        api_version="v1beta1",
        resource="pods",
        namespace="team-a",
        name="web",
    )
    assert subject_access_review(pods) == {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": "viewer",
            "groups": ["viewers", "system:authenticated"],
            "uid": "uid-v",
            "extra": {"scopes": ["a"]},
            "resourceAttributes": {
                "namespace": "team-a",
                "verb": "get",
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "resource": "pods",
                "name": "web",
            },
        },
    }
    nodes = _attrs(
        VIEWER,
        "/apis/metrics.k8s.io/v1/nodes",
        verb="list",
        resource_request=True,
        api_group="metrics.k8s.io",
        api_version="v1",
        resource="nodes",
    )
    assert subject_access_review(nodes)["spec"]["resourceAttributes"] == {
        "verb": "list",
        "group": "metrics.k8s.io",
        "version": "v1",
        "resource": "nodes",
    }
    metrics = _attrs(VIEWER, "/metrics", verb="get", resource_request=False)
    assert subject_access_review(metrics)["spec"]["nonResourceAttributes"] == {
        "path": "/metrics",
        "verb": "get",
    }


def test_always_allow_path_patterns() -> None:
    m = PathMatcher(("/healthz", "/readyz", "/livez", "/debug/*"))
    assert m("/healthz") and m("/livez") and m("/debug/") and m("/debug/pprof/x")
    assert not m("/healthz/ping") and not m("/metrics") and not m("/debug")


def test_delegating_authorizer() -> None:
    def allow(spec: dict[str, Any]) -> tuple[bool, str]:
        ra = spec.get("resourceAttributes") or {}
        ok = spec["user"] == "viewer" and ra.get("namespace") == "team-a"
        return ok, "RBAC: allowed by viewer" if ok else ""

    fake = FakeApiServer(allow=allow)

    async def main() -> None:
        async with fake_apiserver(fake) as client:
            clock = Clock()
            authz = DelegatingAuthorizer(client, allowed_ttl=10.0, denied_ttl=2.0, clock=clock)

            def pods(ns: str, user: UserInfo = VIEWER) -> RequestAttributes:
                return _attrs(
                    user,
                    f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods",
                    verb="list",
                    resource_request=True,
                    api_group="metrics.k8s.io",
                    api_version="v1beta1",
                    resource="pods",
                    namespace=ns,
                )

            aggregator = UserInfo("system:kube-aggregator", ("system:masters",))
            assert (await authz.authorize(pods("x", aggregator))).allowed
            probe = _attrs(
                UserInfo("system:anonymous"), "/readyz", verb="get", resource_request=False
            )
            assert (await authz.authorize(probe)).allowed
            assert fake.access_reviews == []  # neither needed a review

            d = await authz.authorize(pods("team-a"))
            assert d.allowed and d.reason == "RBAC: allowed by viewer"
            assert not (await authz.authorize(pods("kube-system"))).allowed
            metrics = _attrs(VIEWER, "/metrics", verb="get", resource_request=False)
            assert not (await authz.authorize(metrics)).allowed
            assert len(fake.access_reviews) == 3
            # cached: allowed for 10 s, denied for 2 s
            await authz.authorize(pods("team-a"))
            await authz.authorize(pods("kube-system"))
            assert len(fake.access_reviews) == 3
            clock.now += 2.5
            await authz.authorize(pods("team-a"))
            await authz.authorize(pods("kube-system"))
            assert len(fake.access_reviews) == 4
            # a review that cannot be made is a 500, as kube-apiserver's filter answers
            fake.fail_reviews = True
            with pytest.raises(StatusError) as e:
                await authz.authorize(pods("ns-new"))
            assert e.value.status.code == 500
            # what failed stays in the log (tests/server/api/test_errors.py)
            assert "authorization failed (details in the server log" in e.value.status.message

        # no authorization kubeconfig: only groups and paths pass
        bare = DelegatingAuthorizer(None)
        assert not (await bare.authorize(pods("team-a"))).allowed

    run(main())


# --- configuration sources ----------------------------------------------------------------------


def test_configmap_lookup_failures(tmp_path: Path) -> None:
    ca = Authority.create("cluster-ca").cert_pem.decode()
    fake = FakeApiServer()

    async def main() -> None:
        async with fake_apiserver(fake) as client:
            fake.configmap = (403, {})
            src = DelegatedAuthentication(AuthnConfig(), client)
            with pytest.raises(AuthConfigError) as e:
                await src.start()
            msg = str(e.value)
            assert "kubectl create rolebinding -n kube-system ROLEBINDING_NAME" in msg
            assert "--role=extension-apiserver-authentication-reader" in msg
            assert "--serviceaccount=YOUR_NS:YOUR_SA" in msg
            assert "--authentication-tolerate-lookup-failure" in msg

            tolerant = DelegatedAuthentication(AuthnConfig(tolerate_lookup_failure=True), client)
            await tolerant.start()
            assert tolerant.client_ca() is None and tolerant.request_header() is None
            await tolerant.close()

            fake.configmap = (404, {})
            missing = DelegatedAuthentication(AuthnConfig(), client)
            await missing.start()  # upstream ignores a missing ConfigMap
            assert missing.client_ca() is None
            await missing.close()

            fake.configmap = (200, {"client-ca-file": ca})
            found = DelegatedAuthentication(AuthnConfig(), client)
            await found.start()
            got = found.client_ca()
            assert got is not None and got.pem.decode() == ca
            assert found.request_header() is None
            await found.close()

            skipped = DelegatedAuthentication(AuthnConfig(skip_lookup=True), client)
            await skipped.start()
            assert skipped.client_ca() is None and not skipped.uses_configmap
            await skipped.close()

            # the flags win over the ConfigMap for their part
            own = Authority.create("own")
            own_file = write(tmp_path / "own.crt", own.cert_pem)
            flagged = DelegatedAuthentication(AuthnConfig(client_ca_file=own_file), client)
            await flagged.start()
            fc = flagged.client_ca()
            assert fc is not None and fc.certs[0].subject == own.cert.subject
            await flagged.close()

            with pytest.raises(AuthConfigError, match="--client-ca-file"):
                await DelegatedAuthentication(
                    AuthnConfig(client_ca_file=str(tmp_path / "absent.crt"), skip_lookup=True),
                    None,
                ).start()

    run(main())


# --- serving TLS follows its files and the CAs --------------------------------------------------


def _served_cert(url: str, ca_file: str) -> str:
    host, port = url.removeprefix("https://").rstrip("/").split(":")
    ctx = ssl.create_default_context(cafile=ca_file)
    import socket

    with (
        socket.create_connection((host, int(port)), timeout=10) as sock,
        ctx.wrap_socket(sock, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.serial_number)


def test_serving_certificate_and_client_cas_reload_without_restart(tmp_path: Path) -> None:
    pki = Pki(tmp_path)

    async def main() -> None:
        chain, sources, _ = make_chain(pki, None)
        await sources.start()
        async with whoami_server(pki, chain, sources) as (url, tls):
            before = await asyncio.to_thread(_served_cert, url, pki.server_ca_file)
            # a renewed pair, written the way kubelet/cert-manager do: new files moved in place
            cert, key = pki.server_ca.issue("localhost", ips=("127.0.0.1",), server=True)
            write(tmp_path / "new.crt", cert)
            write(tmp_path / "new.key", key)
            os.replace(tmp_path / "new.key", pki.key_file)
            os.replace(tmp_path / "new.crt", pki.cert_file)
            want = str(x509.load_pem_x509_certificate(cert).serial_number)
            for _ in range(100):
                now = await asyncio.to_thread(_served_cert, url, pki.server_ca_file)
                if now != before:
                    break
                await asyncio.sleep(0.1)
            assert now == want

            # rotate the client CA file: certificates of the new CA work at once, old ones fail
            new_ca = Authority.create("client-ca-2")
            bob = pki.client(new_ca, "bob")
            alice = pki.client(pki.client_ca, "alice")
            with pytest.raises(aiohttp.ClientError):
                await get(url, pki, bob)
            write(Path(pki.client_ca_file), new_ca.cert_pem)
            for _ in range(100):
                try:
                    st, body = await get(url, pki, bob)
                    break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
            assert (st, body["name"]) == (200, "bob")
            with pytest.raises(aiohttp.ClientError):
                await get(url, pki, alice)
            assert tls.reloads >= 2

    run(main())


def test_tls_minimum_version_is_enforced(tmp_path: Path) -> None:
    pki = Pki(tmp_path)

    async def main() -> None:
        tls = DynamicServingTLS(
            ServingConfig(tls_min_version="VersionTLS13"), pki.cert_file, pki.key_file
        )
        base = await tls.start()
        assert base.minimum_version == ssl.TLSVersion.TLSv1_3
        await tls.close()
        default = DynamicServingTLS(ServingConfig(), pki.cert_file, pki.key_file)
        assert (await default.start()).minimum_version == ssl.TLSVersion.TLSv1_2
        await default.close()

    run(main())


def test_tls_cipher_suites_restrict_tls12(tmp_path: Path) -> None:
    pki = Pki(tmp_path)  # ECDSA serving key
    serving = ServingConfig(
        tls_min_version="VersionTLS12",
        tls_cipher_suites=("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",),
    )

    def handshake(url: str, cipher: str) -> str:
        host, port = url.removeprefix("https://").rstrip("/").split(":")
        ctx = ssl.create_default_context(cafile=pki.server_ca_file)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(cipher)
        import socket

        with (
            socket.create_connection((host, int(port)), timeout=10) as sock,
            ctx.wrap_socket(sock, server_hostname=host) as tls,
        ):
            got = tls.cipher()
        assert got is not None
        return got[0]

    async def main() -> None:
        tls = DynamicServingTLS(serving, pki.cert_file, pki.key_file)
        base = await tls.start()
        app = web.Application()
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=base).start()
        host, port = runner.addresses[0][:2]
        url = f"https://{host}:{port}/"
        try:
            got = await asyncio.to_thread(handshake, url, "ECDHE-ECDSA-AES128-GCM-SHA256")
            assert got == "ECDHE-ECDSA-AES128-GCM-SHA256"
            with pytest.raises(ssl.SSLError):
                await asyncio.to_thread(handshake, url, "ECDHE-ECDSA-AES256-GCM-SHA384")
        finally:
            await runner.cleanup()
            await tls.close()

    run(main())


def test_a_malformed_configmap_event_does_not_stop_ca_rotation(tmp_path: Path) -> None:
    """Watch events the handler cannot take (metadata not an object, data not a string map)
    are skipped, the last good CA stays, and a later rotation still applies: before, the
    first of them ended the watcher for good (and CA rotation with it, silently)."""
    first = Authority.create("first-ca").cert_pem.decode()
    second = Authority.create("second-ca").cert_pem.decode()
    name = "extension-apiserver-authentication"
    fake = FakeApiServer()
    fake.configmap = (200, {"client-ca-file": first})
    fake.configmap_watchable = True

    async def main() -> None:
        async with fake_apiserver(fake) as client:
            src = DelegatedAuthentication(AuthnConfig(), client)
            await src.start()
            try:
                assert src.reflector is not None
                await until(lambda: fake.watching() == 1, "the ConfigMap watch")
                await fake.push_configmap_event("MODIFIED", {"metadata": "not an object"})
                await fake.push_configmap_event(
                    "MODIFIED", {"metadata": {"name": name}, "data": ["not", "a", "map"]}
                )
                await fake.push_configmap_event(
                    "MODIFIED", {"metadata": {"name": name}, "data": {"client-ca-file": 7}}
                )
                await until(
                    lambda: src.reflector is not None and src.reflector.skipped >= 1, "skip"
                )
                ca = src.client_ca()
                assert ca is not None and ca.pem.decode() == first  # the last good one
                await fake.push_configmap_event(
                    "MODIFIED", {"metadata": {"name": name}, "data": {"client-ca-file": second}}
                )
                await until(
                    lambda: (c := src.client_ca()) is not None and c.pem.decode() == second,
                    "the rotated CA",
                )
            finally:
                await src.close()

    run(main())
