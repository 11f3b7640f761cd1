"""Streamed responses over real HTTP: bodies in bounded chunks equal to the whole, gzip as
kube-apiserver negotiates it, the server-wide send budget (429 past it), and the response
deadline. Each bound is shown to hold against a client that stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from kubemetrics import _native
from kubemetrics.api import stream
from kubemetrics.api.routes import ApiDependencies, build_app
from kubemetrics.api.status import StatusError
from tests.helpers.serving import api_deps, assert_too_many_requests
from tests.helpers.snapshots import T0_MS, Container, Pod, build

BASE = "/apis/metrics.k8s.io/v1"
NOW_S = T0_MS / 1000 + 60.7
PROTOBUF = "application/vnd.kubernetes.protobuf"


def cluster(nodes: int = 20, pods: int = 150) -> dict[str, list[Pod]]:
    """3,000 pods: a JSON list of ~0.9 MB, several chunks."""
    return {
        f"node-{n:02d}": [
            Pod(
                f"ns-{k % 3}",
                f"pod-{n:02d}-{k:03d}-with-a-longer-name",
                [
                    Container("app", 1.0, 0.01 * (k % 7), 4096 * (k + 1)),
                    Container("side", 2.0, 0, 9),
                ],
                {"app": f"a{k % 4}", "team": "payments", "pod-template-hash": f"{n:02d}5c7d"},
            )
            for k in range(pods)
        ]
        for n in range(nodes)
    }


_CLUSTER = build(cluster())


@dataclass
class Server:
    port: int
    deps: ApiDependencies

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def serve(**overrides: Any) -> AsyncIterator[Server]:
    snap, inv = _CLUSTER
    deps = api_deps(snapshot=lambda: snap, inventory=inv, clock=lambda: NOW_S, **overrides)
    runner = web.AppRunner(build_app(deps))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield Server(runner.addresses[0][1], deps)
    finally:
        await runner.cleanup()


def expected(fmt: str = "json", labels: str = "", fields: str = "") -> bytes:
    snap, inv = _CLUSTER
    query = snap.view(inv).query("pods", None, labels, fields)
    return query.respond(api_version="v1", fmt=fmt, now_s=NOW_S).read_all()


async def get(
    session: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, Any, bytes, int]:
    """(status, headers, body, how many reads it took)"""
    async with session.get(url, headers=headers) as r:
        reads = 0
        body = b""
        async for chunk in r.content.iter_any():
            body += chunk
            reads += 1
        return r.status, r.headers, body, reads


def encoding(value: str) -> dict[str, str]:
    return {"Accept-Encoding": value}


def run(coro: Any) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


# --- chunks and gzip ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("application/json", "json"),
        (PROTOBUF, "protobuf"),
        ("application/json;as=Table;v=v1;g=meta.k8s.io", "table"),
    ],
)
def test_large_lists_stream_with_an_exact_content_length(accept: str, fmt: str) -> None:
    async def main() -> None:
        async with serve() as srv, aiohttp.ClientSession(auto_decompress=False) as s:
            url = f"{srv.url}{BASE}/pods"
            status, headers, body, _ = await get(s, url, Accept=accept, **encoding("identity"))
            assert status == 200
            assert body == expected(fmt)
            assert int(headers["Content-Length"]) == len(body) > 2 * 128 * 1024
            assert "Content-Encoding" not in headers and "Transfer-Encoding" not in headers

    run(main())


@pytest.mark.parametrize("fmt", ["json", "protobuf"])
def test_gzip_when_accepted_and_large_decodes_to_the_same_bytes(fmt: str) -> None:
    accept = PROTOBUF if fmt == "protobuf" else "application/json"

    async def main() -> None:
        async with serve() as srv, aiohttp.ClientSession(auto_decompress=False) as s:
            url = f"{srv.url}{BASE}/pods"
            for enc in ("gzip", "deflate, gzip", " br , gzip "):
                status, headers, body, _ = await get(s, url, Accept=accept, **encoding(enc))
                assert status == 200, enc
                assert headers["Content-Encoding"] == "gzip"
                assert headers["Vary"] == "Accept-Encoding"
                assert headers["Transfer-Encoding"] == "chunked"
                assert gzip.decompress(body) == expected(fmt)
                assert len(body) < len(expected(fmt)) / 4
            # Not accepted, or only with parameters kube-apiserver does not read: identity.
            for enc in ("", "deflate", "br", "gzip;q=1", "x-gzip"):
                status, headers, body, _ = await get(s, url, Accept=accept, **encoding(enc))
                assert "Content-Encoding" not in headers, enc
                assert body == expected(fmt)
            # Under 128 KiB: never compressed (k8s.io/apiserver's threshold).
            small = f"{url}?labelSelector=app%3Da1&fieldSelector=spec.nodeName%3Dnode-03"
            status, headers, body, _ = await get(s, small, Accept=accept, **encoding("gzip"))
            assert "Content-Encoding" not in headers
            assert body == expected(fmt, "app=a1", "spec.nodeName=node-03")
            assert int(headers["Content-Length"]) == len(body) < 128 * 1024
            # aiohttp's own decompression sees a valid stream too.
            async with (
                aiohttp.ClientSession() as plain,
                plain.get(url, headers={"Accept": accept}) as r,
            ):
                assert r.headers["Content-Encoding"] == "gzip"
                assert await r.read() == expected(fmt)

    run(main())


def test_head_of_a_list_sends_no_body() -> None:
    async def main() -> None:
        async with serve() as srv, aiohttp.ClientSession(auto_decompress=False) as s:
            async with s.head(f"{srv.url}{BASE}/pods", headers=encoding("identity")) as r:
                assert r.status == 200
                assert int(r.headers["Content-Length"]) == len(expected())
                assert await r.read() == b""
            # the connection is still good for the next request
            status, _, body, _ = await get(s, f"{srv.url}{BASE}/pods", **encoding("identity"))
            assert status == 200 and body == expected()

    run(main())


# --- a client that stops reading ---------------------------------------------------------------


class CountingBody:
    """A native Body, counting what the server had produced of it."""

    def __init__(self, inner: _native.Body) -> None:
        self.inner = inner
        self.produced = 0
        self.length = inner.length
        self.items = inner.items
        self.gzip = inner.gzip

    def timestamps_ms(self) -> Any:
        return self.inner.timestamps_ms()

    def read(self) -> bytes:
        chunk = self.inner.read()
        self.produced += len(chunk)
        return chunk


async def stalled_client(port: int, path: str, headers: str = "") -> socket.socket:
    """A connection that sends a request and never reads (a small receive window); the
    caller closes it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: identity\r\n{headers}\r\n"
    await loop.sock_sendall(sock, request.encode())
    return sock


async def read_all(sock: socket.socket) -> bytes:
    """What the server sent, until it closed the connection."""
    loop = asyncio.get_running_loop()
    got = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 5):
            got += chunk
    return got


def pin_send_buffers(monkeypatch: pytest.MonkeyPatch) -> list[CountingBody]:
    """Count what the server produces of each body, and pin each connection's kernel send
    buffer: loopback autotunes it to ~4 MB, which would swallow these ~1 MB bodies whole and
    hide what the server itself holds."""
    bodies: list[CountingBody] = []
    real_send = stream.send

    async def counting_send(request: web.Request, body: Any, *args: Any) -> web.StreamResponse:
        sock = request.transport.get_extra_info("socket") if request.transport else None
        assert sock is not None
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        counted = CountingBody(body)
        bodies.append(counted)
        return await real_send(request, counted, *args)  # type: ignore[arg-type]

    monkeypatch.setattr("kubemetrics.api.routes.send", counting_send)
    return bodies


def test_a_stalled_reader_holds_about_one_chunk_not_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies = pin_send_buffers(monkeypatch)

    async def main() -> None:
        async with serve() as srv:
            sock = await stalled_client(srv.port, f"{BASE}/pods")
            await asyncio.sleep(1.0)
            (body,) = bodies
            # One chunk being written and the transport's 64 KiB before it pauses; without
            # chunking the whole ~1 MB body would sit in the transport at once.
            assert body.length > 1_000_000
            assert body.produced <= 3 * 160 * 1024, (body.produced, body.length)
            assert srv.deps.send_budget.in_use > 0
            # Once the client reads, the rest follows and the answer is whole.
            got = await read_all_until(sock, body.length)
            assert got.endswith(expected())
            sock.close()

    run(main())


async def read_all_until(sock: socket.socket, length: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    while len(got) < length:
        got += await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10)
    while not got.endswith(b"]}\n"):
        got += await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10)
    return got


def test_the_send_budget_answers_429_with_retry_after_past_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin_send_buffers(monkeypatch)
    one = stream.footprint(
        _CLUSTER[0].view(_CLUSTER[1]).query("pods").respond(api_version="v1", fmt="json", now_s=0)
    )

    async def main() -> None:
        # Room for two full lists in flight, not three.
        budget = stream.send_budget(2 * one + one // 2)
        async with serve(send_budget=budget) as srv:
            stalled = [await stalled_client(srv.port, f"{BASE}/pods") for _ in range(2)]
            await asyncio.sleep(0.3)
            assert budget.in_use == 2 * one
            async with aiohttp.ClientSession() as s:
                status, headers, body, _ = await get(s, f"{srv.url}{BASE}/pods")
                assert_too_many_requests(status, headers, body)
                # Small answers still fit beside them.
                status, _, _, _ = await get(
                    s, f"{srv.url}{BASE}/namespaces/ns-1/pods/pod-03-001-with-a-longer-name"
                )
                assert status == 200
                assert budget.refused == 1
                for sock in stalled:
                    sock.close()
                # Once the stalled clients are gone their reservations are released.
                for _ in range(100):
                    if budget.in_use == 0:
                        break
                    await asyncio.sleep(0.05)
                assert budget.in_use == 0
                status, _, body, _ = await get(s, f"{srv.url}{BASE}/pods")
                assert status == 200 and body == expected()

    run(main())


def test_a_spent_budget_refuses_before_doing_any_work() -> None:
    async def main() -> None:
        budget = stream.send_budget(1)
        budget.in_use = 1  # as if something held it all
        async with serve(send_budget=budget) as srv, aiohttp.ClientSession() as s:
            one_pod = "namespaces/ns-0/pods/pod-00-000-with-a-longer-name"
            for path in ("pods", "nodes", one_pod, "nodes/node-01"):
                status, headers, _, _ = await get(s, f"{srv.url}{BASE}/{path}")
                assert (status, headers["Retry-After"]) == (429, "1"), path
            assert (await get(s, f"{srv.url}/readyz"))[0] == 200

    run(main())


def test_a_response_not_read_within_the_deadline_loses_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pin_send_buffers(monkeypatch)

    async def main() -> None:
        async with serve(response_deadline=0.5) as srv:
            sock = await stalled_client(srv.port, f"{BASE}/pods?includeObject=Object")
            await asyncio.sleep(0.2)
            assert srv.deps.send_budget.in_use > 0
            await asyncio.sleep(0.8)
            assert srv.deps.send_budget.in_use == 0
            # Reading now drains what was sent, then sees the connection closed.
            got = await read_all(sock)
            assert got.startswith(b"HTTP/1.1 200 OK")
            assert len(got) < len(expected()), "cut short"
            sock.close()

    run(main())


def test_budget_accounting() -> None:
    room = stream.TRANSPORT_ALLOWANCE
    b = stream.send_budget(3 * room)
    first, second = b.holding(), b.holding()
    assert first.grow(room) and stream.has_room(b)
    assert not second.grow(2 * room + 1) and b.refused == 1, "no free allowance: all from the pool"
    assert second.grow(2 * room) and not stream.has_room(b)
    with pytest.raises(StatusError):
        stream.check_room(b)
    assert b.refused == 2
    first.release()
    second.release()
    assert b.in_use == 0 and stream.has_room(b)
