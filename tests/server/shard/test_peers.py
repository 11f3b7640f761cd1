"""Fetching a peer's points: pinned TLS, credentials, and every bound (time, bytes)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from kubemetrics.kube.client import TokenSource
from kubemetrics.shard.lease import Member
from kubemetrics.shard.peers import PeerClient, PeerError, PeerSettings
from kubemetrics_sim.certs import Authority

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Peer:
    """A TLS server standing in for a peer replica; records what reached it."""

    def __init__(self, tmp: Path, handler: Handler) -> None:
        ca = Authority.create("peer-ca")
        cert, key = ca.issue("peer", ips=("127.0.0.1",), server=True)
        (tmp / "peer.crt").write_bytes(cert)
        (tmp / "peer.key").write_bytes(key)
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(tmp / "peer.crt", tmp / "peer.key")
        self.fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.decode())).hexdigest()
        self.handler = handler
        self.requests: list[dict[str, str]] = []
        self.connections: set[int] = set()
        self.port = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(dict(request.headers))
        self.connections.add(id(request.transport))
        return await self.handler(request)

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Peer]:
        app = web.Application()
        app.router.add_get("/shard/v1/points", self.handle)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ctx)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield self
        finally:
            await runner.cleanup()

    def member(self, fingerprint: str | None = None) -> Member:
        return Member("peer", f"127.0.0.1:{self.port}", fingerprint or self.fingerprint)


def client(timeout: float = 2.0, max_bytes: int = 1 << 20) -> PeerClient:
    return PeerClient(TokenSource("Bearer tok"), PeerSettings(timeout, max_bytes))


def ok(body: bytes) -> Handler:
    async def h(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/vnd.kubemetrics.points")

    return h


def test_fetch_sends_the_token_and_keeps_one_connection_alive(tmp_path: Path) -> None:
    async def main() -> None:
        async with Peer(tmp_path, ok(b"KMPT-body")).serving() as p:
            c = client()
            try:
                assert await c.fetch(p.member()) == b"KMPT-body"
                assert await c.fetch(p.member()) == b"KMPT-body"
            finally:
                await c.close()
            assert len(p.requests) == 2 and len(p.connections) == 1
            assert p.requests[0]["Authorization"] == "Bearer tok"
            assert p.requests[0]["Accept"] == "application/vnd.kubemetrics.points"

    asyncio.run(main())


def test_a_certificate_other_than_the_pinned_one_never_sees_the_token(tmp_path: Path) -> None:
    async def main() -> None:
        async with Peer(tmp_path, ok(b"x")).serving() as p:
            c = client()
            try:
                with pytest.raises(PeerError) as e:
                    await c.fetch(p.member("00" * 32))
            finally:
                await c.close()
            assert e.value.kind == "certificate-mismatch"
            assert p.requests == []

    asyncio.run(main())


def test_a_slow_peer_costs_at_most_the_timeout(tmp_path: Path) -> None:
    async def hang(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response()

    async def trickle(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(300):
            await resp.write(b"x")
            await asyncio.sleep(0.1)
        return resp

    async def main() -> None:
        for handler in (hang, trickle):
            async with Peer(tmp_path, handler).serving() as p:
                c = client(timeout=0.5)
                t0 = time.monotonic()
                try:
                    with pytest.raises(PeerError) as e:
                        await c.fetch(p.member())
                finally:
                    await c.close()
                assert e.value.kind == "timeout"
                assert time.monotonic() - t0 < 2.0

    asyncio.run(main())


def test_a_body_over_the_limit_is_refused_however_it_is_sent(tmp_path: Path) -> None:
    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"y" * 1024)
        await resp.write_eof()
        return resp

    async def main() -> None:
        for handler in (ok(b"z" * 4097), chunked):
            async with Peer(tmp_path, handler).serving() as p:
                c = client(max_bytes=4096)
                try:
                    with pytest.raises(PeerError) as e:
                        await c.fetch(p.member())
                    assert e.value.kind == "too-large", e.value
                finally:
                    await c.close()
        async with Peer(tmp_path, ok(b"z" * 4096)).serving() as p:
            c = client(max_bytes=4096)
            try:
                assert len(await c.fetch(p.member())) == 4096  # the limit itself is fine
            finally:
                await c.close()

    asyncio.run(main())


def test_refusals_and_dead_peers_are_peer_errors(tmp_path: Path) -> None:
    async def forbidden(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403)

    async def main() -> None:
        async with Peer(tmp_path, forbidden).serving() as p:
            c = client()
            try:
                with pytest.raises(PeerError) as e:
                    await c.fetch(p.member())
                assert e.value.kind == "http-403"
            finally:
                await c.close()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
        s.close()
        c = client()
        try:
            with pytest.raises(PeerError) as e:
                await c.fetch(Member("gone", f"127.0.0.1:{dead}", "00" * 32))
            assert e.value.kind == "unreachable"
        finally:
            await c.close()

    asyncio.run(main())
