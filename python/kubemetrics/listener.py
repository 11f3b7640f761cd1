"""The HTTPS listener: every connection is accepted under a cap and held to time and size
limits before aiohttp sees it.

    accept ─▶ cap ─▶ TLS handshake ─▶ GuardedConnection ─▶ aiohttp's RequestHandler ─▶ the app
           (refused    (deadline:     (head deadline and budget, one request at a time,
            at once)  read-header)    request deadline, idle timeout)

An aggregated API server must answer anyone who reaches its port before it knows who they
are, so what an anonymous peer can make it hold is bounded here, where kube-apiserver's Go
http.Server bounds it (ReadHeaderTimeout 32 s, IdleTimeout 90 s, MaxHeaderBytes 1 MiB):

- **connections**: at most `max_connections` open (handshakes included); past it a new
  connection is reset as soon as it is accepted, which costs no handshake, and counted;
- **TLS handshake**: must finish within `read_header_timeout` (as Go's tlsHandshakeTimeout);
- **request head**: must arrive within `read_header_timeout` of its first byte (of the
  connection, for the first request) and fit `max_header_bytes`, or the connection gets 408 /
  431 and is closed; the head bytes buffered across all connections are a `ByteBudget` (each
  connection `header_allowance` free, the rest from a shared pool; refused: 429);
- **one request at a time**: a connection is not read past its current request until that
  request's handler has finished (as Go's server does), so pipelining cannot queue work;
- **request**: from its head to the end of its handler within `request_timeout`, else the
  connection is closed;
- **idle**: a kept-alive connection with no request for `idle_timeout` is closed.

aiohttp's request handler is created only once a connection has sent a complete head, so an
idle or slow connection costs the TLS transport and this object, nothing more. The app must
have `bracket` as its outermost middleware: it tells the connection its request is done.

Every refusal is a Kubernetes `Status` (JSON), whoever makes it: this layer's 408, 429 and 431,
and aiohttp's answers to requests its parser cannot take (400), which `StatusErrorHandler`
renders instead of aiohttp's plain text. Those are the sender's mistakes, not the server's, so
they are logged at V(2), without a traceback: anyone who can reach the port could otherwise
write error lines at will.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from kubemetrics.api.status import (
    Status,
    header_timeout,
    header_too_large,
    malformed_request,
    status_response,
    too_many_requests,
    withheld_internal_error,
)
from kubemetrics.budget import ByteBudget, Holding
from kubemetrics.config import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_READ_HEADER_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT,
    ServingConfig,
)
from kubemetrics.logs import clip, kv, vlevel
from kubemetrics.selfmetrics import MetricWriter
from kubemetrics.transport import accept_tls

log = logging.getLogger("kubemetrics.listener")

# Head bytes any connection may buffer without drawing on the shared pool: ordinary requests
# (a kube-apiserver proxied request with a user in ~100 groups) fit in it.
HEADER_ALLOWANCE_BYTES = 8 << 10
HEADER_POOL_BYTES = 16 << 20
# Header fields per request: each costs aiohttp a few hundred bytes of objects, so a 1 MiB head
# of tiny fields must not become a million of them; a user in thousands of groups still fits.
MAX_HEADERS = 4096
# When accept() fails for want of descriptors, wait this long before trying again.
_ACCEPT_BACKOFF = 0.05
# After a refusal (408, 429, 431) the connection stays this long before it is closed: closing
# a socket with unread input resets it, and the reset can destroy the answer before the client
# has read it. Nothing more is read meanwhile (no decrypting for a flood): Go's server waits
# 500 ms the same way.
LINGER_SECONDS = 0.5

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HEAD_ENDS = (b"\n\r\n", b"\n\n")
_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, no TIME_WAIT


@dataclass(frozen=True)
class ListenerLimits:
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    read_header_timeout: float = DEFAULT_READ_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_allowance_bytes: int = HEADER_ALLOWANCE_BYTES
    header_pool_bytes: int = HEADER_POOL_BYTES

    def handler_options(self) -> dict[str, Any]:
        """aiohttp `RequestHandler` options that fit these limits: keep-alive is ours, and
        aiohttp's per-line limits leave the whole head to `max_header_bytes` (its defaults
        would refuse a user in many groups: the front proxy sends one X-Remote-Group per
        group)."""
        return {
            "access_log": None,
            # Ours closes idle connections (and counts them); aiohttp's is a backstop.
            "keepalive_timeout": self.idle_timeout + 10.0,
            "max_line_size": self.max_header_bytes,
            "max_field_size": self.max_header_bytes,
            "max_headers": MAX_HEADERS,
        }

    def runner_options(self) -> dict[str, Any]:
        """aiohttp `AppRunner` options: the handlers' (`handler_options`), and handlers end
        with their connections."""
        return {
            # A connection closed (by its client, or by a deadline here) cancels its handler,
            # as a Go server cancels the request's context; aiohttp would let it run on.
            "handler_cancellation": True,
            **self.handler_options(),
        }

    @classmethod
    def from_config(cls, s: ServingConfig) -> ListenerLimits:
        return cls(
            max_connections=s.max_connections,
            read_header_timeout=s.read_header_timeout,
            idle_timeout=s.idle_timeout,
            request_timeout=s.request_timeout,
            max_header_bytes=s.max_header_bytes,
        )


@dataclass
class ListenerStats:
    """Counters for /metrics (`collect`)."""

    open: int = 0  # connections, handshakes included
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # never handshaken, by reason
    dropped: dict[str, int] = field(default_factory=dict)  # closed by a limit, by reason

    def refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def collect(self, w: MetricWriter) -> None:
        """Write the listener's families into /metrics."""
        w.header("kubemetrics_http_connections", "Open client connections.", "gauge")
        w.sample("kubemetrics_http_connections", [], self.open)
        name = "kubemetrics_http_connections_dropped_total"
        w.header(name, "Client connections closed by a time or size limit.", "counter")
        for reason in sorted(self.dropped):
            w.sample(name, [("reason", reason)], self.dropped[reason])
        name = "kubemetrics_http_connections_refused_total"
        w.header(name, "Client connections refused when accepted (at the cap).", "counter")
        for reason in sorted(self.refused):
            w.sample(name, [("reason", reason)], self.refused[reason])


def _framing(head: bytes) -> int | None:
    """The body length a request head announces (0 without one), or None when it uses any
    other framing (Transfer-Encoding) or is unclear: then the connection ends after it."""
    length = 0
    seen = False
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                n = int(value.strip())
            except ValueError:
                return None
            if n < 0 or (seen and n != length):
                return None
            length, seen = n, True
    return length


def _reply(status: Status) -> bytes:
    """A whole HTTP answer carrying `status`, for refusals made before aiohttp sees a request."""
    body = status.to_json()
    extra = ""
    if status.details is not None and status.details.retry_after_seconds:
        extra = f"Retry-After: {status.details.retry_after_seconds}\r\n"
    return (
        f"HTTP/1.1 {status.code} {HTTPStatus(status.code).phrase}\r\nConnection: close\r\n"
        f"{extra}Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class StatusErrorHandler(RequestHandler):
    """aiohttp's per-connection request handler, answering what it cannot parse (400) and what
    escapes the app (500, 504) with a `Status` body instead of plain text, and logging a
    malformed request quietly (the sender's mistake, which anyone can make at will)."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # some of an answer is out: the connection is broken (aiohttp's own rule)
            raise ConnectionError("cannot send an error after the answer began")
        if status < 500:
            what = (message or (str(exc) if exc else "")).strip().splitlines()
            reason = clip(what[0].rstrip(":")) if what else ""
            log.log(
                vlevel(2),
                "Refused a malformed request",
                extra=kv(code=status, reason=reason, peer=request.remote or ""),
            )
            answer = (
                malformed_request(reason)
                if status == 400
                else Status(code=status, reason="", message=HTTPStatus(status).phrase)
            )
        else:
            answer, reference = withheld_internal_error("the request could not be served")
            log.error(
                "Internal error serving a request",
                exc_info=exc,
                extra=kv(code=status, reference=reference, peer=request.remote or ""),
            )
        resp = status_response(answer)
        resp.force_close()
        return resp


class GuardedConnection(asyncio.Protocol, asyncio.Transport):
    """One client connection: the protocol of its TLS transport, and the transport aiohttp's
    request handler sees. Bytes go to aiohttp a request at a time (head, then its body)."""

    def __init__(self, listener: Listener) -> None:
        super().__init__()
        self._l = listener
        self._limits = listener.limits
        self._loop = listener.loop
        self._transport: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._head = bytearray()
        self._held: Holding = listener.header_budget.holding()
        self._in_request = False
        self._body_left = 0  # body bytes of the current request still to pass on
        self._open_ended = False  # the current request's framing is not ours to follow
        self._stash = b""  # bytes after the current request (the next one, pipelined)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_reason = ""
        self._inner_paused = False
        self._held_back = False  # we stopped reading: a request is being handled
        self._closed = False
        self.close_after = False  # the current request is the last one
        self.requests = 0

    # --- the TLS transport's side ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._l.connections.add(self)
        self._arm(self._limits.read_header_timeout, "header-timeout")

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._in_request:
            self._pass_on(data)
        else:
            self._take_head(data)

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._disarm()
        self._held.release()
        self._l._forget(self)
        if self._inner is not None:
            self._inner.connection_lost(exc)

    # --- heads ---------------------------------------------------------------------------------
    def _take_head(self, data: bytes) -> None:
        if not self._head:
            # Empty lines before a request line are allowed (RFC 9112 §2.2).
            data = data.lstrip(b"\r\n")
            if not data:
                return
            if self._timer_reason == "idle":  # a new request begins: its head has a deadline
                self._arm(self._limits.read_header_timeout, "header-timeout")
        start = max(0, len(self._head) - 2)
        self._head += data
        end = -1
        for sep in _HEAD_ENDS:
            i = self._head.find(sep, start)
            if i >= 0 and (end < 0 or i + len(sep) < end):
                end = i + len(sep)
        size = end if end >= 0 else len(self._head)
        if size > self._limits.max_header_bytes:
            self._refuse("header-too-large", header_too_large(self._limits.max_header_bytes))
            return
        if not self._held.grow(len(data)):
            self._refuse("header-budget", too_many_requests(1))
            return
        if end < 0:
            return
        head, rest = bytes(self._head[:end]), bytes(self._head[end:])
        self._head.clear()
        self._begin_request(head, rest)

    def _begin_request(self, head: bytes, rest: bytes) -> None:
        self._in_request = True
        self._arm(self._limits.request_timeout, "request-timeout")
        length = _framing(head)
        self._open_ended = length is None
        self.close_after = self.close_after or self._open_ended
        self._body_left = length or 0
        if self._inner is None:
            self._inner = self._l.new_handler()
            self._inner.connection_made(self)
            if self._closed:
                return
        self._inner.data_received(head)
        self._pass_on(rest)

    def _pass_on(self, data: bytes) -> None:
        """Bytes after the current head: its body, then (held back) the next request."""
        assert self._inner is not None
        if self._open_ended:
            if data:
                self._inner.data_received(data)
            return
        body, more = data[: self._body_left], data[self._body_left :]
        self._body_left -= len(body)
        if body:
            self._inner.data_received(body)
        if more:
            self._stash += more
        if self._body_left == 0 and not self._held_back:
            self._held_back = True
            self._update_reading()

    def request_done(self) -> None:
        """The current request's handler has finished (called by `bracket`)."""
        if not self._in_request or self._closed:
            return
        self.requests += 1
        self._in_request = False
        self._held.release()
        self._arm(self._limits.idle_timeout, "idle")
        if self.close_after:
            # The response is written after this and aiohttp closes (the bracket made it
            # force_close); nothing more is read meanwhile.
            return
        self._held_back = False
        self._update_reading()
        stash, self._stash = self._stash, b""
        if stash:
            self._take_head(stash)

    def _refuse(self, reason: str, status: Status) -> None:
        self._l.stats.drop(reason)
        log.log(vlevel(2), "Closing a connection", extra=kv(reason=reason, peer=self._peer()))
        self._end(_reply(status))

    def _end(self, last: bytes = b"") -> None:
        """Send `last` (a refusal), then close once the client has had time to read it.
        Nothing more is read or handed on."""
        if self._closed or self._transport is None:
            return
        self._closed = True
        self._disarm()
        self._head.clear()
        self._stash = b""
        self._held.release()
        with contextlib.suppress(RuntimeError):
            self._transport.pause_reading()
        if not last:
            self._close_transport(LINGER_SECONDS)
            return
        self._transport.write(last)
        self._timer = self._loop.call_later(LINGER_SECONDS, self._close_transport, LINGER_SECONDS)

    def _close_transport(self, grace: float) -> None:
        """Close, flushing what is written; abort if the client has not read it in `grace`
        (a client that stops reading must not keep the connection and its buffers)."""
        assert self._transport is not None
        self._transport.close()
        self._disarm()
        self._timer = self._loop.call_later(grace, self._transport.abort)

    # --- deadlines -----------------------------------------------------------------------------
    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._timer_reason = reason
        self._timer = self._loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        reason = self._timer_reason
        if self._closed:
            return
        self._l.stats.drop(reason)
        log.log(vlevel(2), "Closing a connection", extra=kv(reason=reason, peer=self._peer()))
        if reason == "header-timeout" and self._head:
            self._end(_reply(header_timeout(self._limits.read_header_timeout)))
        elif reason == "request-timeout":
            self._closed = True
            assert self._transport is not None
            self._transport.abort()  # the handler is cancelled as the connection goes
        else:
            self._end()

    def shut(self) -> None:
        """Server shutdown: close now unless a request is under way (then after it)."""
        if not self._in_request:
            self._end()
        else:
            self.close_after = True

    def _peer(self) -> str:
        peer = self.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else ""

    # --- the transport aiohttp sees --------------------------------------------------------------
    def _update_reading(self) -> None:
        t = self._transport
        if t is None or self._closed:
            return
        if self._inner_paused or self._held_back:
            with contextlib.suppress(RuntimeError):
                t.pause_reading()
        else:
            with contextlib.suppress(RuntimeError):
                t.resume_reading()

    def pause_reading(self) -> None:
        self._inner_paused = True
        self._update_reading()

    def resume_reading(self) -> None:
        self._inner_paused = False
        self._update_reading()

    def is_reading(self) -> bool:
        return not self._inner_paused and self._transport is not None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def writelines(self, list_of_data: Any) -> None:
        if self._transport is not None:
            self._transport.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections cannot half-close")

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() if self._transport else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits() if self._transport else (0, 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._transport is not None:
            self._transport.set_write_buffer_limits(high, low)

    def is_closing(self) -> bool:
        return self._closed or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        # aiohttp closing after an answer: the client has the request deadline to read it.
        if self._transport is not None and not self._transport.is_closing():
            self._closed = True
            self._close_transport(self._limits.request_timeout)

    def abort(self) -> None:
        if self._transport is not None:
            self._closed = True
            self._disarm()
            self._transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if self._transport is None:
            return default
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._inner = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner if self._inner is not None else self


@web.middleware
async def bracket(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The app's outermost middleware: tells the connection when its request is done (and
    closes connections that must not carry another request)."""
    conn = request.transport
    try:
        response = await handler(request)
        if isinstance(conn, GuardedConnection) and conn.close_after:
            response.force_close()
        return response
    finally:
        if isinstance(conn, GuardedConnection):
            conn.request_done()


class Listener:
    """Accepts TLS connections on (host, port) for `server` (aiohttp's `AppRunner.server`, made
    with `limits.runner_options()`), under `limits`."""

    def __init__(
        self,
        server: web.Server,
        context: ssl.SSLContext,
        limits: ListenerLimits | None = None,
        stats: ListenerStats | None = None,
    ) -> None:
        self.server = server
        self.context = context
        self.limits = limits or ListenerLimits()
        self.stats = stats or ListenerStats()
        self.header_budget = ByteBudget(
            self.limits.header_pool_bytes, self.limits.header_allowance_bytes
        )
        self.loop = asyncio.get_running_loop()
        self._sockets: list[socket.socket] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._handshakes: set[asyncio.Task[None]] = set()
        self.connections: set[GuardedConnection] = set()
        self._drained: asyncio.Event | None = None  # set once close() has seen the last go
        self._fd_warned = False

    def new_handler(self) -> asyncio.Protocol:
        """aiohttp's request handler for one connection (what `server()` makes, answering its
        errors with Status bodies)."""
        return StatusErrorHandler(self.server, loop=self.loop, **self.limits.handler_options())

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self._sockets]

    async def start(
        self, host: str, port: int, *, backlog: int = 1024, reuse_port: bool = False
    ) -> None:
        """Listen on (host, port) and accept in the background. Raises OSError."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server(
            (host, port), family=family, backlog=backlog, reuse_port=reuse_port
        )
        sock.setblocking(False)
        self._sockets.append(sock)
        self._tasks.append(self.loop.create_task(self._accept(sock), name="listener-accept"))

    async def _accept(self, lsock: socket.socket) -> None:
        while True:
            try:
                raw, _ = await self.loop.sock_accept(lsock)
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.stats.refuse("descriptors")
                    if not self._fd_warned:
                        self._fd_warned = True
                        log.warning(
                            "Cannot accept connections: out of file descriptors (raise the "
                            "limit, or lower --max-connections)",
                            extra=kv(err=str(e)),
                        )
                    await asyncio.sleep(_ACCEPT_BACKOFF)
                elif e.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    log.log(vlevel(4), "accept failed", extra=kv(err=str(e)))
                    await asyncio.sleep(_ACCEPT_BACKOFF)  # never a busy loop
                continue
            self.stats.accepted += 1
            if self.stats.open >= self.limits.max_connections:
                self.stats.refuse("limit")
                with contextlib.suppress(OSError):
                    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
                raw.close()
                continue
            self.stats.open += 1
            task = self.loop.create_task(self._handshake(raw))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, raw: socket.socket) -> None:
        conn = GuardedConnection(self)
        try:
            async with asyncio.timeout(self.limits.read_header_timeout):
                await accept_tls(self.loop, raw, self.context, lambda: conn)
        except TimeoutError:
            self.stats.open -= 1
            self.stats.drop("handshake-timeout")
            return
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            self.stats.open -= 1
            self.stats.drop("handshake-error")
            log.log(vlevel(4), "TLS handshake failed", extra=kv(err=str(e)))
            return
        except asyncio.CancelledError:
            self.stats.open -= 1
            raise

    def _forget(self, conn: GuardedConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.stats.open -= 1
            if not self.connections and self._drained is not None:
                self._drained.set()

    async def close(self, grace: float) -> None:
        """Stop accepting, close idle connections, give requests under way `grace` seconds."""
        for task in self._tasks:
            task.cancel()
        for sock in self._sockets:
            sock.close()
        for task in list(self._handshakes):
            task.cancel()
        for task in [*self._tasks, *self._handshakes]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self._drained = asyncio.Event()
        for conn in list(self.connections):
            conn.shut()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._drained.wait()
        for conn in list(self.connections):
            conn.abort()
