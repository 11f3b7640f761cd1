"""The HTTPS listener's limits, against real TLS clients on 127.0.0.1: the handshake and head
deadlines, the idle timeout, the head size limit and the shared head budget, the connection
cap, the request deadline, and HTTP framing through the guard (pipelining, bodies, chunked).

Each limit is set short here (seconds, kilobytes); the assertions allow several times the
limit, since what they tell apart is "closed by the limit" from "held for a minute or more".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from kubemetrics.listener import Listener, ListenerLimits
from kubemetrics.selfmetrics import SelfMetrics
from tests.helpers.kube import run, until
from tests.helpers.serving import serve_tls

LIMITS = ListenerLimits(
    max_connections=64,
    read_header_timeout=1.0,
    idle_timeout=1.0,
    request_timeout=2.0,
    max_header_bytes=64 << 10,
    header_allowance_bytes=8 << 10,
    header_pool_bytes=128 << 10,
)
# "Closed by the limit" is told apart from "held" within this (the limits are 1-2 s).
CLOSED_WITHIN = 8.0
GET = b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n"
CANCELLED = web.AppKey("cancelled", asyncio.Event)


@dataclass
class Env:
    listener: Listener
    port: int
    client: ssl.SSLContext
    hang: asyncio.Event
    app: web.Application

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, ssl=self.client)

    async def request(self, raw: bytes) -> bytes:
        """`raw` on a new connection; everything the server sends until it closes."""
        reader, writer = await self.connect()
        writer.write(raw)
        try:
            async with asyncio.timeout(CLOSED_WITHIN):
                return await reader.read()
        finally:
            writer.close()


def _app(hang: asyncio.Event) -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        body = await request.read()
        groups = request.headers.getall("X-Remote-Group", [])
        return web.Response(text=f"{request.path} body={len(body)} groups={len(groups)}")

    async def stuck(request: web.Request) -> web.Response:
        try:
            await hang.wait()
        except asyncio.CancelledError:
            request.app[CANCELLED].set()
            raise
        return web.Response(text="late")

    app = web.Application()
    app[CANCELLED] = asyncio.Event()
    app.router.add_route("*", "/hang", stuck)
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


@contextlib.asynccontextmanager
async def listening(tmp_path: Path, limits: ListenerLimits = LIMITS) -> AsyncIterator[Env]:
    hang = asyncio.Event()
    app = _app(hang)
    try:
        async with serve_tls(app, tmp_path, limits) as served:
            yield Env(served.listener, served.port, served.client, hang, app)
    finally:
        hang.set()


def status_of(answer: bytes, code: int) -> dict[str, object]:
    """The Status object an HTTP answer carries, checked against its HTTP code."""
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(code).encode(), answer
    assert b"\r\ncontent-type: application/json" in head.lower(), answer
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    doc = json.loads(body[:length])
    assert (doc["kind"], doc["apiVersion"], doc["status"], doc["code"]) == (
        "Status",
        "v1",
        "Failure",
        code,
    ), doc
    assert isinstance(doc, dict)
    return doc


async def closed_after(reader: asyncio.StreamReader) -> tuple[float, bytes]:
    """(seconds until the server closed the connection, what it sent meanwhile)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    got = b""
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        async with asyncio.timeout(CLOSED_WITHIN + 5):
            while chunk := await reader.read(65536):
                got += chunk
    return loop.time() - t0, got


# --- time ----------------------------------------------------------------------------------------


def test_a_head_sent_one_line_at_a_time_is_cut_at_the_header_deadline(tmp_path: Path) -> None:
    """Slowloris: one header line every 0.2 s never ends the head; at the deadline (1 s) the
    client gets 408 and the connection is closed (aiohttp alone waits for ever)."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            reader, writer = await env.connect()
            writer.write(b"GET /x HTTP/1.1\r\nHost: x\r\n")

            async def drip() -> None:
                for i in range(100):
                    await asyncio.sleep(0.2)
                    writer.write(b"X-Drip-%d: %d\r\n" % (i, i))

            dripping = asyncio.create_task(drip())
            seconds, got = await closed_after(reader)
            dripping.cancel()
            writer.close()
            assert seconds < CLOSED_WITHIN, seconds
            assert got.startswith(b"HTTP/1.1 408 "), got
            assert status_of(got, 408)["reason"] == "Timeout"
            assert env.listener.stats.dropped == {"header-timeout": 1}

    run(main())


def test_a_connection_that_never_sends_a_request_is_closed(tmp_path: Path) -> None:
    """A TLS connection that sends nothing after the handshake is closed at the header
    deadline, and a TCP connection that never starts the handshake at the same deadline."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            tls_reader, tls_writer = await env.connect()
            tcp_reader, tcp_writer = await asyncio.open_connection("127.0.0.1", env.port)
            (tls_s, tls_got), (tcp_s, _) = await asyncio.gather(
                closed_after(tls_reader), closed_after(tcp_reader)
            )
            tls_writer.close()
            tcp_writer.close()
            assert tls_s < CLOSED_WITHIN and tcp_s < CLOSED_WITHIN, (tls_s, tcp_s)
            assert tls_got == b""  # nothing was asked, nothing is answered
            await until(lambda: env.listener.stats.open == 0, "both connections to be gone")
            assert env.listener.stats.dropped == {"header-timeout": 1, "handshake-timeout": 1}

    run(main())


def test_an_idle_kept_alive_connection_is_closed(tmp_path: Path) -> None:
    """After an answer, a kept-alive connection with no next request goes at the idle timeout
    (aiohttp's own default is an hour)."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            reader, writer = await env.connect()
            writer.write(GET)
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            seconds, _ = await closed_after(reader)
            writer.close()
            assert seconds < CLOSED_WITHIN, seconds
            assert env.listener.stats.dropped == {"idle": 1}

    run(main())


def test_a_request_that_outlives_the_request_timeout_loses_its_connection(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with listening(tmp_path) as env:
            reader, writer = await env.connect()
            writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            seconds, got = await closed_after(reader)
            writer.close()
            assert seconds < CLOSED_WITHIN and got == b"", (seconds, got)
            assert env.listener.stats.dropped == {"request-timeout": 1}
            # and the handler ends with its connection (aiohttp would let it run on)
            await asyncio.wait_for(env.app[CANCELLED].wait(), CLOSED_WITHIN)

    run(main())


# --- size ----------------------------------------------------------------------------------------


def test_a_head_over_max_header_bytes_gets_431(tmp_path: Path) -> None:
    """A head that will not fit (here 64 KiB, never ended) is answered 431 as soon as it is
    too big; a big legitimate head (300 groups from a front proxy, ~10 KiB) is served, and
    each group reaches the app (aiohttp's own limit is 128 header fields)."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            line = b"X-Big: " + b"b" * 100 + b"\r\n"
            answer = await env.request(b"GET /x HTTP/1.1\r\n" + line * 700)
            assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
            assert status_of(answer, 431)["reason"] == "RequestEntityTooLarge"
            groups = b"".join(b"X-Remote-Group: group-number-%04d\r\n" % i for i in range(300))
            answer = await env.request(
                b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + groups + b"\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"groups=300"), answer
            assert env.listener.stats.dropped == {"header-too-large": 1}

    run(main())


def test_heads_in_progress_share_one_budget(tmp_path: Path) -> None:
    """Sixteen connections each sending 40 KiB of a head that never ends: each may hold 8 KiB
    on its own, the rest comes from a 128 KiB pool; those the pool cannot cover get 429 and
    are closed, the pool is never overdrawn, and a small request still gets through."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            budget = env.listener.header_budget
            line = b"X-Part: " + b"p" * 1000 + b"\r\n"
            conns = [await env.connect() for _ in range(16)]
            for _, writer in conns:
                writer.write(b"GET /x HTTP/1.1\r\n" + line * 40)
            await until(
                lambda: budget.refused >= 1 and budget.in_use > 64 << 10, "the pool to fill"
            )
            assert budget.peak <= budget.pool
            answer = await env.request(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            outcomes = await asyncio.gather(*(closed_after(r) for r, _ in conns))
            for _, writer in conns:
                writer.close()
            refused = [got for _, got in outcomes if got.startswith(b"HTTP/1.1 429 ")]
            timed_out = [got for _, got in outcomes if got.startswith(b"HTTP/1.1 408 ")]
            assert len(refused) + len(timed_out) == 16, outcomes
            assert refused and timed_out
            assert status_of(refused[0], 429)["details"] == {"retryAfterSeconds": 1}
            assert b"\r\nRetry-After: 1\r\n" in refused[0]
            # 16 x 8 KiB free + 128 KiB pool hold at most 11 of the 41 KiB heads.
            assert len(timed_out) <= 11
            await until(lambda: budget.in_use == 0, "the pool to be returned")

    run(main())


# --- connections ---------------------------------------------------------------------------------


def test_connections_past_the_cap_are_refused_and_counted(tmp_path: Path) -> None:
    """At the cap (8 here) a new connection is reset when accepted, before any handshake; it
    shows in /metrics, and once connections go, new ones are served again."""

    async def main() -> None:
        metrics = SelfMetrics(15.0)
        async with listening(tmp_path, replace(LIMITS, max_connections=8)) as env:
            metrics.sources.append(env.listener.stats.collect)
            held = [await env.connect() for _ in range(8)]
            await until(lambda: env.listener.stats.open == 8, "8 open connections")
            refused = 0
            for _ in range(3):
                try:
                    _, writer = await asyncio.wait_for(env.connect(), CLOSED_WITHIN)
                except (ConnectionError, ssl.SSLError):
                    refused += 1
                else:
                    writer.close()
            assert refused == 3
            assert env.listener.stats.refused == {"limit": 3}
            families = {
                f.name: f for f in text_string_to_metric_families(metrics.render().decode())
            }
            samples = families["kubemetrics_http_connections_refused"].samples
            assert [(s.labels, s.value) for s in samples] == [({"reason": "limit"}, 3.0)]
            assert families["kubemetrics_http_connections"].samples[0].value == 8.0
            for _, writer in held:
                writer.close()
            await until(lambda: env.listener.stats.open == 0, "the held connections to go")
            answer = await env.request(
                b"GET /again HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            assert answer.startswith(b"HTTP/1.1 200 ")

    run(main())


# --- framing through the guard -------------------------------------------------------------------


def test_pipelined_requests_with_bodies_are_answered_in_order(tmp_path: Path) -> None:
    """Requests sent back to back (with Content-Length bodies between them) are each answered,
    in order, on one connection; the guard hands them to aiohttp one at a time."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            raw = (
                b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                b"\r\n"  # a stray empty line between requests is allowed
                b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
            )
            answer = await env.request(raw)
            bodies = [part.split(b"\r\n\r\n", 1)[1] for part in answer.split(b"HTTP/1.1 ")[1:]]
            assert [b[: b.index(b"groups")] for b in bodies] == [
                b"/a body=5 ",
                b"/b body=0 ",
                b"/c body=3 ",
            ], answer
            assert env.listener.stats.dropped == {}

    run(main())


def test_what_aiohttp_cannot_parse_gets_a_status_and_no_error_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A request aiohttp's parser refuses (a bad header, a bad version, too many fields, a
    method it does not know) is answered 400 with a Status naming the fault, not aiohttp's
    plain text; and it is logged at V(2) only: anyone can send these, as often as they like."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            for raw, fault in (
                (b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", "header"),
                (b"GET /x HTTP/9.9\r\nHost: x\r\n\r\n", "status line"),
                (b"FOO /x HTTP/1.1\r\nHost: x\r\n\r\n", "method"),
                (b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", "Content-Length"),
                (b"GET /x HTTP/1.1\r\n" + b"X: a\r\n" * 5000 + b"\r\n", "headers"),
            ):
                doc = status_of(await env.request(raw), 400)
                assert doc["reason"] == "BadRequest", doc
                message = str(doc["message"])
                assert message.startswith("malformed HTTP request: "), doc
                assert fault.lower() in message.lower(), doc
            # the connection still serves after all that
            answer = await env.request(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 "), answer

    with caplog.at_level(logging.DEBUG):
        run(main())
    loud = [r for r in caplog.records if r.levelno > logging.INFO - 2]
    assert not loud, [(r.name, r.levelname, r.getMessage()) for r in loud]
    quiet = [r for r in caplog.records if r.getMessage() == "Refused a malformed request"]
    assert len(quiet) == 5 and all(r.levelno == logging.INFO - 2 for r in quiet)


def test_a_chunked_request_is_served_and_ends_its_connection(tmp_path: Path) -> None:
    """A framing the guard does not follow (Transfer-Encoding) goes to aiohttp as it comes;
    the connection closes after that answer instead of carrying more requests."""

    async def main() -> None:
        async with listening(tmp_path) as env:
            raw = (
                b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
                b"GET /never HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            answer = await env.request(raw)
            assert answer.startswith(b"HTTP/1.1 200 "), answer
            assert b"/chunked body=9 " in answer and b"/never" not in answer

    run(main())
