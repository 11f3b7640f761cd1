"""The kubelet connections' TLS transport: OpenSSL reads the socket itself.

aiohttp still does HTTP, pooling, keep-alive and timeouts; only the TLS layer under it is
replaced, so that a thousand kept-alive kubelet connections do not each hold the event loop's
TLS buffers between ticks. See docs/PERFORMANCE.md for the numbers.

The hook is aiohttp's private ``TCPConnector._wrap_create_connection``: pyproject.toml pins
aiohttp to the range the tests ran against. Should the hook ever be missing or called in
another shape, the connector falls back to aiohttp's own TLS transport (correct, only larger)
and logs a warning once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import aiohttp

log = logging.getLogger("kubemetrics.scraper")

# Plaintext bytes asked of OpenSSL per read: one TLS record's worth at most.
_READ_SIZE = 16384


class TLSTransport(asyncio.Transport):
    """A TLS client transport on a non-blocking ``ssl.SSLSocket``: OpenSSL reads records from
    the socket itself.

    Why: the event loop's TLS transport (uvloop's SSLProtocol, like asyncio's) keeps, for
    every connection, a 256 KiB read buffer and two ``ssl.MemoryBIO`` objects that grow to the
    largest socket read and stay that size. For 1,000 kubelet connections kept alive between
    ticks that is ~110 KiB of resident memory each. Here an idle connection holds only
    OpenSSL's session state (~24 KiB; CPython sets SSL_MODE_RELEASE_BUFFERS, so record buffers
    are freed between reads).
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
        self._pending = b""  # a write OpenSSL asked to retry with the very same bytes
        self._backlog: list[bytes] = []
        self._buffered = 0
        self._writer = False
        self._high = 64 * 1024
        self._low = 16 * 1024
        self._protocol_paused = False

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
        while self._reading and not self._closing:
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
            try:
                self._protocol.data_received(data)
            except Exception as exc:  # as asyncio's transports do: the connection is unusable
                self._fatal(exc)
                return

    # --- writing ---------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
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
                self._pending = b"".join(self._backlog)
                self._backlog.clear()
            try:
                sent = self._sock.send(self._pending)
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
            self._pending = self._pending[sent:]
            self._buffered -= sent
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


async def _open_tls(
    loop: asyncio.AbstractEventLoop,
    protocol_factory: Callable[[], asyncio.Protocol],
    addr_infos: list[Any],
    context: ssl.SSLContext,
    server_hostname: str | None,
) -> tuple[TLSTransport, asyncio.Protocol]:
    """Connect (addresses in order) and handshake without blocking the loop."""
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
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await _wait_fd(loop, sock.fileno(), write=False)
                except ssl.SSLWantWriteError:
                    await _wait_fd(loop, sock.fileno(), write=True)
            protocol = protocol_factory()
            transport = TLSTransport(loop, sock, context, protocol)
        except BaseException:
            sock.close()
            raise
        transport.start()
        return transport, protocol
    raise last or OSError("no address to connect to")


_fell_back = False


def _fall_back(why: str) -> None:
    global _fell_back
    if not _fell_back:
        _fell_back = True
        log.warning(
            "Kubelet connections use aiohttp's own TLS transport (more memory per kept-alive "
            "connection): %s; this aiohttp version (%s) is outside the range kubemetrics is "
            "tested with",
            why,
            aiohttp.__version__,
        )


class KubeletConnector(aiohttp.TCPConnector):
    """TCPConnector whose TLS connections use :class:`TLSTransport`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not hasattr(aiohttp.TCPConnector, "_wrap_create_connection"):
            _fall_back("aiohttp.TCPConnector._wrap_create_connection does not exist")

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, Any]:
        context = kwargs.get("ssl")
        if not isinstance(context, ssl.SSLContext):  # plain HTTP: nothing to replace
            return await super()._wrap_create_connection(*args, **kwargs)
        addr_infos = kwargs.get("addr_infos")
        req = kwargs.get("req")
        if not addr_infos or not args or req is None:
            _fall_back("_wrap_create_connection was called without protocol, addr_infos or req")
            return await super()._wrap_create_connection(*args, **kwargs)
        client_error = kwargs.get("client_error", aiohttp.ClientConnectorError)
        try:
            return await _open_tls(
                self._loop, args[0], addr_infos, context, kwargs.get("server_hostname")
            )
        except ssl.SSLCertVerificationError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc
