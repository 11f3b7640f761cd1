"""kubemetrics: a drop-in replacement for the Kubernetes Metrics Server."""

from kubemetrics._native import __version__

__all__ = ["__version__"]
