"""Type stub for the Rust extension (rust/py): the whole native surface. What only tests and
benchmarks use is in `_testing`."""

from collections.abc import Sequence
from typing import Any, Final, final

import numpy as np
import numpy.typing as npt

from kubemetrics._native import _testing as _testing

__all__ = [
    "CHUNK_BYTES",
    "Body",
    "Inventory",
    "ListError",
    "ListSplitter",
    "ParseError",
    "Query",
    "SelectorError",
    "Snapshot",
    "Store",
    "View",
    "__version__",
    "_testing",
    "parse_field_selector",
    "parse_label_selector",
]

__version__: str

# ---- parser (rust/py/src/parse.rs; its own door is in `_testing`) ---------------

class ParseError(ValueError):
    """A kubelet payload that is not valid Prometheus text; `line N: what is wrong`."""

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
    def forget_node(self, node: str) -> None: ...
    def forget_pod(self, namespace: str, pod: str) -> None:
        """Drop the pod from every node that reported it."""
    def snapshot(self, now_ms: int) -> Snapshot:
        """Everything servable at `now_ms`: nodes (and their pods) whose last good scrape is
        at most 2 × resolution old and that have a valid pair of points."""
    def points(self) -> tuple[int, int]:
        """(nodes with a stored point, containers with a stored pair)."""
    def export_points(self, now_ms: int, failing: Sequence[str]) -> bytes:
        """This replica's own points (nodes it scraped, within the grace at `now_ms`: last and
        prev per node and container) and `failing` (nodes it failed to scrape), as one
        compressed body for its peers (`--sharding=lease`). GIL released."""
    def import_points(
        self, data: bytes, now_ms: int, max_decoded_bytes: int
    ) -> tuple[list[str], list[str]]:
        """Merge a peer's `export_points` body (newest sample wins; a node's previous point is
        kept so an adopter's first scrape yields a rate): `(nodes it has points for, nodes it
        failed)`. ValueError, and nothing merged, for a malformed body or one inflating past
        `max_decoded_bytes`. GIL released."""

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
    def view(self, inventory: Inventory) -> View:
        """The served view of this snapshot with `inventory`'s members and labels: built on
        first use (GIL released; the scrape cycle builds it in a worker thread before it
        publishes the snapshot), the same data afterwards. A member deleted from the
        inventory later stops being served at once; label changes show in the next view."""
    @property
    def ready(self) -> bool:
        """At least one node and one pod servable."""
    def node_index(self, name: str) -> int | None: ...
    def pod_index(self, namespace: str, name: str) -> int | None: ...

# ---- inventory (rust/py/src/inventory.rs) --------------------------------------

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
    def label_set_count(self) -> int:
        """Distinct label sets held (equal sets are shared)."""

# ---- list responses (rust/py/src/listsplit.rs) ---------------------------------

class ListError(ValueError):
    """A list response that is not a whole JSON list, or an item or envelope over its bound."""

@final
class ListSplitter:
    """Splits one JSON list response into its items' bytes as its chunks arrive."""

    def __new__(cls, max_item: int, max_envelope: int) -> ListSplitter: ...
    def feed(self, chunk: bytes) -> list[bytes]:
        """The items these bytes complete, in order; raises ListError."""
    def finish(self) -> bytes:
        """After the last chunk: every top-level pair but the items, as a JSON object."""

# ---- view, selectors, bodies (rust/py/src/view.rs) ------------------------------

class SelectorError(ValueError):
    """Malformed label/field selector or unsupported field; the message suits a 400 Status."""

def parse_label_selector(selector: str) -> list[tuple[str, str, list[str]]]:
    """Requirements as (key, operator, values), sorted by key; operators as Go's
    `selection.Operator` (`=`, `!=`, `in`, `notin`, `exists`, `!`, `gt`, `lt`).
    Raises SelectorError with the message kube-apiserver would answer."""

def parse_field_selector(selector: str) -> list[tuple[str, str, str]]:
    """Terms as (field, "=" or "!=", unescaped value) for any field names, sorted as
    `fields.ParseSelector` keeps them. Raises SelectorError when malformed."""

@final
class View:
    """What the API serves for one scrape cycle (`Snapshot.view`): the snapshot's items
    the inventory knew, their label index and every response fragment, built once."""

    def query(
        self,
        kind: str,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> Query:
        """A list of `kind` "nodes" | "pods" (`namespace`: a namespaced pod list); fields:
        metadata.name, metadata.namespace, spec.nodeName (pods). Raises SelectorError."""
    def get(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        api_version: str,
        fmt: str,
        now_s: float,
        table_version: str = "v1",
        gzip: bool = False,
    ) -> Body | None:
        """One object (`namespace` ignored for nodes), or None if this view does not serve
        it. Arguments as `Query.respond`."""
    def heap_bytes(self) -> int:
        """Bytes the view and its fragments hold (the snapshot's columns aside)."""

@final
class Query:
    """A parsed list request against one view."""

    @property
    def cost(self) -> int:
        """Candidates selecting it examines: small means answer inline."""
    def respond(
        self,
        *,
        api_version: str,
        fmt: str,
        now_s: float,
        table_version: str = "v1",
        gzip: bool = False,
    ) -> Body:
        """Select and plan the response (GIL released). `fmt`: "json" | "protobuf" |
        "table" (rows carry PartialObjectMetadata) | "table-object" (the whole item) |
        "table-none" (null); `api_version` "v1beta1" | "v1"; `table_version` the Table's
        meta.k8s.io version; creationTimestamp = floor(now_s); `gzip`: the client accepts
        gzip (used when the body is at least 128 KiB). ValueError on bad arguments."""
    def select(self) -> npt.NDArray[np.int64]:
        """The selected item indices into the snapshot's columns, sorted."""

CHUNK_BYTES: Final[int]
"""`Body.read` returns chunks of about this many bytes (one object may overshoot it)."""

@final
class Body:
    """A response body, handed out in bounded chunks (about `CHUNK_BYTES`)."""

    @property
    def length(self) -> int:
        """The exact size of the uncompressed body."""
    @property
    def items(self) -> int:
        """How many objects it holds."""
    @property
    def gzip(self) -> bool:
        """The chunks are gzip-compressed (answer with `Content-Encoding: gzip`)."""
    def timestamps_ms(self) -> npt.NDArray[np.int64]:
        """`timestamp_ms` of every object in the body."""
    def read(self, limit: int = ...) -> bytes:
        """The next chunk of about `limit` bytes (default `CHUNK_BYTES`; GIL released while
        producing it); b"" once complete."""
    def read_all(self) -> bytes:
        """Everything not read yet."""
