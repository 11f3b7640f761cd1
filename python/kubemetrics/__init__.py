"""kubemetrics: a drop-in replacement for the Kubernetes Metrics Server."""

from kubemetrics._native import (
    Inventory,
    ParseError,
    SelectorError,
    Snapshot,
    Store,
    View,
    __version__,
)

__all__ = [
    "Inventory",
    "ParseError",
    "SelectorError",
    "Snapshot",
    "Store",
    "View",
    "__version__",
]
