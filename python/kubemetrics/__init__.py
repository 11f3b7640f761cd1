"""kubemetrics: a drop-in replacement for the Kubernetes Metrics Server."""

from kubemetrics._native import (
    ParseError,
    ResourceMetrics,
    Snapshot,
    Store,
    __version__,
    parse_resource_metrics,
)

__all__ = [
    "ParseError",
    "ResourceMetrics",
    "Snapshot",
    "Store",
    "__version__",
    "parse_resource_metrics",
]
