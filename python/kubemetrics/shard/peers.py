"""Fetching a peer's points: one compact body per peer per cycle, over the secure port.

`GET /shard/v1/points` on the peer (`api/points.py` serves it) answers the peer's own latest
points as one binary body, already compressed and encoded by the Rust core
(`Store.export_points`). The request carries this replica's own credentials (its
ServiceAccount's bearer token): the peer authenticates and authorizes it like any client, as
`get nodes/metrics`, which the server's ClusterRole already grants.

The connection is pinned to the certificate fingerprint the peer advertises in its Lease, so
the token goes only to the replica that holds that Lease (the certificates are usually
self-signed per pod, with no CA to verify them against). Each fetch is bounded in time and
bytes; connections are kept alive between cycles (one per peer), so a steady cluster pays no
TLS handshake per cycle.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp

from kubemetrics.api.points import POINTS_PATH, POINTS_TYPE
from kubemetrics.config import ConfigError
from kubemetrics.kube.client import TokenSource
from kubemetrics.shard.lease import Member

log = logging.getLogger("kubemetrics.shard")

DEFAULT_MAX_BYTES = 64 << 20


@dataclass(frozen=True)
class PeerSettings:
    timeout: float  # one fetch, connecting included
    max_bytes: int = DEFAULT_MAX_BYTES  # one body (compressed)
    keepalive: float = 60.0  # idle connections outlive the gap between two cycles
    user_agent: str = "kubemetrics"


class PeerError(Exception):
    """A fetch from a peer failed; `kind` is a short reason for metrics and logs."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PeerClient:
    """HTTPS to the peers' secure ports: one session, one kept-alive connection per peer."""

    def __init__(self, token: TokenSource | None, settings: PeerSettings) -> None:
        self._token = token
        self._s = settings
        self._session: aiohttp.ClientSession | None = None
        # One object per fingerprint: the connection pool keys on it, so a new object per
        # request would open a new connection per request.
        self._pins: dict[str, aiohttp.Fingerprint] = {}

    def _pin(self, peer: Member) -> aiohttp.Fingerprint:
        pin = self._pins.get(peer.cert_sha256)
        if pin is None:
            try:
                pin = aiohttp.Fingerprint(bytes.fromhex(peer.cert_sha256))
            except ValueError as e:
                raise PeerError("bad-fingerprint", f"peer {peer.name}: {e}") from e
            if len(self._pins) > 256:  # members come and go; keep the cache small
                self._pins.clear()
            self._pins[peer.cert_sha256] = pin
        return pin

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0,  # the peers are few; each is limited to one connection below
                    limit_per_host=1,
                    keepalive_timeout=self._s.keepalive,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": self._s.user_agent},
                auto_decompress=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, peer: Member) -> bytes:
        """The peer's latest points body; raises PeerError (never blocks past the timeout)."""
        headers = {"Accept": POINTS_TYPE}
        if self._token is not None:
            try:
                auth = await self._token.authorization()
            except ConfigError as e:
                raise PeerError("no-credentials", str(e)) from e
            if auth:
                headers["Authorization"] = auth
        pin = self._pin(peer)
        url = f"https://{peer.address}{POINTS_PATH}"
        limit = self._s.max_bytes
        try:
            async with (
                asyncio.timeout(self._s.timeout),
                self._get_session().get(
                    url, headers=headers, ssl=pin, allow_redirects=False
                ) as resp,
            ):
                if resp.status != 200:
                    raise PeerError(f"http-{resp.status}", f"{url}: HTTP {resp.status}")
                if resp.content_length is not None and resp.content_length > limit:
                    raise PeerError("too-large", f"{url}: {resp.content_length} bytes > {limit}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > limit:
                        raise PeerError("too-large", f"{url}: over {limit} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except TimeoutError as e:
            raise PeerError("timeout", f"{url}: no answer within {self._s.timeout:g}s") from e
        except aiohttp.ServerFingerprintMismatch as e:
            raise PeerError(
                "certificate-mismatch", f"{url}: certificate is not the one its Lease names"
            ) from e
        except (aiohttp.ClientError, OSError) as e:
            raise PeerError("unreachable", f"{url}: {type(e).__name__}: {e}") from e
