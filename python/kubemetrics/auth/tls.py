"""Serving TLS that follows its inputs: the serving pair's files and the client CAs.

A listening asyncio server keeps the `SSLContext` it was started with, so that context (the
"base") only carries what OpenSSL fixes per connection when it is created — minimum version,
cipher list, whether to request a client certificate, verification flags — and an SNI callback
that, during every handshake, switches the connection to the newest context. The newest
context carries what OpenSSL reads after that switch: the serving certificate and key, the
trusted client CAs and ALPN. So a renewed certificate (files replaced, e.g. by cert-manager) or
a rotated CA (the ConfigMap changed) applies to the next handshake, with no restart.

Client certificates are requested, never required, and the handshake accepts those from either
trusted CA; which CA actually vouches for a certificate (front-proxy vs client) is decided per
request by `auth.authn`, since the two are different trust decisions. A certificate from no
trusted CA fails the handshake (OpenSSL cannot be told to ignore it), which refuses it just as
upstream's 401 would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable

from kubemetrics.config import ServingConfig

log = logging.getLogger("kubemetrics.auth")

CERT_POLL_SECONDS = 10.0


class TLSConfigError(Exception):
    """The serving certificate or key cannot be loaded."""


def _stamp(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mtime_ns, st.st_size, st.st_ino


def build_context(
    serving: ServingConfig,
    cert_file: str,
    key_file: str,
    client_ca_pem: bytes = b"",
    *,
    request_client_certs: bool = False,
) -> ssl.SSLContext:
    """A server context: the pair, `--tls-min-version` (default TLS 1.2), the cipher list, and
    the client CAs. Blocking (reads files): call it in a thread from the event loop."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = serving.ssl_min_version or ssl.TLSVersion.TLSv1_2
    ciphers = serving.openssl_ciphers()
    try:
        if ciphers is not None:
            ctx.set_ciphers(ciphers)
        ctx.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as e:
        raise TLSConfigError(f"cannot load the serving certificate {cert_file}: {e}") from e
    if request_client_certs:
        ctx.verify_mode = ssl.CERT_OPTIONAL
        # Go treats every certificate in a CA bundle as a trust anchor, intermediates too.
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    if client_ca_pem.strip():
        try:
            ctx.load_verify_locations(cadata=client_ca_pem.decode())
        except (ssl.SSLError, ValueError) as e:
            raise TLSConfigError(f"cannot load the client CA bundle: {e}") from e
    # aiohttp's server speaks HTTP/1.1 only; say so, so HTTP/2 clients fall back cleanly.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class DynamicServingTLS:
    """The listener's TLS, rebuilt when the serving files or the client CAs change.

    `client_cas()` returns the PEM of every CA a client certificate may chain to; call
    `client_cas_changed()` after it changes. `start()` returns the base context for the
    listener; `close()` stops the file watch.
    """

    def __init__(
        self,
        serving: ServingConfig,
        cert_file: str,
        key_file: str,
        *,
        client_cas: Callable[[], bytes] = lambda: b"",
        request_client_certs: bool = True,
        poll_seconds: float = CERT_POLL_SECONDS,
    ) -> None:
        self._serving = serving
        self.cert_file = cert_file
        self.key_file = key_file
        self._client_cas = client_cas
        self._request = request_client_certs
        self._poll = poll_seconds
        self._current: ssl.SSLContext | None = None
        self._stamps: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._rebuild: asyncio.Task[None] | None = None
        self._again = False
        self.reloads = 0  # contexts built after the first, for tests

    @property
    def current(self) -> ssl.SSLContext:
        assert self._current is not None, "start() first"
        return self._current

    def _build(self) -> ssl.SSLContext:
        return build_context(
            self._serving,
            self.cert_file,
            self.key_file,
            self._client_cas(),
            request_client_certs=self._request,
        )

    def _read_stamps(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        return _stamp(self.cert_file), _stamp(self.key_file)

    async def start(self) -> ssl.SSLContext:
        self._stamps = await asyncio.to_thread(self._read_stamps)
        self._current = await asyncio.to_thread(self._build)
        base = await asyncio.to_thread(self._build)
        base.sni_callback = self._on_handshake
        self._task = asyncio.create_task(self._watch(), name="serving-cert-watch")
        return base

    def _on_handshake(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, base: ssl.SSLContext
    ) -> None:
        # Called by OpenSSL for every ClientHello (SNI or not): serve the newest pair and CAs.
        current = self._current
        if current is not None and sslobj.context is not current:
            sslobj.context = current
        return None

    def client_cas_changed(self) -> None:
        """Rebuild soon (coalesced), keeping the current context if the new one fails."""
        if self._rebuild is not None and not self._rebuild.done():
            self._again = True
            return
        self._rebuild = asyncio.get_running_loop().create_task(self._rebuild_loop())

    async def _rebuild_loop(self) -> None:
        while True:
            self._again = False
            await self.reload("client CAs changed")
            if not self._again:
                return

    async def reload(self, why: str) -> bool:
        try:
            ctx = await asyncio.to_thread(self._build)
        except TLSConfigError as e:
            log.warning("Keeping the current serving TLS configuration: %s", e)
            return False
        self._current = ctx
        self.reloads += 1
        log.info("Serving TLS reloaded (%s)", why)
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                stamps = await asyncio.to_thread(self._read_stamps)
            except OSError as e:
                log.warning("Cannot check the serving certificate files: %s", e)
                continue
            if stamps == self._stamps:
                continue
            # Give a writer replacing both files a moment, then load both together.
            await asyncio.sleep(min(self._poll, 1.0))
            try:
                stamps = await asyncio.to_thread(self._read_stamps)
            except OSError:
                continue
            if await self.reload(f"{self.cert_file} changed"):
                self._stamps = stamps

    async def close(self) -> None:
        for task in (self._task, self._rebuild):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._rebuild = None
