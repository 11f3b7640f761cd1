"""The scrape loop (SPEC §2): every resolution, GET each node's kubelet /metrics/resource.

One tick at start, then one per resolution; ticks never overlap (an overrunning tick is
followed at once by the next, never by a pile-up). Inside a tick each node is fetched after a
random stagger of up to min(8 ms × nodes, 4 s), under its own timeout, with no retry, at most
``max_concurrency`` at a time. Response bodies go as bytes into ``Store.ingest`` (Rust parses
and stores them), so no per-container Python object is ever built. One aiohttp session with
keep-alive longer than the resolution is reused across ticks, so a steady cluster costs no TLS
handshakes after the first tick.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp

from kubemetrics.kube.client import ClusterCredentials, ConfigError, TokenSource, make_ssl_context
from kubemetrics.kube.discovery import NodeTarget
from kubemetrics.logs import StateLog, kv

log = logging.getLogger("kubemetrics.scraper")

DEFAULT_MAX_BODY_BYTES = 16 << 20


class Ingestor(Protocol):
    """The part of ``kubemetrics._native.Store`` the scraper feeds."""

    def ingest(self, node: str, data: bytes, request_time_ms: int) -> None: ...


class ScrapeObserver(Protocol):
    """Self-metrics hooks (implemented by selfmetrics.py). Called on the event loop; keep cheap."""

    def on_request(self, node: str, seconds: float, success: bool, started_at: float) -> None:
        """One kubelet request finished; ``started_at`` is its wall-clock start (Unix seconds)."""
        ...

    def on_tick(self, seconds: float) -> None:
        """One scrape cycle finished after ``seconds``."""
        ...

    def on_node_removed(self, node: str) -> None:
        """A node left the node table: drop its series."""
        ...


class NullObserver:
    def on_request(self, node: str, seconds: float, success: bool, started_at: float) -> None:
        pass

    def on_tick(self, seconds: float) -> None:
        pass

    def on_node_removed(self, node: str) -> None:
        pass


@dataclass(frozen=True)
class KubeletClientSettings:
    """How to talk to kubelets. Build it with :func:`kubelet_settings` from the flags."""

    scheme: Literal["https", "http"] = "https"
    ca_file: str | None = None
    ca_pem: str | None = None
    insecure_skip_verify: bool = False
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    token: TokenSource | None = None
    request_timeout: float = 10.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    connections_per_host: int = 2

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.scheme == "http":
            return None
        return make_ssl_context(
            ca_file=self.ca_file,
            ca_pem=None if self.ca_file else self.ca_pem,
            cert_file=self.client_cert_file,
            key_file=self.client_key_file,
            cert_pem=None if self.client_cert_file else self.client_cert_pem,
            key_pem=None if self.client_cert_file else self.client_key_pem,
            verify=not self.insecure_skip_verify,
        )


def kubelet_settings(
    creds: ClusterCredentials | None,
    *,
    certificate_authority: str | None = None,
    certificate_authority_pem: str | None = None,
    insecure_tls: bool = False,
    client_certificate: str | None = None,
    client_key: str | None = None,
    completely_insecure: bool = False,
    request_timeout: float = 10.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> KubeletClientSettings:
    """Map the ``--kubelet-*`` flags onto settings the way upstream does.

    By default the kubelet client inherits the API-server credentials (CA, client pair, bearer
    token); ``--kubelet-certificate-authority`` (a file, or PEM text) replaces the CA,
    ``--kubelet-insecure-tls`` skips verification (still authenticating),
    ``--kubelet-client-certificate/-key`` replace the client pair, and
    ``--deprecated-kubelet-completely-insecure`` is plain HTTP with no credentials.
    """
    if bool(client_certificate) != bool(client_key):
        raise ConfigError(
            "--kubelet-client-certificate and --kubelet-client-key must be given together"
        )
    own_ca = bool(certificate_authority or certificate_authority_pem)
    if insecure_tls and own_ca:
        raise ConfigError(
            "--kubelet-insecure-tls and --kubelet-certificate-authority cannot be used together"
        )
    if completely_insecure:
        if insecure_tls or own_ca or client_certificate:
            raise ConfigError(
                "--deprecated-kubelet-completely-insecure cannot be combined with "
                "--kubelet-insecure-tls, --kubelet-certificate-authority or a client certificate"
            )
        return KubeletClientSettings(
            scheme="http", request_timeout=request_timeout, max_body_bytes=max_body_bytes
        )
    return KubeletClientSettings(
        scheme="https",
        ca_file=certificate_authority or None,
        ca_pem=certificate_authority_pem
        or (None if certificate_authority or creds is None else creds.ca_pem),
        insecure_skip_verify=insecure_tls,
        client_cert_file=client_certificate or None,
        client_key_file=client_key or None,
        client_cert_pem=None if client_certificate or creds is None else creds.cert_pem,
        client_key_pem=None if client_certificate or creds is None else creds.key_pem,
        token=None if creds is None else creds.token,
        request_timeout=request_timeout,
        max_body_bytes=max_body_bytes,
    )


@dataclass(frozen=True)
class ScrapeSettings:
    resolution: float = 60.0
    max_concurrency: int = 128
    stagger_per_node: float = 0.008
    max_stagger: float = 4.0


class _ScrapeFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        fn = ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS (glibc ``malloc_trim``); False elsewhere.

    Why: every cycle allocates and frees ~32 MB of kubelet bodies, TLS records and snapshot
    temporaries among long-lived objects, and glibc keeps those freed pages resident (holes in
    the heap it cannot shrink from the top). Trimming once per cycle, after the snapshot, gives
    back ~10-30 MiB at 1,000 nodes for ~1-3 ms of CPU. Blocking: call it off the event loop
    (``asyncio.to_thread``; ctypes releases the GIL).
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


# Plaintext bytes asked of OpenSSL per read: one TLS record's worth at most.
_READ_SIZE = 16384


class _TLSTransport(asyncio.Transport):
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
) -> tuple[_TLSTransport, asyncio.Protocol]:
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
            transport = _TLSTransport(loop, sock, context, protocol)
        except BaseException:
            sock.close()
            raise
        transport.start()
        return transport, protocol
    raise last or OSError("no address to connect to")


class _KubeletConnector(aiohttp.TCPConnector):
    """TCPConnector whose TLS connections use :class:`_TLSTransport`."""

    async def _wrap_create_connection(
        self, *args: Any, **kwargs: Any
    ) -> tuple[asyncio.Transport, Any]:
        context = kwargs.get("ssl")
        addr_infos = kwargs.get("addr_infos")
        if not isinstance(context, ssl.SSLContext) or not addr_infos or not args:
            return await super()._wrap_create_connection(*args, **kwargs)
        req = kwargs["req"]
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


class Scraper:
    """The tick loop. ``targets`` is the live node table (``Discovery.targets``)."""

    def __init__(
        self,
        targets: Mapping[str, NodeTarget],
        store: Ingestor,
        kubelet: KubeletClientSettings,
        settings: ScrapeSettings,
        observer: ScrapeObserver | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._targets = targets
        self._store = store
        self._k = kubelet
        self._s = settings
        self._observer: ScrapeObserver = observer or NullObserver()
        self._rng = rng or random.Random()
        self._ssl = kubelet.ssl_context()
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self._known: set[str] = set()
        # node -> reason, for nodes whose last scrape failed.
        self.failing: dict[str, str] = {}
        # One log line per change of a node's state, not one per tick.
        self._states = StateLog(log)
        self.last_tick_started: float | None = None  # time.monotonic() at the start of a tick
        self.ticks = 0

    def seconds_since_last_tick(self) -> float | None:
        """For the liveness check (metric-collection-timely)."""
        if self.last_tick_started is None:
            return None
        return time.monotonic() - self.last_tick_started

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = _KubeletConnector(
                ssl=self._ssl if self._ssl is not None else False,
                limit=self._s.max_concurrency * 2,
                limit_per_host=self._k.connections_per_host,
                # Idle connections must outlive the gap between two ticks.
                keepalive_timeout=max(2.0 * self._s.resolution + 10.0, 30.0),
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": "kubemetrics"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        """Tick now, then every resolution, until cancelled."""
        try:
            next_at = time.monotonic()
            while True:
                await self.tick()
                next_at += self._s.resolution
                now = time.monotonic()
                if next_at < now:
                    # Overran: start the next tick at once, and don't try to catch up.
                    next_at = now
                await asyncio.sleep(next_at - now)
        finally:
            await self.close()

    async def tick(self) -> None:
        """Scrape every node once (returns when all finished or timed out)."""
        started = time.monotonic()
        self.last_tick_started = started
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._s.max_concurrency)
        targets = list(self._targets.values())
        self._forget_removed(targets)
        # identity: real kubelets gzip when asked (aiohttp asks by default); inflating costs ~8%
        # more CPU per cycle and saves no memory, while the bytes stay on the cluster network.
        headers = {
            "Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1",
            "Accept-Encoding": "identity",
        }
        if self._k.token is not None and self._k.scheme == "https":
            auth = await self._k.token.authorization()
            if auth:
                headers["Authorization"] = auth
        max_delay = min(self._s.stagger_per_node * len(targets), self._s.max_stagger)
        session = self._get_session()
        async with asyncio.TaskGroup() as tg:
            for target in targets:
                delay = self._rng.uniform(0.0, max_delay) if max_delay > 0 else 0.0
                tg.create_task(self._scrape(session, target, delay, headers))
        self.ticks += 1
        self._observer.on_tick(time.monotonic() - started)

    def _forget_removed(self, targets: list[NodeTarget]) -> None:
        current = {t.name for t in targets}
        for name in self._known - current:
            self.failing.pop(name, None)
            self._states.forget(name)
            self._observer.on_node_removed(name)
        self._known = current

    async def _scrape(
        self,
        session: aiohttp.ClientSession,
        target: NodeTarget,
        delay: float,
        headers: dict[str, str],
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if target.error is not None:
            self._record(target.name, 0.0, ("no-address", target.error), time.time())
            return
        assert self._sem is not None
        async with self._sem:
            started = time.monotonic()
            wall = time.time()
            error: tuple[str, str] | None = None
            try:
                body = await self._fetch(session, target, headers)
                # The time just before sending stamps samples that carry no timestamp.
                self._store.ingest(target.name, body, int(wall * 1000))
            except _ScrapeFailed as exc:
                error = (exc.kind, str(exc))
            except TimeoutError:
                error = ("timeout", f"request timed out after {self._k.request_timeout:g}s")
            except (aiohttp.ClientError, OSError) as exc:
                error = ("unreachable", f"{type(exc).__name__}: {exc}".rstrip(": "))
            except ValueError as exc:  # ParseError from the store: bad payload, node unchanged
                error = ("invalid-metrics", f"invalid metrics: {exc}")
            except Exception as exc:  # a bug must not take the other nodes down
                log.exception("Unexpected error scraping node", extra=kv(node=target.name))
                error = ("error", f"{type(exc).__name__}: {exc}")
            self._record(target.name, time.monotonic() - started, error, wall)

    async def _fetch(
        self, session: aiohttp.ClientSession, target: NodeTarget, headers: dict[str, str]
    ) -> bytes:
        url = f"{self._k.scheme}://{target.hostport}{target.path}"
        limit = self._k.max_body_bytes
        async with (
            asyncio.timeout(self._k.request_timeout),
            session.get(url, headers=headers, allow_redirects=False) as resp,
        ):
            if resp.status != 200:
                if resp.status == 401 and self._k.token is not None:
                    self._k.token.invalidate()  # re-read a rotated token next tick
                raise _ScrapeFailed(
                    f"http-{resp.status}", f'request failed, status: "{resp.status} {resp.reason}"'
                )
            if resp.content_length is not None and resp.content_length > limit:
                raise _ScrapeFailed(
                    "too-large", f"response too large: {resp.content_length} bytes (limit {limit})"
                )
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_any():
                size += len(chunk)
                if size > limit:
                    raise _ScrapeFailed("too-large", f"response too large: over {limit} bytes")
                chunks.append(chunk)
        return b"".join(chunks)

    def _record(
        self, node: str, seconds: float, error: tuple[str, str] | None, started_at: float
    ) -> None:
        self._observer.on_request(node, seconds, error is None, started_at)
        if error is None:
            if self.failing.pop(node, None) is not None:
                self._states.ok(node, "Scraping node works again", node=node)
            return
        kind, message = error
        self.failing[node] = message
        self._states.bad(node, kind, "Failed to scrape node", node=node, err=message)
