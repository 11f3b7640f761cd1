"""A TLS transport on a non-blocking `ssl.SSLSocket`, for both ends: the kubelet client
(`connect_tls`, through `scrape.transport.KubeletConnector`) and the HTTPS listener
(`accept_tls`, through `listener`). OpenSSL reads the socket itself.

Why not the event loop's TLS transport: uvloop's (like asyncio's) keeps per connection a
256 KiB read buffer and two `ssl.MemoryBIO`s that grow to the largest read and stay that size;
for a thousand kept-alive connections that is ~110 KiB of resident memory each, here
~24 KiB (see docs/PERFORMANCE.md). And here the handshake and every read are ours to bound.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable
from typing import Any

# Plaintext bytes asked of OpenSSL per read: one TLS record's worth at most.
_READ_SIZE = 16384
# Plaintext bytes handed to the protocol per readable event before yielding to the loop: a
# peer that sends faster than we parse (a flood of tiny pipelined requests or answers) must
# not keep the event loop in one callback.
READ_BUDGET = 64 * 1024


class TLSTransport(asyncio.Transport):
    """A TLS transport on a non-blocking ``ssl.SSLSocket``: OpenSSL reads records from the
    socket itself, so an idle connection holds only OpenSSL's session state (~24 KiB; CPython
    sets SSL_MODE_RELEASE_BUFFERS, so record buffers are freed between reads).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: ssl.SSLSocket,
        context: ssl.SSLContext,
        protocol: asyncio.Protocol,
    ) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._context = context
        self._protocol = protocol
        self._closing = False  # close() or abort() called, or the peer went away
        self._closed = False  # socket closed, connection_lost scheduled
        self._reading = True
        # Bytes being written, from `_sent` on (an offset, not a slice: re-slicing a large
        # body at every partial send copies it over and over). OpenSSL retries a write with
        # the very same bytes, which the offset keeps.
        self._pending = b""
        self._sent = 0
        self._backlog: list[bytes] = []
        self._buffered = 0
        self._writer = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False
        self.writes = 0  # write() calls so far: the mark for expect_silence()
        self._silent_since: int | None = None  # writes when the peer was told to be quiet
        self.unsolicited = False  # closed because the peer spoke unasked

    def start(self) -> None:
        self._protocol.connection_made(self)
        if not self._closing and self._reading:
            self._loop.add_reader(self._fd, self._on_readable)

    # --- asyncio.BaseTransport -------------------------------------------------------------
    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self._sock
        try:
            if name in ("socket", "ssl_object"):
                return sock
            if name == "sslcontext":
                return self._context
            if name == "peername":
                return sock.getpeername()
            if name == "sockname":
                return sock.getsockname()
            if name == "peercert":
                return sock.getpeercert()
            if name == "cipher":
                return sock.cipher()
            if name == "compression":
                return sock.compression()
        except OSError:
            return default
        return default

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self._fd)
        if not self._pending and not self._backlog:
            self._finish(None)

    def abort(self) -> None:
        self._closing = True
        self._finish(None)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    # --- reading ---------------------------------------------------------------------------
    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def pause_reading(self) -> None:
        if self._reading and not self._closing:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if self._reading or self._closing:
            return
        self._reading = True
        self._loop.add_reader(self._fd, self._on_readable)
        # Records OpenSSL already decrypted make the socket no more readable: drain them.
        if self._sock.pending():
            self._loop.call_soon(self._on_readable)

    def _on_readable(self) -> None:
        if self._pending or self._backlog:
            self._flush()  # a write that waited for the peer (renegotiation)
        budget = READ_BUDGET
        while self._reading and not self._closing:
            if budget <= 0:
                # Fair share used: let the loop run others. Records OpenSSL already decrypted
                # do not make the socket readable again, so come back for those ourselves.
                if self._sock.pending():
                    self._loop.call_soon(self._on_readable)
                return
            try:
                data = self._sock.recv(_READ_SIZE)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except OSError as exc:  # ssl.SSLError included
                self._fatal(exc)
                return
            if not data:  # close_notify or EOF
                self._closing = True
                try:
                    self._protocol.eof_received()
                finally:
                    self._finish(None)
                return
            if self._silent_since is not None and self._silent_since == self.writes:
                # Nothing was asked since the last answer ended: a peer talking unasked is
                # out of step with us (or hostile); the connection is not reusable.
                self.unsolicited = True
                self._fatal(ConnectionResetError("unsolicited data from the peer"))
                return
            budget -= len(data)
            try:
                self._protocol.data_received(data)
            except Exception as exc:  # as asyncio's transports do: the connection is unusable
                self._fatal(exc)
                return

    def expect_silence(self, mark: int) -> None:
        """The peer has answered everything written up to `mark` (a `writes` value read once
        the request was sent). Unless something was written since, data that arrives before
        the next write is unsolicited and closes the connection."""
        if mark == self.writes and not self._closing:
            self._silent_since = mark

    # --- writing ---------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        self.writes += 1
        self._silent_since = None
        self._backlog.append(bytes(data))
        self._buffered += len(data)
        if not self._pending and len(self._backlog) == 1:
            self._flush()
        self._control_protocol()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS transports cannot half-close")

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low
        self._control_protocol()

    def _flush(self) -> None:
        while self._pending or self._backlog:
            if not self._pending:
                self._pending = (
                    self._backlog[0] if len(self._backlog) == 1 else b"".join(self._backlog)
                )
                self._sent = 0
                self._backlog.clear()
            try:
                sent = self._sock.send(memoryview(self._pending)[self._sent :])
            except ssl.SSLWantReadError:
                return  # retried from _on_readable
            except (ssl.SSLWantWriteError, BlockingIOError):
                if not self._writer:
                    self._writer = True
                    self._loop.add_writer(self._fd, self._flush)
                return
            except OSError as exc:
                self._fatal(exc)
                return
            self._sent += sent
            self._buffered -= sent
            if self._sent >= len(self._pending):
                self._pending = b""
                self._sent = 0
        if self._writer:
            self._writer = False
            self._loop.remove_writer(self._fd)
        self._control_protocol()
        if self._closing:
            self._finish(None)

    def _control_protocol(self) -> None:
        if not self._protocol_paused and self._buffered > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()
        elif self._protocol_paused and self._buffered <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()

    # --- the end ---------------------------------------------------------------------------
    def _fatal(self, exc: Exception) -> None:
        self._closing = True
        self._finish(exc)

    def _finish(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._writer:
            self._loop.remove_writer(self._fd)
        self._pending = b""
        self._sent = 0
        self._backlog.clear()
        self._buffered = 0
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost, exc)


async def _wait_fd(loop: asyncio.AbstractEventLoop, fd: int, *, write: bool) -> None:
    done = loop.create_future()

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    add, remove = (
        (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    )
    add(fd, ready)
    try:
        await done
    finally:
        remove(fd)


async def _handshake(loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await _wait_fd(loop, sock.fileno(), write=False)
        except ssl.SSLWantWriteError:
            await _wait_fd(loop, sock.fileno(), write=True)


async def connect_tls(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.Protocol],
    addr_infos: list[Any],
    context: ssl.SSLContext,
    server_hostname: str | None,
) -> tuple[TLSTransport, asyncio.Protocol]:
    """Connect (addresses in order) and handshake without blocking the loop. The caller
    bounds the time (a timeout around this call closes the socket)."""
    last: OSError | None = None
    for family, type_, proto, _, address in addr_infos:
        raw = socket.socket(family, type_, proto)
        try:
            raw.setblocking(False)
            await loop.sock_connect(raw, address)
        except OSError as exc:
            raw.close()
            last = exc
            continue
        except BaseException:
            raw.close()
            raise
        try:
            sock = context.wrap_socket(
                raw, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except BaseException:
            raw.close()
            raise
        try:
            await _handshake(loop, sock)
            protocol = protocol_factory()
            transport = TLSTransport(loop, sock, context, protocol)
        except BaseException:
            sock.close()
            raise
        transport.start()
        return transport, protocol
    raise last or OSError("no address to connect to")


async def accept_tls(
    loop: asyncio.AbstractEventLoop,
    raw: socket.socket,
    context: ssl.SSLContext,
    protocol_factory: Callable[[], asyncio.Protocol],
) -> TLSTransport:
    """The server side of `connect_tls`: handshake on an accepted socket, then a transport
    for a new protocol. The caller bounds the time; on any failure the socket is closed.

    OpenSSL is not involved until the client's hello arrives: a connection that never starts
    a handshake costs a socket, not OpenSSL's buffers (~45 KiB against ~3)."""
    try:
        raw.setblocking(False)
        await _wait_fd(loop, raw.fileno(), write=False)
        sock = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    except BaseException:
        raw.close()
        raise
    try:
        await _handshake(loop, sock)
        transport = TLSTransport(loop, sock, context, protocol_factory())
    except BaseException:
        sock.close()
        raise
    transport.start()
    return transport
