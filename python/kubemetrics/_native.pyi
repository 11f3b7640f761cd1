"""Type stub for the Rust extension (rust/py): the whole native surface."""

from collections.abc import Sequence
from typing import Any, Final, final

import numpy as np
import numpy.typing as npt

__all__ = [
    "PARSE_MAX_LINE_BYTES",
    "Inventory",
    "ParseError",
    "ResourceMetrics",
    "SelectorError",
    "Snapshot",
    "Store",
    "__version__",
    "encode_nodes",
    "encode_pods",
    "format_cpu",
    "format_duration",
    "format_memory",
    "parse_resource_metrics",
    "select_nodes",
    "select_pods",
    "warm_cache",
]

__version__: str

# ---- parser (rust/py/src/parse.rs) -------------------------------------------

class ParseError(ValueError):
    """A kubelet payload that is not valid Prometheus text; `line N: what is wrong`."""

@final
class ResourceMetrics:
    """One parsed `/metrics/resource` payload."""

    @property
    def node(self) -> dict[str, float | int]:
        """`cpu_seconds`, `memory_bytes` (float, NaN if absent); `timestamp_ms` (int, 0 if none)."""
    @property
    def containers(self) -> dict[str, npt.NDArray[Any]]:
        """Equal-length columns: `namespace`, `pod`, `container` (object arrays of str),
        `cpu_seconds`, `memory_bytes`, `start_time_seconds` (float64, NaN where absent),
        `timestamp_ms` (int64: the container's CPU sample time, 0 where absent)."""
    def __len__(self) -> int: ...

def parse_resource_metrics(data: bytes) -> ResourceMetrics:
    """Parse kubelet Prometheus text (GIL released); raises ParseError."""

PARSE_MAX_LINE_BYTES: Final[int]

# ---- store (rust/py/src/store.rs) --------------------------------------------

@final
class Store:
    """Last/prev points of every node and container; rates per SPEC §3.

    Thread-safe: every method releases the GIL and serialises on an internal lock."""

    def __new__(cls, resolution_seconds: float) -> Store:
        """`resolution_seconds` is `--metric-resolution` (ValueError unless ≥ 0.001)."""
    @property
    def resolution_seconds(self) -> float: ...
    def ingest(self, node: str, data: bytes, request_time_ms: int) -> None:
        """Parse one node's `/metrics/resource` body and store it (GIL released).
        `request_time_ms` (Unix ms, taken just before the request) stamps samples without
        a timestamp and restarts the node's grace clock. Raises ParseError and leaves the
        node's data untouched on malformed input."""
    def ingest_parsed(self, node: str, metrics: ResourceMetrics, request_time_ms: int) -> None:
        """`ingest` for a payload already parsed by `parse_resource_metrics`."""
    def forget_node(self, node: str) -> None: ...
    def forget_pod(self, namespace: str, pod: str) -> None:
        """Drop the pod from every node that reported it."""
    def snapshot(self, now_ms: int) -> Snapshot:
        """Everything servable at `now_ms`: nodes (and their pods) whose last good scrape is
        at most 2 × resolution old and that have a valid pair of points."""
    def points(self) -> tuple[int, int]:
        """(nodes with a stored point, containers with a stored pair)."""

@final
class Snapshot:
    """One immutable, sorted view of every servable node and pod (shared with the encoders).

    Each column property builds fresh numpy arrays: keep the dict if you read it often."""

    @property
    def nodes(self) -> dict[str, npt.NDArray[Any]]:
        """Sorted by name: `name` (object, str), `cpu_nanocores`, `memory_bytes` (uint64),
        `timestamp_ms`, `window_ms` (int64)."""
    @property
    def pods(self) -> dict[str, npt.NDArray[Any]]:
        """Sorted by (namespace, name): `namespace`, `name`, `node` (object, str),
        `timestamp_ms`, `window_ms` (int64; of the container with the earliest sample),
        `container_start` (uint32, length pods + 1)."""
    @property
    def containers(self) -> dict[str, npt.NDArray[Any]]:
        """Pod i owns rows `container_start[i]:container_start[i+1]`, sorted by name:
        `name` (object, str), `cpu_nanocores`, `memory_bytes` (uint64)."""
    def timestamps_ms(self, kind: str) -> npt.NDArray[np.int64]:
        """The `timestamp_ms` column of `"nodes"` or `"pods"` alone (no name columns built)."""
    @property
    def ready(self) -> bool:
        """At least one node and one pod servable."""
    def node_index(self, name: str) -> int | None: ...
    def pod_index(self, namespace: str, name: str) -> int | None: ...

# ---- inventory, selectors, encoders (rust/py/src/inventory.rs, encode.rs) -----

@final
class Inventory:
    """Names and labels of the selected nodes and Running pods (what discovery knows).

    Labels are pre-encoded when set; the encoders splice them into responses."""

    def __init__(self) -> None: ...
    def set_node(self, name: str, labels: dict[str, str] | None = None) -> None: ...
    def delete_node(self, name: str) -> None: ...
    def set_pod(self, namespace: str, name: str, labels: dict[str, str] | None = None) -> None: ...
    def delete_pod(self, namespace: str, name: str) -> None: ...
    def has_node(self, name: str) -> bool: ...
    def has_pod(self, namespace: str, name: str) -> bool: ...
    def node_labels(self, name: str) -> dict[str, str] | None: ...
    def pod_labels(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def clear(self) -> None: ...
    def clear_nodes(self) -> None: ...
    def clear_pods(self) -> None: ...
    def node_count(self) -> int: ...
    def pod_count(self) -> int: ...

class SelectorError(ValueError):
    """Malformed label/field selector or unsupported field; the message suits a 400 Status."""

def select_nodes(
    snapshot: Snapshot,
    inventory: Inventory,
    label_selector: str = "",
    field_selector: str = "",
) -> npt.NDArray[np.int64]:
    """Indices into `snapshot.nodes` of nodes in both inventory and snapshot matching the
    selectors (fields: metadata.name, metadata.namespace), sorted by name. GIL released."""

def select_pods(
    snapshot: Snapshot,
    inventory: Inventory,
    namespace: str | None = None,
    label_selector: str = "",
    field_selector: str = "",
) -> npt.NDArray[np.int64]:
    """Indices into `snapshot.pods` of pods in both inventory and snapshot, in `namespace`
    (all if None), matching the selectors (fields: metadata.name, metadata.namespace,
    spec.nodeName), sorted by (namespace, name). GIL released."""

def encode_nodes(
    snapshot: Snapshot,
    inventory: Inventory,
    indices: npt.NDArray[np.int64] | Sequence[int],
    *,
    api_version: str,
    fmt: str,
    single: bool,
    now_s: float,
) -> bytes:
    """NodeMetricsList (NodeMetrics if `single`) in `fmt` "json" | "protobuf" | "table" for
    `api_version` "v1beta1" | "v1"; creationTimestamp = floor(now_s). GIL released.
    "table-object" / "table-none": a Table whose rows carry the whole item / a null object
    (`includeObject=Object` / `None`; "table" carries PartialObjectMetadata).
    ValueError on bad arguments or out-of-range indices."""

def encode_pods(
    snapshot: Snapshot,
    inventory: Inventory,
    indices: npt.NDArray[np.int64] | Sequence[int],
    *,
    api_version: str,
    fmt: str,
    single: bool,
    now_s: float,
) -> bytes:
    """PodMetricsList (PodMetrics if `single`); see `encode_nodes`."""

def warm_cache(snapshot: Snapshot, fmt: str = "protobuf") -> None:
    """Build the snapshot's cached fragments for `fmt` now (GIL released), e.g. in a worker
    thread after each scrape, so the first full list is as fast as later ones."""

def format_cpu(nanocores: int) -> str:
    """Canonical DecimalSI quantity of a CPU rate in nanocores: `123456789n`, `20u`, `500m`, `1`."""

def format_memory(bytes: int) -> str:
    """Canonical BinarySI quantity of a byte count: `12240Ki`, `3Mi`, `1234567`, `1k`, `512`."""

def format_duration(ms: int) -> str:
    """Go `time.Duration` string of milliseconds: `15.012s`, `1m0.5s`, `10s`, `1.5ms`."""
