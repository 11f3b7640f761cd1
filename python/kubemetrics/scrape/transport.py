"""The kubelet connections: aiohttp's connector over `kubemetrics.transport.TLSTransport`.

aiohttp still does HTTP, pooling, keep-alive and timeouts; only the TLS layer under it is
replaced, so that a thousand kept-alive kubelet connections do not each hold the event loop's
TLS buffers between ticks (see docs/PERFORMANCE.md), and a kubelet that talks while its
connection idles in the pool loses the connection.

The hook is aiohttp's private ``TCPConnector._wrap_create_connection``: pyproject.toml pins
aiohttp to the range the tests ran against. Should the hook ever be missing or called in
another shape, the connector falls back to aiohttp's own TLS transport (correct, only larger)
and logs a warning once.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import aiohttp

from kubemetrics.transport import TLSTransport, connect_tls

log = logging.getLogger("kubemetrics.scraper")


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
    """TCPConnector whose TLS connections use :class:`TLSTransport`, and whose idle pooled
    connections close when the kubelet sends anything unasked (`_release`, below)."""

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
            return await connect_tls(
                self._loop, args[0], addr_infos, context, kwargs.get("server_hostname")
            )
        except ssl.SSLCertVerificationError as exc:
            raise aiohttp.ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl.SSLError as exc:
            raise aiohttp.ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            raise client_error(req.connection_key, exc) from exc

    def _release(self, *args: Any, **kwargs: Any) -> None:
        # aiohttp's private hook (pinned with the other): a connection goes back to the pool
        # only once its answer has been read in full, so from here until the next request
        # the kubelet has nothing to say; anything it sends closes the connection rather than
        # being read later as the answer to a request it has not seen yet.
        protocol = args[1] if len(args) > 1 else kwargs.get("protocol")
        transport = getattr(protocol, "transport", None)
        super()._release(*args, **kwargs)
        if isinstance(transport, TLSTransport) and not transport.is_closing():
            transport.expect_silence(transport.writes)
