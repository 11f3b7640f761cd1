"""Type stub for the Rust extension (rust/py): the whole native surface."""

from typing import Any, Final

import numpy.typing as npt

__version__: str

# ---- parser (rust/py/src/parse.rs) -------------------------------------------

class ParseError(ValueError):
    """A kubelet payload that is not valid Prometheus text; `line N: what is wrong`."""

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
