"""Credentials for the API server and a small aiohttp client for it.

Credentials come from ``--kubeconfig`` (parsed by kubernetes-asyncio's loader, in a child
process, see ``_kubeconfig_loader``), else from the in-cluster service account, else a clear
:class:`ConfigError`. The client speaks JSON through orjson and never builds model objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from kubemetrics._native import ListError, ListSplitter
from kubemetrics.api.status import Status, StatusError
from kubemetrics.config import ConfigError

log = logging.getLogger("kubemetrics.kube")

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# How often a rotating token file is re-read (client-go re-reads projected tokens every minute).
TOKEN_REFRESH_SECONDS = 60.0
# The longest a credential refresh (a token file, the kubeconfig loader and its exec plugin)
# may take before it is given up (and the plugin's processes killed).
CREDENTIAL_REFRESH_TIMEOUT = 30.0
# How long the caller that starts a refresh waits for it while an older value can still be used.
STALE_WAIT_SECONDS = 1.0
# Bounds on error bodies and on one object (a watch event, a list item). A list body is the
# cluster's size (kube-apiserver answers a watch-cache list whole, whatever `limit` says), so it
# is never held: it is read in chunks and split into items as they complete (`stream_list`);
# what it costs is one chunk, one item and the envelope (kind, apiVersion, metadata).
_MAX_ERROR_BODY = 1 << 20
_MAX_WATCH_LINE = 64 << 20
_MAX_LIST_ENVELOPE = 1 << 20
LIST_CHUNK = 256 << 10


class ApiConnectionError(Exception):
    """The API server could not be reached or the connection broke."""


class TokenSource:
    """The ``Authorization`` header value, re-read as it rotates.

    ``reader`` (when given) produces a fresh header value; it is called at most once per
    ``refresh_seconds`` and again after :meth:`invalidate` (a 401). A failing reader keeps the
    previous value so a half-written rotation never drops the credential.

    A refresh may not hold anyone up for long: it runs as one task, cancelled (and a credential
    plugin's process killed) after ``refresh_timeout``; the caller that starts it waits at most
    ``stale_wait`` for the fresh value when a previous one exists, and carries on with that one
    otherwise, as does everyone else meanwhile. Only without any value yet does a caller wait
    for the refresh (and get `ConfigError` if it fails): a hung exec plugin fails a scrape
    tick, never the scrape loop or the API client.
    """

    def __init__(
        self,
        header: str | None = None,
        *,
        reader: Callable[[], Awaitable[str | None]] | None = None,
        refresh_seconds: float = TOKEN_REFRESH_SECONDS,
        refresh_timeout: float = CREDENTIAL_REFRESH_TIMEOUT,
        stale_wait: float = STALE_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._header = header
        self._reader = reader
        self._refresh = refresh_seconds
        self._refresh_timeout = refresh_timeout
        self._stale_wait = stale_wait
        self._clock = clock
        self._read_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_file(cls, path: str, *, refresh_seconds: float = TOKEN_REFRESH_SECONDS) -> TokenSource:
        """A bearer token kept in ``path`` (a projected service-account token)."""

        async def read() -> str | None:
            token = (await asyncio.to_thread(_read_text, path)).strip()
            if not token:
                raise ConfigError(f"token file {path} is empty")
            return f"Bearer {token}"

        return cls(reader=read, refresh_seconds=refresh_seconds)

    def current(self) -> str | None:
        """The last known value, without refreshing."""
        return self._header

    def invalidate(self) -> None:
        """Force a re-read on the next :meth:`authorization` (after a 401)."""
        self._read_at = None

    def _due(self) -> bool:
        return self._reader is not None and (
            self._read_at is None or self._clock() - self._read_at >= self._refresh
        )

    async def authorization(self) -> str | None:
        if not self._due():
            return self._header
        task = self._task
        started = task is None or task.done()
        if task is None or task.done():
            task = self._task = asyncio.get_running_loop().create_task(
                self._run_refresh(), name="credential-refresh"
            )
        if self._header is None:
            await asyncio.shield(task)  # raises ConfigError when no value could be read
        elif started:
            await asyncio.wait({task}, timeout=self._stale_wait)
        return self._header

    async def _run_refresh(self) -> None:
        assert self._reader is not None
        try:
            async with asyncio.timeout(self._refresh_timeout):
                value = await self._reader()
        except (OSError, ConfigError, TimeoutError) as exc:
            why = (
                f"no answer within {self._refresh_timeout:g}s"
                if isinstance(exc, TimeoutError)
                else str(exc)
            )
            if self._header is None:
                raise ConfigError(f"cannot read credentials: {why}") from exc
            log.warning("Keeping the previous token: cannot re-read it: %s", why)
        else:
            if value != self._header and self._header is not None:
                log.info("Bearer token rotated")
            self._header = value
        self._read_at = self._clock()


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


@dataclass(frozen=True)
class ClusterCredentials:
    """How to reach and authenticate to the API server (also inherited by the kubelet client)."""

    server: str
    ca_pem: str | None = None
    cert_pem: str | None = None
    key_pem: str | None = None
    token: TokenSource = field(default_factory=TokenSource, compare=False)
    insecure_skip_verify: bool = False
    tls_server_name: str | None = None
    source: str = ""

    def ssl_context(self) -> ssl.SSLContext:
        return make_ssl_context(
            ca_pem=self.ca_pem,
            cert_pem=self.cert_pem,
            key_pem=self.key_pem,
            verify=not self.insecure_skip_verify,
        )


def make_ssl_context(
    *,
    ca_pem: str | None = None,
    ca_file: str | None = None,
    cert_pem: str | None = None,
    key_pem: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    verify: bool = True,
) -> ssl.SSLContext:
    """A client TLS context. Without a CA the system trust store is used.

    PEM contents for the client pair go through a private temporary directory because
    ``ssl`` only loads key pairs from files; the files are gone when this returns.
    """
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if verify:
        if ca_file or ca_pem:
            # Only the given CA: a cluster CA must not be widened by the system store.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                ctx.load_verify_locations(cafile=ca_file, cadata=ca_pem)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"cannot load CA certificate: {exc}") from exc
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        if cert_file or key_file:
            if not (cert_file and key_file):
                raise ConfigError("a client certificate needs both the certificate and the key")
            ctx.load_cert_chain(cert_file, key_file)
        elif cert_pem or key_pem:
            if not (cert_pem and key_pem):
                raise ConfigError("a client certificate needs both the certificate and the key")
            with tempfile.TemporaryDirectory(prefix="kubemetrics-") as tmp:
                cpath = os.path.join(tmp, "tls.crt")
                kpath = os.path.join(tmp, "tls.key")
                for path, data in ((cpath, cert_pem), (kpath, key_pem)):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    with os.fdopen(fd, "w") as f:
                        f.write(data)
                ctx.load_cert_chain(cpath, kpath)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load client certificate: {exc}") from exc
    return ctx


async def load_kubeconfig_credentials(path: str, context: str | None = None) -> ClusterCredentials:
    """Credentials from a kubeconfig file (its current context unless ``context`` is given)."""
    if not await asyncio.to_thread(os.path.isfile, path):
        raise ConfigError(f"kubeconfig {path}: no such file")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kubemetrics.kube._kubeconfig_loader",
        path,
        context or "",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own process group: an exec plugin it runs goes down with it.
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(CREDENTIAL_REFRESH_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        await _kill_group(proc)
        raise ConfigError(
            f"cannot load kubeconfig {path}: no answer within {CREDENTIAL_REFRESH_TIMEOUT:g}s "
            "(a credential plugin that hangs?)"
        ) from None
    except BaseException:
        await _kill_group(proc)
        raise
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip().splitlines()
        raise ConfigError(f"cannot load kubeconfig {path}: {detail[-1] if detail else 'failed'}")
    data = orjson.loads(out)
    server = data.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise ConfigError(f"kubeconfig {path}: cluster has no usable server URL ({server!r})")

    token: TokenSource
    if data.get("token_file"):
        token = TokenSource.from_file(data["token_file"])
    elif data.get("exec"):
        # Exec plugins (e.g. cloud IAM) hand out expiring tokens: run the loader again when
        # the token expires or the API server rejects it.
        first = data.get("authorization")
        expiry = data.get("exec_expiry")

        async def rerun() -> str | None:
            again = await load_kubeconfig_credentials(path, context)
            return again.token.current()

        refresh = max(expiry - time.time() - 30.0, 30.0) if expiry else 3600.0
        token = TokenSource(first, reader=rerun, refresh_seconds=refresh)
        token._read_at = time.monotonic()  # the first value is fresh
    else:
        token = TokenSource(data.get("authorization"))
    return ClusterCredentials(
        server=server.rstrip("/"),
        ca_pem=data.get("ca_pem"),
        cert_pem=data.get("cert_pem"),
        key_pem=data.get("key_pem"),
        token=token,
        insecure_skip_verify=not data.get("verify_ssl", True),
        tls_server_name=data.get("tls_server_name"),
        source=f"kubeconfig {path}",
    )


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill the loader and whatever it started (an exec plugin), and reap the loader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await asyncio.shield(proc.wait())


async def load_incluster_credentials(
    environ: Mapping[str, str] | None = None,
    sa_dir: str = SERVICE_ACCOUNT_DIR,
) -> ClusterCredentials:
    """Credentials of the pod's service account (token re-read as the kubelet rotates it)."""
    env = os.environ if environ is None else environ
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise ConfigError(
            "no --kubeconfig given and not running in a cluster "
            "(KUBERNETES_SERVICE_HOST/PORT unset)"
        )
    token_path = os.path.join(sa_dir, "token")
    ca_path = os.path.join(sa_dir, "ca.crt")
    try:
        ca_pem = await asyncio.to_thread(_read_text, ca_path)
    except OSError as exc:
        raise ConfigError(f"in-cluster CA {ca_path}: {exc.strerror or exc}") from exc
    if not ca_pem.strip():
        raise ConfigError(f"in-cluster CA {ca_path} is empty")
    token = TokenSource.from_file(token_path)
    await token.authorization()  # fail now, clearly, rather than at the first request
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ClusterCredentials(
        server=f"https://{hostport}", ca_pem=ca_pem, token=token, source="in-cluster config"
    )


async def load_credentials(
    kubeconfig: str | None, context: str | None = None
) -> ClusterCredentials:
    """``--kubeconfig`` when given, else the in-cluster service account, else ConfigError."""
    if kubeconfig:
        return await load_kubeconfig_credentials(kubeconfig, context)
    return await load_incluster_credentials()


def _json_or_none(body: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


class ApiClient:
    """aiohttp client for the API server: one keep-alive session, orjson, Status errors."""

    def __init__(
        self,
        creds: ClusterCredentials,
        *,
        request_timeout: float = 60.0,
        user_agent: str = "kubemetrics",
        connections: int = 16,
    ) -> None:
        self.creds = creds
        self._timeout = request_timeout
        self._user_agent = user_agent
        self._connections = connections
        self._ssl: ssl.SSLContext | None = (
            creds.ssl_context() if creds.server.startswith("https://") else None
        )
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession belongs to the running loop.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl if self._ssl is not None else False,
                limit=self._connections,
                keepalive_timeout=120.0,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"User-Agent": self._user_agent},
                json_serialize=lambda o: orjson.dumps(o).decode(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _headers(self, accept: str | None) -> dict[str, str]:
        headers = {"Accept": accept or "application/json"}
        auth = await self.creds.token.authorization()
        if auth:
            headers["Authorization"] = auth
        return headers

    async def _raise_for(self, resp: aiohttp.ClientResponse, method: str, path: str) -> None:
        if 200 <= resp.status < 300:
            return
        if resp.status == 401:
            self.creds.token.invalidate()
        body = await resp.content.read(_MAX_ERROR_BODY)
        status_obj = _json_or_none(body)
        detail = ""
        if status_obj is not None and isinstance(status_obj.get("message"), str):
            detail = status_obj["message"]
        elif body:
            detail = body[:200].decode(errors="replace").strip()
        raise StatusError(
            Status.from_answer(resp.status, status_obj),
            f"{method} {path}: HTTP {resp.status}: {detail or resp.reason}",
        )

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None,
        accept: str | None,
        body: bytes | None,
        client_timeout: aiohttp.ClientTimeout,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        headers = await self._headers(accept)
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._get_session().request(
                method,
                self.creds.server + path,
                params=params,
                headers=headers,
                data=body,
                timeout=client_timeout,
                server_hostname=self.creds.tls_server_name,
            ) as resp:
                await self._raise_for(resp, method, path)
                yield resp
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiConnectionError(
                f"{method} {path}: {type(exc).__name__}: {exc}".rstrip(": ")
            ) from exc

    async def get_json(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        request_timeout: float | None = None,
    ) -> Any:
        t = aiohttp.ClientTimeout(total=request_timeout or self._timeout)
        async with self._request(
            "GET", path, params=params, accept=accept, body=None, client_timeout=t
        ) as resp:
            data = await resp.read()
        return _decode(data, path)

    async def post_json(self, path: str, obj: Any, request_timeout: float | None = None) -> Any:
        return await self.send_json("POST", path, obj, request_timeout)

    async def send_json(
        self, method: str, path: str, obj: Any = None, request_timeout: float | None = None
    ) -> Any:
        """POST, PUT or DELETE `obj` (None: no body) and decode the JSON answer; a non-2xx
        answer raises `StatusError` (409 Conflict, 404 NotFound, ...)."""
        t = aiohttp.ClientTimeout(total=request_timeout or self._timeout)
        body = None if obj is None else orjson.dumps(obj)
        async with self._request(
            method, path, params=None, accept=None, body=body, client_timeout=t
        ) as resp:
            data = await resp.read()
        return _decode(data, path)

    @contextlib.asynccontextmanager
    async def stream_list(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        request_timeout: float | None = None,
    ) -> AsyncIterator[ListBody]:
        """Open a list GET; its items come in pieces as they arrive (see `ListBody`)."""
        t = aiohttp.ClientTimeout(total=request_timeout or self._timeout)
        async with self._request(
            "GET", path, params=params, accept=accept, body=None, client_timeout=t
        ) as resp:
            yield ListBody(resp, path)

    @contextlib.asynccontextmanager
    async def stream_lines(
        self,
        path: str,
        params: Mapping[str, str] | None = None,
        accept: str | None = None,
        read_timeout: float | None = None,
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """Open a streaming GET (a watch) and yield an iterator over its non-empty lines.

        ``read_timeout`` bounds the silence between two chunks (a dead connection).
        """
        t = aiohttp.ClientTimeout(total=None, sock_connect=self._timeout, sock_read=read_timeout)
        async with self._request(
            "GET", path, params=params, accept=accept, body=None, client_timeout=t
        ) as resp:
            yield _lines(resp, path)


class ListBody:
    """One list response read in chunks: `pieces()` yields the items each chunk completes (each
    one's JSON bytes, undecoded), then `envelope` holds the rest of the list (``metadata``)."""

    def __init__(self, resp: aiohttp.ClientResponse, path: str) -> None:
        self._resp = resp
        self._path = path
        self.envelope: dict[str, Any] = {}

    async def pieces(self, chunk: int = LIST_CHUNK) -> AsyncIterator[list[bytes]]:
        splitter = ListSplitter(_MAX_WATCH_LINE, _MAX_LIST_ENVELOPE)
        try:
            async for data in self._resp.content.iter_chunked(chunk):
                items = splitter.feed(data)
                if items:
                    yield items
            envelope = orjson.loads(splitter.finish())
        except (ListError, orjson.JSONDecodeError) as exc:
            raise ApiConnectionError(f"GET {self._path}: {exc}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ApiConnectionError(f"GET {self._path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(envelope, dict):
            raise ApiConnectionError(f"GET {self._path}: malformed list response")
        self.envelope = envelope


def _decode(data: bytes, path: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ApiConnectionError(f"GET {path}: invalid JSON in response: {exc}") from exc


async def _lines(resp: aiohttp.ClientResponse, path: str) -> AsyncIterator[bytes]:
    """The non-empty lines of a watch stream. A line split over many chunks is joined once
    (linear in its size), never re-concatenated per chunk; one is at most _MAX_WATCH_LINE."""
    pending: list[bytes] = []  # pieces of the line in progress
    size = 0
    try:
        async for chunk in resp.content.iter_any():
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                piece = chunk[start:end]
                line = b"".join((*pending, piece)) if pending else piece
                pending.clear()
                size = 0
                if line.strip():
                    yield line
                start = end + 1
            if start < len(chunk):
                pending.append(chunk[start:] if start else chunk)
                size += len(chunk) - start
                if size > _MAX_WATCH_LINE:
                    raise ApiConnectionError(f"watch {path}: event larger than {_MAX_WATCH_LINE}")
        last = b"".join(pending)
        if last.strip():
            yield last
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ApiConnectionError(f"watch {path}: {type(exc).__name__}: {exc}") from exc
