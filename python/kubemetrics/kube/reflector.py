"""A generic list+watch reflector over plain dicts (orjson), no model classes.

The loop: list (paginated when ``page_size`` is set), then watch from the list's
resourceVersion with bookmarks and a random 5–10 min ``timeoutSeconds`` (like client-go). A watch
that ends cleanly is resumed from the last resourceVersion; ``410 Gone`` (as an HTTP status or
an ``ERROR`` event) and a broken watch lead to a relist. While the API server is unreachable the
reflector backs off exponentially with jitter and the handler keeps what it has, so serving goes
on with the last known state.

An object the handler cannot take (a non-object `metadata`, labels that are not a string map:
the API server validates objects, but whatever reaches us is input) is skipped and logged; the
reflector and everything else it carries go on. A list is read in chunks and handed over in
pieces (the items each chunk completes), and only when the handler fails on a piece, one object
at a time, so the bad ones are found and the rest kept. A list response, however large (one
served from the watch cache comes whole), is never held or decoded at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from kubemetrics.api.status import StatusError
from kubemetrics.kube.client import ApiClient, ApiConnectionError
from kubemetrics.logs import clip, kv

log = logging.getLogger("kubemetrics.kube")

# At most one line per this many seconds about skipped objects (with how many since the last).
SKIP_LOG_SECONDS = 60.0


class ReflectorHandler(Protocol):
    """Receives the reflector's objects as the dicts orjson produced.

    A (re)list calls ``begin_list``, then ``list_page`` once per piece of the list (a network
    chunk's worth of items; a page of a paged list comes in one or more), then ``end_list``, after
    which the handler drops whatever it holds that the list did not contain. A list that fails
    half-way gets no ``end_list`` (nothing is dropped; the next list reconciles).
    """

    def begin_list(self) -> None: ...

    def list_page(self, items: list[dict[str, Any]]) -> None: ...

    def end_list(self) -> None: ...

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        """``ADDED``, ``MODIFIED`` or ``DELETED`` with the event's object."""
        ...


class _Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


class _WatchBroken(Exception):
    """The watch failed in a way that calls for a relist."""


@dataclass(frozen=True)
class ReflectorSettings:
    """What to list and watch.

    ``path`` is the collection, e.g. ``/api/v1/pods``. ``list_accept``/``watch_accept`` choose
    the representation (metadata-only pods use ``as=PartialObjectMetadataList`` /
    ``as=PartialObjectMetadata``). ``page_size`` enables ``limit``/``continue`` paging.
    """

    path: str
    name: str = ""
    label_selector: str = ""
    field_selector: str = ""
    list_accept: str = "application/json"
    watch_accept: str = "application/json"
    page_size: int | None = 500
    list_timeout: float = 300.0
    watch_timeout_min: float = 300.0
    watch_timeout_max: float = 600.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    extra_params: Mapping[str, str] = field(default_factory=dict)


class Reflector:
    """Keeps ``handler`` in step with one collection; run :meth:`run` as a task."""

    def __init__(
        self,
        client: ApiClient,
        settings: ReflectorSettings,
        handler: ReflectorHandler,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._client = client
        self._s = settings
        self._handler = handler
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._synced = asyncio.Event()
        self.resource_version = ""
        self.lists = 0  # completed lists (relists included), for tests and debugging
        self.last_error: str | None = None
        self._events = 0  # events seen by the current watch
        self.name = settings.name or settings.path
        self.skipped = 0  # objects the handler could not take, since start
        self._skips_unlogged = 0
        self._skip_logged_at: float | None = None

    @property
    def has_synced(self) -> bool:
        """True once the first list has been handed to the handler."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    def _params(self) -> dict[str, str]:
        params = dict(self._s.extra_params)
        if self._s.label_selector:
            params["labelSelector"] = self._s.label_selector
        if self._s.field_selector:
            params["fieldSelector"] = self._s.field_selector
        return params

    async def _list(self, consistent: bool) -> None:
        """List every page and hand it over; sets ``resource_version`` to the list's."""
        params = self._params()
        if self._s.page_size:
            params["limit"] = str(self._s.page_size)
        # resourceVersion=0 lets the API server answer from its watch cache (cheap for it,
        # like client-go's first list); after a 410 ask for a consistent read instead.
        if not consistent:
            params["resourceVersion"] = "0"
        begun = False
        while True:
            async with self._client.stream_list(
                self._s.path,
                params,
                accept=self._s.list_accept,
                request_timeout=self._s.list_timeout,
            ) as body:
                # The items arrive in pieces of one network chunk each: the list (a watch-cache
                # list comes whole) is never held, decoded or all at once.
                async for raw in body.pieces():
                    try:
                        items = [orjson.loads(r) for r in raw]
                    except orjson.JSONDecodeError as exc:
                        raise ApiConnectionError(f"list {self._s.path}: bad item: {exc}") from exc
                    if not begun:
                        self._handler.begin_list()
                        begun = True
                    self._take_page(items)
            items_left = body.envelope.get("items")
            meta = body.envelope.get("metadata") or {}
            if items_left is not None or not isinstance(meta, dict):
                raise ApiConnectionError(f"list {self._s.path}: malformed list response")
            if not begun:
                self._handler.begin_list()
                begun = True
            cont = meta.get("continue")
            if not cont or not isinstance(cont, str):
                self.resource_version = str(meta.get("resourceVersion") or "")
                break
            params.pop("resourceVersion", None)  # continue tokens carry their own version
            params["continue"] = cont
        self._handler.end_list()
        self.lists += 1
        self._synced.set()

    async def _watch(self) -> None:
        """Watch from ``resource_version`` until the server ends the watch cleanly."""
        timeout = int(self._rng.uniform(self._s.watch_timeout_min, self._s.watch_timeout_max))
        params = self._params()
        params.update(
            watch="true",
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout),
            resourceVersion=self.resource_version,
        )
        handler = self._handler
        async with self._client.stream_lines(
            self._s.path, params, accept=self._s.watch_accept, read_timeout=timeout + 60.0
        ) as lines:
            async for line in lines:
                try:
                    event = orjson.loads(line)
                    etype = event["type"]
                    obj = event["object"]
                except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                    raise _WatchBroken(f"undecodable watch event: {exc}") from exc
                if etype == "ERROR":
                    code = obj.get("code") if isinstance(obj, dict) else None
                    msg = obj.get("message", "") if isinstance(obj, dict) else ""
                    if code == 410:
                        raise _Gone(msg or "resource version too old")
                    raise _WatchBroken(f"watch error {code}: {msg}")
                if not isinstance(obj, dict):
                    raise _WatchBroken(f"watch event {etype} without an object")
                meta = obj.get("metadata")
                rv = meta.get("resourceVersion") if isinstance(meta, dict) else None
                if etype != "BOOKMARK":
                    try:
                        handler.on_event(etype, obj)
                    except Exception as exc:
                        self._skip(obj, exc)
                self._events += 1
                if rv and isinstance(rv, str):
                    self.resource_version = rv

    def _take_page(self, items: list[Any]) -> None:
        try:
            self._handler.list_page(items)
        except Exception:
            # Find the object(s) the handler cannot take; handing the others over again is
            # harmless (a handler applies a list's objects idempotently).
            for item in items:
                try:
                    self._handler.list_page([item])
                except Exception as exc:
                    self._skip(item, exc)

    def _skip(self, obj: Any, exc: Exception) -> None:
        """Log (at most once a minute, with a count) an object the handler could not take."""
        self.skipped += 1
        self._skips_unlogged += 1
        now = time.monotonic()
        if self._skip_logged_at is not None and now - self._skip_logged_at < SKIP_LOG_SECONDS:
            return
        meta = obj.get("metadata") if isinstance(obj, dict) else None
        ident = ""
        if isinstance(meta, dict):
            ns, name = meta.get("namespace"), meta.get("name")
            ident = "/".join(str(x) for x in (ns, name) if isinstance(x, str) and x)
        log.warning(
            "Skipping a malformed object",
            extra=kv(
                reflector=self.name,
                object=clip(ident, 256),
                err=clip(f"{type(exc).__name__}: {exc}", 256),
                skipped=self._skips_unlogged,
            ),
        )
        self._skip_logged_at = now
        self._skips_unlogged = 0

    async def run(self) -> None:
        """List and watch forever (until cancelled)."""
        loop = asyncio.get_running_loop()
        backoff = self._s.backoff_initial
        need_list = True
        consistent = False
        gone_streak = 0
        while True:
            try:
                if need_list:
                    await self._list(consistent)
                    need_list = False
                    consistent = False
                    backoff = self._s.backoff_initial
                    if self.last_error is not None:
                        log.info("%s: list succeeded again", self.name)
                        self.last_error = None
                started = loop.time()
                self._events = 0
                await self._watch()
                if self._events or loop.time() - started >= 1.0:
                    gone_streak = 0
                    continue  # a clean end (timeoutSeconds): resume from the last version
                # A watch that ends at once with nothing in it: don't spin on it.
                log.debug("%s: watch ended immediately; backing off", self.name)
            except _Gone as exc:
                log.info("%s: watch expired (%s); relisting", self.name, exc)
                need_list, consistent = True, True
                gone_streak = gone_streak + 1 if not self._events else 1
                if gone_streak < 2:
                    continue
            except StatusError as exc:
                if exc.code == 410:
                    # An expired version on the watch, or an expired continue token in a list.
                    log.info("%s: %s; relisting", self.name, exc)
                    need_list, consistent = True, True
                    gone_streak += 1
                    if gone_streak < 2:
                        continue
                else:
                    self._note_error(str(exc))
                    need_list = True
            except (ApiConnectionError, _WatchBroken) as exc:
                self._note_error(str(exc))
                need_list = True
            except Exception:
                # A bug, not the API server's doing: say so loudly, keep the state we have and
                # start over with a relist rather than end the task (and with it, serving).
                log.exception("%s: unexpected error; relisting", self.name)
                need_list = True
            delay = self._rng.uniform(backoff / 2, backoff)
            backoff = min(backoff * 2, self._s.backoff_max)
            await self._sleep(delay)

    def _note_error(self, message: str) -> None:
        # One warning per outage, the rest at debug level: a down API server is one event.
        if self.last_error is None:
            log.warning("%s: %s (retrying with backoff; keeping current state)", self.name, message)
        else:
            log.debug("%s: still failing: %s", self.name, message)
        self.last_error = message
