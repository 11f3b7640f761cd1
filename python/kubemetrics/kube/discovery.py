"""Node and pod discovery: two reflectors feeding the Inventory and the scraper's node table.

Discovery writes only what it owns (the Inventory and the node table). What went away it
*emits* in `Removed`; the scrape cycle (`kubemetrics.cycle`) takes it once per cycle and tells
the store, the scraper and the self-metrics to forget it.

Nodes are watched as full objects (addresses, kubelet port, the resource-metrics-path
annotation, labels) filtered by ``--node-selector``; pods as metadata only, Running ones
(``fieldSelector=status.phase=Running``), for their labels. Per pod the hot path does one
dict lookup chain and one Inventory call; nothing else is built per pod but its name in a set
(needed to reconcile a relist).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubemetrics.config import DEFAULT_ADDRESS_TYPES
from kubemetrics.kube.client import ApiClient
from kubemetrics.kube.reflector import Reflector, ReflectorSettings

log = logging.getLogger("kubemetrics.discovery")

DEFAULT_METRICS_PATH = "/metrics/resource"
METRICS_PATH_ANNOTATION = "metrics.k8s.io/resource-metrics-path"

POD_LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
POD_WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

_NO_LABELS: dict[str, str] = {}


class InventoryLike(Protocol):
    """The part of ``kubemetrics._native.Inventory`` discovery writes to."""

    def set_node(self, name: str, labels: dict[str, str]) -> None: ...
    def delete_node(self, name: str) -> None: ...
    def set_pod(self, namespace: str, name: str, labels: dict[str, str]) -> None: ...
    def delete_pod(self, namespace: str, name: str) -> None: ...


@dataclass
class Removed:
    """Nodes and pods (namespace, name) that left the cluster (or the selection)."""

    nodes: set[str] = field(default_factory=set)
    pods: set[tuple[str, str]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class NodeTarget:
    """Where to scrape one node; ``error`` set (and ``host`` empty) when it cannot be reached."""

    name: str
    host: str
    port: int
    path: str = DEFAULT_METRICS_PATH
    error: str | None = None

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class DiscoverySettings:
    address_types: tuple[str, ...] = DEFAULT_ADDRESS_TYPES
    kubelet_port: int = 10250
    use_node_status_port: bool = False
    node_selector: str = ""
    page_size: int | None = 500


def node_target(node: Mapping[str, Any], settings: DiscoverySettings) -> NodeTarget:
    """The scrape target of a Node object per SPEC §2 (address preference, port, path)."""
    meta = node.get("metadata") or {}
    name = str(meta.get("name", ""))
    status = node.get("status") or {}
    addresses = status.get("addresses") or []
    port = settings.kubelet_port
    if settings.use_node_status_port:
        endpoint = (status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
        status_port = endpoint.get("Port")
        if isinstance(status_port, int) and 0 < status_port < 65536:
            port = status_port
    path = ((meta.get("annotations") or {}).get(METRICS_PATH_ANNOTATION) or "").strip()
    if not path:
        path = DEFAULT_METRICS_PATH
    elif not path.startswith("/"):
        path = "/" + path
    for wanted in settings.address_types:
        for addr in addresses:
            if isinstance(addr, dict) and addr.get("type") == wanted and addr.get("address"):
                return NodeTarget(name, str(addr["address"]), port, path)
    types = " ".join(settings.address_types)
    return NodeTarget(name, "", port, path, error=f"no address matched types [{types}]")


class _NodeHandler:
    def __init__(self, d: Discovery) -> None:
        self._d = d
        self._seen: set[str] = set()

    def begin_list(self) -> None:
        self._seen = set()

    def list_page(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            name = self._set(item)
            if name:
                self._seen.add(name)

    def end_list(self) -> None:
        for name in [n for n in self._d.targets if n not in self._seen]:
            self._delete(name)
        self._seen = set()

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            name = (obj.get("metadata") or {}).get("name")
            if isinstance(name, str) and name in self._d.targets:
                self._delete(name)
        else:
            self._set(obj)

    def _set(self, obj: dict[str, Any]) -> str | None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            return None
        # Everything that can fail on a malformed object comes before any change, so a node
        # the reflector skips leaves the table and the inventory as they were.
        target = node_target(obj, self._d.settings)
        self._d.inventory.set_node(name, meta.get("labels") or _NO_LABELS)
        old = self._d.targets.get(name)
        if target != old:
            if target.error and (old is None or old.error != target.error):
                log.warning("Node %s cannot be scraped: %s", name, target.error)
            self._d.targets[name] = target
        return name

    def _delete(self, name: str) -> None:
        self._d.targets.pop(name, None)
        self._d.inventory.delete_node(name)
        self._d.removed.nodes.add(name)
        log.debug("Node %s removed", name)


class _PodHandler:
    def __init__(self, d: Discovery) -> None:
        self._d = d
        # namespace -> names known to be Running: what a relist reconciles against.
        self.pods: dict[str, set[str]] = {}
        self._seen: dict[str, set[str]] = {}

    def begin_list(self) -> None:
        self._seen = {}

    def list_page(self, items: list[dict[str, Any]]) -> None:
        set_pod = self._d.inventory.set_pod
        seen = self._seen
        for item in items:
            try:
                meta = item["metadata"]
                ns = meta["namespace"]
                name = meta["name"]
            except (KeyError, TypeError):
                continue
            set_pod(ns, name, meta.get("labels") or _NO_LABELS)
            names = seen.get(ns)
            if names is None:
                names = seen[ns] = set()
            names.add(name)

    def end_list(self) -> None:
        seen = self._seen
        delete_pod = self._d.inventory.delete_pod
        removed = self._d.removed.pods
        for ns, names in self.pods.items():
            gone = names - seen[ns] if ns in seen else names
            for name in gone:
                delete_pod(ns, name)
                removed.add((ns, name))
        self.pods = seen
        self._seen = {}

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        try:
            meta = obj["metadata"]
            ns = meta["namespace"]
            name = meta["name"]
        except (KeyError, TypeError):
            return
        if event_type == "DELETED":
            names = self.pods.get(ns)
            if names is not None:
                names.discard(name)
                if not names:
                    del self.pods[ns]
            self._d.inventory.delete_pod(ns, name)
            self._d.removed.pods.add((ns, name))
        else:
            self._d.inventory.set_pod(ns, name, meta.get("labels") or _NO_LABELS)
            names = self.pods.get(ns)
            if names is None:
                names = self.pods[ns] = set()
            names.add(name)


class Discovery:
    """Runs the node and pod reflectors; ``targets`` is the live node table for the scraper,
    ``removed`` what went away since the cycle last called :meth:`take_removed`."""

    def __init__(
        self,
        client: ApiClient,
        inventory: InventoryLike,
        settings: DiscoverySettings,
    ) -> None:
        self.inventory = inventory
        self.settings = settings
        self.targets: dict[str, NodeTarget] = {}
        self.removed = Removed()
        self.pod_handler = _PodHandler(self)
        self.node_handler = _NodeHandler(self)
        self.node_reflector = Reflector(
            client,
            ReflectorSettings(
                path="/api/v1/nodes",
                name="nodes",
                label_selector=settings.node_selector,
                page_size=settings.page_size,
            ),
            self.node_handler,
        )
        self.pod_reflector = Reflector(
            client,
            ReflectorSettings(
                path="/api/v1/pods",
                name="pods",
                field_selector="status.phase=Running",
                list_accept=POD_LIST_ACCEPT,
                watch_accept=POD_WATCH_ACCEPT,
                page_size=settings.page_size,
            ),
            self.pod_handler,
        )

    def take_removed(self) -> Removed:
        """What went away since the last call and has not come back since (a pod deleted and
        recreated under the same name keeps its fresh samples); starts a new list."""
        out, self.removed = self.removed, Removed()
        out.nodes.difference_update(self.targets)
        pods = self.pod_handler.pods
        out.pods = {(ns, name) for ns, name in out.pods if name not in pods.get(ns, ())}
        return out

    @property
    def has_synced(self) -> bool:
        return self.node_reflector.has_synced and self.pod_reflector.has_synced

    @property
    def pod_count(self) -> int:
        return sum(len(names) for names in self.pod_handler.pods.values())

    async def wait_synced(self) -> None:
        await self.node_reflector.wait_synced()
        await self.pod_reflector.wait_synced()

    async def run(self) -> None:
        """Run both reflectors until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.node_reflector.run(), name="reflector-nodes")
            tg.create_task(self.pod_reflector.run(), name="reflector-pods")
