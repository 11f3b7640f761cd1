"""Sending a native `Body` to a client: bounded chunks, a server-wide budget, a deadline.

- **Chunks.** The body is produced about 128 KiB at a time and written with `StreamResponse`,
  awaiting the socket (aiohttp drains once the transport buffers 64 KiB) between chunks: a slow
  reader holds one chunk and a transport buffer, never the whole body. Plain chunks are memcpy of
  pre-encoded fragments and are produced inline; gzip chunks (deflate, ~1 ms each) are produced on
  a worker thread, off the event loop.
- **Budget.** `SendBudget` bounds the bytes held for clients across the whole server. Each
  response reserves its footprint (the chunk it holds, the transport buffer, the selection and
  any deflate state) before its headers go out and releases it when done; past the budget the
  answer is `429 Too Many Requests` with `Retry-After` and a `Status` body, as kube-apiserver's
  flow control answers, and client-go retries it by itself.
- **Deadline.** A response must be written within `RESPONSE_DEADLINE_SECONDS` (kube-apiserver's
  `--request-timeout` default): a client that stops reading loses its connection instead of
  pinning its view and its reservation forever.
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

log = logging.getLogger("kubemetrics.api")

# What a response may hold besides its chunk: the transport's write buffer before aiohttp's
# drain pauses the writer (64 KiB), with room for the TLS layer's records.
TRANSPORT_ALLOWANCE = 128 * 1024
# Deflate state of one gzip stream (window, hash chains, pending output) at level 1, rounded up.
GZIP_STATE_BYTES = 384 * 1024
# What one chunk holds at most: CHUNK_BYTES plus one object's overshoot.
CHUNK_BYTES = _native.CHUNK_BYTES + 32 * 1024
# kube-apiserver's default --request-timeout: a list must be written within it.
RESPONSE_DEADLINE_SECONDS = 60.0
# Default server-wide budget: ~150 full-list readers of a 150,000-pod cluster at once.
DEFAULT_SEND_BUDGET_BYTES = 256 * 1024 * 1024
RETRY_AFTER_SECONDS = 1


class SendBudget:
    """Bytes held for clients, server-wide; `try_reserve` fails past `limit`."""

    def __init__(self, limit: int = DEFAULT_SEND_BUDGET_BYTES) -> None:
        if limit <= 0:
            raise ValueError(f"send budget must be positive, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.rejected = 0

    def has_room(self) -> bool:
        """Room for at least a small response (checked before doing any work)."""
        return self.in_flight + TRANSPORT_ALLOWANCE <= self.limit

    def try_reserve(self, n: int) -> bool:
        # A response alone bigger than the budget still goes out when nothing else is in flight:
        # the budget bounds concurrency, not the size of one answer.
        if self.in_flight + n > self.limit and self.in_flight > 0:
            self.rejected += 1
            return False
        self.in_flight += n
        return True

    def release(self, n: int) -> None:
        self.in_flight -= n


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


def check_room(budget: SendBudget) -> None:
    """Refuse before doing any work when the budget is already spent."""
    if not budget.has_room():
        budget.rejected += 1
        raise StatusError(too_many_requests(RETRY_AFTER_SECONDS))


async def send(
    request: web.Request,
    body: _native.Body,
    content_type: str,
    budget: SendBudget,
    deadline: float = RESPONSE_DEADLINE_SECONDS,
) -> web.StreamResponse:
    """Stream `body` to the client within the budget and the deadline."""
    held = footprint(body)
    if not budget.try_reserve(held):
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
        budget.release(held)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()
