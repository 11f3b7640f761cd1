"""An independent reference for the kubelet-text parser: SPEC §1's decoding rules applied to
prometheus_client's samples (shared by the parser's example and property tests)."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from kubemetrics._native._testing import ResourceMetrics

CONTAINER_COLUMNS = (
    "namespace",
    "pod",
    "container",
    "cpu_seconds",
    "memory_bytes",
    "start_time_seconds",
    "timestamp_ms",
)
NAN = float("nan")


def usable(v: float) -> float:
    return v + 0.0 if math.isfinite(v) and v >= 0 else NAN


def reference_decode(text: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """SPEC §1's decoding rules, applied to prometheus_client's samples.

    Returns (node dict, container rows in first-seen order), rows being tuples in
    CONTAINER_COLUMNS order. Written independently of the Rust decoder.
    """
    node: dict[str, Any] = {"cpu_seconds": NAN, "memory_bytes": NAN, "timestamp_ms": 0}
    rows: dict[tuple[str, str, str], list[Any]] = {}
    column = {
        "container_cpu_usage_seconds_total": 3,
        "container_memory_working_set_bytes": 4,
        "container_start_time_seconds": 5,
    }
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            ts = 0 if s.timestamp is None else round(float(s.timestamp) * 1000)
            if s.name == "node_cpu_usage_seconds_total":
                node["cpu_seconds"] = usable(float(s.value))
                node["timestamp_ms"] = ts
            elif s.name == "node_memory_working_set_bytes":
                node["memory_bytes"] = usable(float(s.value))
            elif s.name in column:
                key = (
                    s.labels.get("namespace", ""),
                    s.labels.get("pod", ""),
                    s.labels.get("container", ""),
                )
                if not all(key):
                    continue
                row = rows.setdefault(key, [*key, NAN, NAN, NAN, 0])
                row[column[s.name]] = usable(float(s.value))
                if s.name == "container_cpu_usage_seconds_total":
                    row[6] = ts
    return node, [tuple(r) for r in rows.values()]


def rows_of(m: ResourceMetrics) -> list[tuple[Any, ...]]:
    c = m.containers
    return list(zip(*(c[k].tolist() for k in CONTAINER_COLUMNS), strict=True))


def same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (and -0.0 is told apart from 0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b) and type(a) is type(b)
