"""`kubemetrics._native._testing`: what only tests and benchmarks call (rust/py/src/testing.rs)."""

from typing import Any, Final, final

import numpy as np
import numpy.typing as npt

from kubemetrics._native import Store, View

__all__ = [
    "PARSE_MAX_LINE_BYTES",
    "ResourceMetrics",
    "format_cpu",
    "format_duration",
    "format_memory",
    "gzip_compress",
    "ingest_parsed",
    "parse_resource_metrics",
    "select_scan",
]

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

def ingest_parsed(store: Store, node: str, metrics: ResourceMetrics, request_time_ms: int) -> None:
    """`Store.ingest` for a payload already parsed by `parse_resource_metrics`."""

def select_scan(
    view: View,
    kind: str,
    namespace: str | None = None,
    label_selector: str = "",
    field_selector: str = "",
) -> npt.NDArray[np.int64]:
    """What `view.query(...).select()` returns, found by testing every item in turn (no
    index): the oracle of the selection property tests."""

def gzip_compress(data: bytes, level: int) -> bytes:
    """`data` gzip-compressed at `level` (0-9) by the encoder responses use (benchmarks)."""

def format_cpu(nanocores: int) -> str:
    """Canonical DecimalSI quantity of a CPU rate in nanocores: `123456789n`, `20u`, `500m`, `1`."""

def format_memory(bytes: int) -> str:
    """Canonical BinarySI quantity of a byte count: `12240Ki`, `3Mi`, `1234567`, `1k`, `512`."""

def format_duration(ms: int) -> str:
    """Go `time.Duration` string of milliseconds: `15.012s`, `1m0.5s`, `10s`, `1.5ms`."""
