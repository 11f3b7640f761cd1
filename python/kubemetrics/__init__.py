"""kubemetrics: a drop-in replacement for the Kubernetes Metrics Server."""

from kubemetrics._native import (
    Inventory,
    ParseError,
    ResourceMetrics,
    SelectorError,
    Snapshot,
    Store,
    __version__,
    encode_nodes,
    encode_pods,
    parse_resource_metrics,
    select_nodes,
    select_pods,
)

__all__ = [
    "Inventory",
    "ParseError",
    "ResourceMetrics",
    "SelectorError",
    "Snapshot",
    "Store",
    "__version__",
    "encode_nodes",
    "encode_pods",
    "parse_resource_metrics",
    "select_nodes",
    "select_pods",
]
