"""The object store: one resourceVersion sequence, a bounded event history, and watchers.

Like etcd behind kube-apiserver, every change takes the next resourceVersion. The history keeps
the last ``window`` events; a watch asking to resume from before that window gets 410 Gone.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

import orjson

from .selectors import Requirement, fields_match, labels_match

FIELDS: dict[str, tuple[str, ...]] = {
    "pods": ("metadata.name", "metadata.namespace", "spec.nodeName", "status.phase"),
    "nodes": ("metadata.name",),
    "configmaps": ("metadata.name", "metadata.namespace"),
    "namespaces": ("metadata.name", "status.phase"),
    "leases": ("metadata.name", "metadata.namespace"),
    "endpointslices": ("metadata.name", "metadata.namespace"),
}


class KObj(Protocol):
    resource: str
    namespace: str
    name: str
    rv: int
    labels: dict[str, str]

    @property
    def key(self) -> tuple[str, str]: ...

    def field(self, name: str) -> str | None: ...

    def to_dict(self) -> dict[str, Any]: ...

    def metadata(self) -> dict[str, Any]: ...


class DictObj:
    """A stored object that is just JSON (ConfigMaps, Namespaces, Leases, EndpointSlices)."""

    def __init__(
        self,
        resource: str,
        kind: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        created: str,
        uid: str,
        labels: dict[str, str] | None = None,
        *,
        api_version: str = "v1",
        annotations: dict[str, str] | None = None,
    ) -> None:
        self.resource = resource
        self.kind = kind
        self.api_version = api_version
        self.namespace = namespace
        self.name = name
        self.body = body
        self.labels = labels or {}
        self.annotations = annotations or {}
        self.rv = 0
        self.created = created
        self.uid = uid

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def field(self, name: str) -> str | None:
        if name == "metadata.name":
            return self.name
        if name == "metadata.namespace":
            return self.namespace
        if name == "status.phase":
            return str(self.body.get("status", {}).get("phase", ""))
        return None

    def metadata(self) -> dict[str, Any]:
        m: dict[str, Any] = {"name": self.name}
        if self.namespace:
            m["namespace"] = self.namespace
        m.update(uid=self.uid, resourceVersion=str(self.rv), creationTimestamp=self.created)
        if self.labels:
            m["labels"] = self.labels
        if self.annotations:
            m["annotations"] = self.annotations
        return m

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "apiVersion": self.api_version,
            "metadata": self.metadata(),
            **self.body,
        }


class Event:
    __slots__ = (
        "enc",
        "fields",
        "labels",
        "name",
        "namespace",
        "obj",
        "old",
        "resource",
        "rv",
        "type",
    )

    def __init__(
        self,
        rv: int,
        type_: str,
        o: KObj,
        old: tuple[dict[str, str], dict[str, str | None]] | None,
    ) -> None:
        self.rv = rv
        self.type = type_
        self.resource = o.resource
        self.namespace = o.namespace
        self.name = o.name
        self.obj = o.to_dict()  # the state at this resourceVersion
        self.labels = o.labels
        self.fields = {f: o.field(f) for f in FIELDS[o.resource]}
        self.old = old
        self.enc: dict[str, bytes] = {}


class Watcher:
    def __init__(
        self,
        resource: str,
        namespace: str | None,
        lsel: list[Requirement],
        fsel: list[tuple[str, str, str]],
        max_queue: int,
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.lsel = lsel
        self.fsel = fsel
        self.queue: asyncio.Queue[tuple[str, Event]] = asyncio.Queue()
        self.overflow = False
        self.max_queue = max_queue

    def _match(self, labels: dict[str, str], fields: dict[str, str | None]) -> bool:
        return labels_match(self.lsel, labels) and fields_match(self.fsel, fields.get)

    def translate(self, ev: Event) -> str | None:
        """The event type this watcher sees: objects entering or leaving a selector are
        ADDED/DELETED for it, as kube-apiserver does."""
        if ev.resource != self.resource:
            return None
        if self.namespace is not None and ev.namespace != self.namespace:
            return None
        new = self._match(ev.labels, ev.fields)
        if ev.old is None:
            return ev.type if new else None
        old = self._match(*ev.old)
        if new and old:
            return "MODIFIED"
        if new:
            return "ADDED"
        if old:
            return "DELETED"
        return None

    def offer(self, ev: Event) -> None:
        t = self.translate(ev)
        if t is None or self.overflow:
            return
        if self.queue.qsize() >= self.max_queue:
            # A consumer this far behind is cut off; it resumes from its last resourceVersion.
            self.overflow = True
            return
        self.queue.put_nowait((t, ev))


class Store:
    def __init__(self, window: int = 10_000, max_watch_queue: int = 200_000) -> None:
        self.rv = 1
        self.window = window
        self.history: deque[Event] = deque()
        self.floor = 1  # events with rv <= floor are gone from the history
        self.objects: dict[str, dict[tuple[str, str], KObj]] = {r: {} for r in FIELDS}
        self._sorted: dict[str, list[tuple[str, str]] | None] = {r: None for r in FIELDS}
        self.watchers: set[Watcher] = set()
        self.max_watch_queue = max_watch_queue
        self.events_total = 0

    # --- writes ---------------------------------------------------------------------------
    def _record(self, type_: str, o: KObj, old: Any = None) -> None:
        self.rv += 1
        o.rv = self.rv
        ev = Event(self.rv, type_, o, old)
        self.events_total += 1
        if len(self.history) >= self.window:
            self.floor = self.history.popleft().rv
        self.history.append(ev)
        for w in self.watchers:
            w.offer(ev)

    def forget_history(self) -> int:
        """Forget every past event (a new watch cache): a watch resuming from before now gets
        410. Returns the new floor."""
        self.history.clear()
        self.rv += 1
        self.floor = self.rv
        return self.floor

    def add(self, o: KObj) -> None:
        self.objects[o.resource][o.key] = o
        self._sorted[o.resource] = None
        self._record("ADDED", o)

    def snapshot_old(self, o: KObj) -> tuple[dict[str, str], dict[str, str | None]]:
        return (dict(o.labels), {f: o.field(f) for f in FIELDS[o.resource]})

    def modified(self, o: KObj, old: tuple[dict[str, str], dict[str, str | None]]) -> None:
        """Record a change; ``old`` is snapshot_old(o) taken before the change."""
        self._record("MODIFIED", o, old)

    def delete(self, o: KObj) -> None:
        if self.objects[o.resource].pop(o.key, None) is None:
            return
        self._sorted[o.resource] = None
        self._record("DELETED", o)

    # --- reads ----------------------------------------------------------------------------
    def get(self, resource: str, namespace: str, name: str) -> KObj | None:
        return self.objects[resource].get((namespace, name))

    def sorted_keys(self, resource: str) -> list[tuple[str, str]]:
        keys = self._sorted[resource]
        if keys is None:
            keys = sorted(self.objects[resource])
            self._sorted[resource] = keys
        return keys

    def select(
        self,
        resource: str,
        namespace: str | None,
        lsel: list[Requirement],
        fsel: list[tuple[str, str, str]],
        start_after: tuple[str, str] | None = None,
    ) -> Iterator[KObj]:
        objs = self.objects[resource]
        keys = self.sorted_keys(resource)
        i = 0
        if namespace is not None:
            i = bisect.bisect_left(keys, (namespace, ""))
        if start_after is not None:
            i = max(i, bisect.bisect_right(keys, start_after))
        for k in keys[i:]:
            if namespace is not None and k[0] != namespace:
                break
            o = objs.get(k)
            if o is None:
                continue
            if lsel and not labels_match(lsel, o.labels):
                continue
            if fsel and not fields_match(fsel, o.field):
                continue
            yield o

    def events_since(self, rv: int) -> Iterator[Event]:
        # History is ordered by rv; binary search for the resume point.
        h = self.history
        lo, hi = 0, len(h)
        while lo < hi:
            mid = (lo + hi) // 2
            if h[mid].rv <= rv:
                lo = mid + 1
            else:
                hi = mid
        for i in range(lo, len(h)):
            yield h[i]


def encode_continue(rv: int, key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"rv": rv, "start": list(key)})).decode()


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        d = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return int(d["rv"]), (str(d["start"][0]), str(d["start"][1]))
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ValueError(f"invalid continue token: {e}") from e
