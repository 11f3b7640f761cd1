"""Sending a native `Body` to a client: bounded chunks, a server-wide budget, a deadline.

- **Chunks.** The body is produced about 128 KiB at a time and written with `StreamResponse`,
  awaiting the socket (aiohttp drains once the transport buffers 64 KiB) between chunks: a slow
  reader holds one chunk and a transport buffer, never the whole body. Plain chunks are memcpy of
  pre-encoded fragments and are produced inline; gzip chunks (deflate, ~1 ms each) are produced on
  a worker thread, off the event loop.
- **Budget.** The bytes held for clients across the whole server are a `ByteBudget`
  (`kubemetrics.budget`, the one the listener and the scraper use) with no free allowance:
  each response takes its footprint (the chunk it holds, the transport buffer, the selection
  and any deflate state) from the pool before its headers go out and gives it back when done;
  past the pool the answer is `429 Too Many Requests` with `Retry-After` and a `Status` body,
  as kube-apiserver's flow control answers, and client-go retries it by itself.
- **Deadline.** A response must be written within `--request-timeout` (the listener bounds the
  whole request by it too; this bound holds also for an app served without the listener): a
  client that stops reading loses its connection instead of pinning its view and its
  reservation forever.
- **Compression.** As k8s.io/apiserver: gzip only when `Accept-Encoding` names `gzip` and the body
  is at least 128 KiB; `Content-Encoding: gzip` and `Vary: Accept-Encoding` then, chunked transfer
  (the compressed size is not known in advance); otherwise `Content-Length` is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from kubemetrics import _native
from kubemetrics.api.status import StatusError, too_many_requests
from kubemetrics.budget import ByteBudget
from kubemetrics.config import DEFAULT_REQUEST_TIMEOUT

log = logging.getLogger("kubemetrics.api")

# What a response may hold besides its chunk: the transport's write buffer before aiohttp's
# drain pauses the writer (64 KiB), with room for the TLS layer's records.
TRANSPORT_ALLOWANCE = 128 * 1024
# Deflate state of one gzip stream (window, hash chains, pending output) at level 1, rounded up.
GZIP_STATE_BYTES = 384 * 1024
# What one chunk holds at most: CHUNK_BYTES plus one object's overshoot.
CHUNK_BYTES = _native.CHUNK_BYTES + 32 * 1024
# Default server-wide budget: ~150 full-list readers of a 150,000-pod cluster at once.
DEFAULT_SEND_BUDGET_BYTES = 256 * 1024 * 1024
RETRY_AFTER_SECONDS = 1


def send_budget(limit: int = DEFAULT_SEND_BUDGET_BYTES) -> ByteBudget:
    """The server-wide budget of bytes held for clients: all of it one pool, no allowance (the
    number of responses in flight is what it bounds)."""
    return ByteBudget(limit, 0)


def has_room(budget: ByteBudget) -> bool:
    """Room for at least a small response (checked before doing any work)."""
    return budget.in_use + TRANSPORT_ALLOWANCE <= budget.pool


def footprint(body: _native.Body) -> int:
    """What streaming `body` holds at most: its chunk, the transport buffer, the selection
    (4 bytes per item) and the deflate state when compressed."""
    held = min(body.length, CHUNK_BYTES) + TRANSPORT_ALLOWANCE + 4 * body.items
    if body.gzip:
        held += GZIP_STATE_BYTES
    return held


def accepts_gzip(request: web.Request) -> bool:
    """k8s.io/apiserver's negotiateContentEncoding: a comma-separated token equal to `gzip`."""
    header = request.headers.get("Accept-Encoding", "")
    return any(token.strip() == "gzip" for token in header.split(","))


def check_room(budget: ByteBudget) -> None:
    """Refuse before doing any work when the budget is already spent."""
    if not has_room(budget):
        budget.refused += 1
        raise StatusError(too_many_requests(RETRY_AFTER_SECONDS))


async def send(
    request: web.Request,
    body: _native.Body,
    content_type: str,
    budget: ByteBudget,
    deadline: float = DEFAULT_REQUEST_TIMEOUT,
) -> web.StreamResponse:
    """Stream `body` to the client within the budget and the deadline."""
    held = budget.holding()
    if not held.grow(footprint(body)):
        raise StatusError(too_many_requests(RETRY_AFTER_SECONDS))
    try:
        resp: web.StreamResponse
        if not body.gzip and body.length <= _native.CHUNK_BYTES:
            # One chunk (an HPA's answer, a get): headers and body in one write, which a
            # StreamResponse (headers sent at prepare) would split in two TLS records.
            resp = web.Response(body=body.read(), content_type=content_type)
        else:
            resp = web.StreamResponse()
            resp.content_type = content_type
            if body.gzip:
                resp.headers["Content-Encoding"] = "gzip"
                resp.headers["Vary"] = "Accept-Encoding"
            else:
                resp.content_length = body.length
        try:
            async with asyncio.timeout(deadline):
                await resp.prepare(request)
                if isinstance(resp, web.Response) or request.method == "HEAD":
                    # The body is in the Response, or not sent at all (a StreamResponse
                    # would send what it is given, also to a HEAD).
                    pass
                elif body.gzip:
                    # Deflate costs ~1 ms per chunk: a worker thread, not the event loop.
                    while chunk := await asyncio.to_thread(body.read):
                        await resp.write(chunk)
                else:
                    while chunk := body.read():
                        await resp.write(chunk)
                await resp.write_eof()
        except TimeoutError:
            log.info(
                "Closing a connection whose client did not read its response within %gs",
                deadline,
            )
            _abort(request)
        except ConnectionError:
            # The client went away mid-body; nothing more can be sent.
            _abort(request)
        return resp
    finally:
        held.release()


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()
