"""kubemetrics: a drop-in replacement for the Kubernetes Metrics Server."""

from kubemetrics._native import (
    ParseError,
    ResourceMetrics,
    __version__,
    parse_resource_metrics,
)

__all__ = [
    "ParseError",
    "ResourceMetrics",
    "__version__",
    "parse_resource_metrics",
]
