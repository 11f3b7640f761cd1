"""The one writer of kubelet `/metrics/resource` text, as a current kubelet (1.30+) writes it.

The simulated kubelets render their samples with it, and the tests and benches build their
payloads with it. Families come sorted by name, each under the kubelet's own HELP/TYPE lines;
series come in the order given (the kubelet sorts them by label values: container, namespace,
pod); numbers are written as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes them. A value
of None leaves its line out (a partial payload); a `str` value is written as it is (`NaN`, or
an exact text a test needs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .gofmt import go_float, go_int

Value = float | int | str


class NodeSample(NamedTuple):
    cpu_seconds: Value | None  # cumulative core-seconds
    memory_bytes: Value | None  # working set
    timestamp_ms: int | None = None


class ContainerSample(NamedTuple):
    namespace: str
    pod: str
    container: str
    cpu_seconds: Value | None
    memory_bytes: Value | None
    start_seconds: Value | None = None  # written without a timestamp, as the kubelet does
    timestamp_ms: int | None = None


class PodSample(NamedTuple):
    namespace: str
    pod: str
    cpu_seconds: Value | None
    memory_bytes: Value | None
    timestamp_ms: int | None = None


def _family(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


_ON_LINUX = "Reported only on non-windows systems"
HEADERS = {
    "container_cpu_usage_seconds_total": _family(
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": _family(
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    ),
    "container_start_time_seconds": _family(
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    ),
    "container_swap_limit_bytes": _family(
        "container_swap_limit_bytes",
        "gauge",
        f"[ALPHA] Current amount of the container swap limit in bytes. {_ON_LINUX}",
    ),
    "container_swap_usage_bytes": _family(
        "container_swap_usage_bytes",
        "gauge",
        f"[ALPHA] Current amount of the container swap usage in bytes. {_ON_LINUX}",
    ),
    "node_cpu_usage_seconds_total": _family(
        "node_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    ),
    "node_memory_working_set_bytes": _family(
        "node_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the node in bytes",
    ),
    "node_swap_usage_bytes": _family(
        "node_swap_usage_bytes",
        "gauge",
        f"[ALPHA] Current swap usage of the node in bytes. {_ON_LINUX}",
    ),
    "pod_cpu_usage_seconds_total": _family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    ),
    "pod_memory_working_set_bytes": _family(
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
    ),
    "pod_swap_usage_bytes": _family(
        "pod_swap_usage_bytes",
        "gauge",
        f"[ALPHA] Current amount of the pod swap usage in bytes. {_ON_LINUX}",
    ),
    "resource_scrape_error": _family(
        "resource_scrape_error",
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
}


def number(v: Value) -> str:
    """A sample value as the kubelet writes it."""
    if isinstance(v, str):
        return v
    if isinstance(v, int) and v >= 0:
        return go_int(v)
    return go_float(float(v))


def _stamp(ts: int | None) -> str:
    return "\n" if ts is None else f" {ts}\n"


def kubelet_text(
    node: NodeSample | None,
    containers: Iterable[ContainerSample] = (),
    *,
    pods: Iterable[PodSample] | None = None,
    swap: bool = False,
    scrape_error: bool | None = None,
    comments: bool = True,
) -> bytes:
    """One node's payload. `pods` adds the pod_* families; `swap` the swap families (zero, as
    a kubelet without swap reports them); `scrape_error` the resource_scrape_error gauge;
    `comments=False` leaves out every HELP/TYPE line."""
    # (labels, sample, " timestamp\n"), formatted once per series
    cs = [
        (f'{{container="{c[2]}",namespace="{c[0]}",pod="{c[1]}"}}', c, _stamp(c[6]))
        for c in containers
    ]
    ps = [(f'{{namespace="{p[0]}",pod="{p[1]}"}}', p, _stamp(p[4])) for p in pods or ()]
    out: list[str] = []

    def family(name: str, lines: Iterable[str]) -> None:
        body = list(lines)
        if body:
            if comments:
                out.append(HEADERS[name])
            out.extend(body)

    for name, i in (
        ("container_cpu_usage_seconds_total", 3),
        ("container_memory_working_set_bytes", 4),
    ):
        family(
            name, (f"{name}{lab} {number(v)}{ts}" for lab, c, ts in cs if (v := c[i]) is not None)
        )
    family(
        "container_start_time_seconds",
        (
            f"container_start_time_seconds{lab} {number(c[5])}\n"
            for lab, c, _ in cs
            if c[5] is not None
        ),
    )
    if swap:
        for name in ("container_swap_limit_bytes", "container_swap_usage_bytes"):
            family(name, (f"{name}{lab} 0{ts}" for lab, _, ts in cs))
    if node is not None:
        stamp = _stamp(node.timestamp_ms)
        for name, value in (
            ("node_cpu_usage_seconds_total", node.cpu_seconds),
            ("node_memory_working_set_bytes", node.memory_bytes),
            ("node_swap_usage_bytes", 0 if swap else None),
        ):
            if value is not None:
                family(name, [f"{name} {number(value)}{stamp}"])
    for name, i in (("pod_cpu_usage_seconds_total", 2), ("pod_memory_working_set_bytes", 3)):
        family(
            name, (f"{name}{lab} {number(v)}{ts}" for lab, p, ts in ps if (v := p[i]) is not None)
        )
    if swap:
        family("pod_swap_usage_bytes", (f"pod_swap_usage_bytes{lab} 0{ts}" for lab, _, ts in ps))
    if scrape_error is not None:
        family("resource_scrape_error", [f"resource_scrape_error {int(scrape_error)}\n"])
    return "".join(out).encode()


def pod_sums(containers: Iterable[ContainerSample]) -> list[PodSample]:
    """Per-pod sums of the containers' values, stamped with their earliest timestamp, sorted
    by (namespace, pod): the pod_* families a kubelet writes beside its containers."""
    pods: dict[tuple[str, str], list[ContainerSample]] = {}
    for c in containers:
        pods.setdefault((c.namespace, c.pod), []).append(c)
    out = []
    for (ns, pod), cs in sorted(pods.items()):
        stamps = [c.timestamp_ms for c in cs if c.timestamp_ms is not None]
        out.append(
            PodSample(
                ns,
                pod,
                sum(float(c.cpu_seconds or 0) for c in cs),
                sum(float(c.memory_bytes or 0) for c in cs),
                min(stamps) if stamps else None,
            )
        )
    return out
