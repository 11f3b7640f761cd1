"""Realistic kubelet `/metrics/resource` payloads for the parser benchmarks.

The shape follows a current kubelet (1.30+): families sorted by name, labels
sorted, HELP/TYPE per family, per-container sample timestamps, start times
without timestamps, swap and pod families, `resource_scrape_error`, and floats
written the way Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes them.
Deterministic for a given seed.
"""

from __future__ import annotations

import random
from decimal import Decimal

NAMESPACES = (
    "kube-system",
    "monitoring",
    "payments-prod",
    "checkout",
    "search-staging",
    "ingress-nginx",
    "default",
)
APPS = ("api", "web", "worker", "cache", "gateway", "indexer", "scheduler", "exporter")
SIDECARS = ("istio-proxy", "log-shipper", "config-reloader")
ALNUM = "bcdfghjklmnpqrstvwxz2456789"

HELP = {
    "container_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    ),
    "container_start_time_seconds": (
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    ),
    "container_swap_limit_bytes": (
        "gauge",
        "[ALPHA] Current amount of the container swap limit in bytes. "
        "Reported only on non-windows systems",
    ),
    "container_swap_usage_bytes": (
        "gauge",
        "[ALPHA] Current amount of the container swap usage in bytes. "
        "Reported only on non-windows systems",
    ),
    "node_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    ),
    "node_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the node in bytes"),
    "node_swap_usage_bytes": (
        "gauge",
        "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems",
    ),
    "pod_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    ),
    "pod_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the pod in bytes"),
    "pod_swap_usage_bytes": (
        "gauge",
        "[ALPHA] Current amount of the pod swap usage in bytes. "
        "Reported only on non-windows systems",
    ),
    "resource_scrape_error": (
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
}


def go_float(x: float) -> str:
    """`strconv.FormatFloat(x, 'g', -1, 64)`: shortest digits, %e for large/small exponents."""
    if x == 0:
        return "0"
    sign, digit_tuple, exp = Decimal(repr(x)).normalize().as_tuple()
    assert isinstance(exp, int)
    digits = "".join(map(str, digit_tuple))
    nd = len(digits)
    dp = nd + exp  # decimal point position
    e = dp - 1
    # Go decides with precision 6 when printing the shortest form.
    if e < -4 or e >= 6:
        mant = digits[0] + ("." + digits[1:] if nd > 1 else "")
        out = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    elif dp <= 0:
        out = "0." + "0" * -dp + digits
    elif dp >= nd:
        out = digits + "0" * (dp - nd)
    else:
        out = digits[:dp] + "." + digits[dp:]
    return ("-" if sign else "") + out


def kubelet_payload(pods: int, seed: int = 1) -> bytes:
    """One node's payload with `pods` pods (1-3 containers each, ~1.3 on average)."""
    rng = random.Random(seed)
    now_ms = 1_748_001_337_000
    containers: list[tuple[str, str, str, float, float, float, int]] = []
    pod_keys: list[tuple[str, str]] = []
    for _ in range(pods):
        ns = rng.choice(NAMESPACES)
        app = rng.choice(APPS)
        rs = "".join(rng.choice(ALNUM) for _ in range(10))
        pod = f"{app}-{rs}-{''.join(rng.choice(ALNUM) for _ in range(5))}"
        pod_keys.append((ns, pod))
        names = [app]
        if rng.random() < 0.3:
            names.append(rng.choice(SIDECARS))
        if rng.random() < 0.05:
            names.append("debug")
        for name in names:
            cpu = round(rng.uniform(0.01, 50_000), 9)
            mem = float(rng.randrange(4_000_000, 4_000_000_000, 4096))
            start = 1_747_900_000 + rng.random() * 100_000
            ts = now_ms - rng.randrange(0, 15_000)
            containers.append((ns, pod, name, cpu, mem, start, ts))
    containers.sort(key=lambda c: (c[2], c[0], c[1]))  # the kubelet sorts by label values
    pod_keys.sort()

    out: list[str] = []

    def family(name: str) -> None:
        kind, help_text = HELP[name]
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n")

    def clabels(c: tuple[str, str, str, float, float, float, int]) -> str:
        return f'{{container="{c[2]}",namespace="{c[0]}",pod="{c[1]}"}}'

    family("container_cpu_usage_seconds_total")
    out.extend(
        f"container_cpu_usage_seconds_total{clabels(c)} {go_float(c[3])} {c[6]}\n"
        for c in containers
    )
    family("container_memory_working_set_bytes")
    out.extend(
        f"container_memory_working_set_bytes{clabels(c)} {go_float(c[4])} {c[6]}\n"
        for c in containers
    )
    family("container_start_time_seconds")
    out.extend(f"container_start_time_seconds{clabels(c)} {go_float(c[5])}\n" for c in containers)
    family("container_swap_limit_bytes")
    out.extend(f"container_swap_limit_bytes{clabels(c)} 0 {c[6]}\n" for c in containers)
    family("container_swap_usage_bytes")
    out.extend(f"container_swap_usage_bytes{clabels(c)} 0 {c[6]}\n" for c in containers)
    family("node_cpu_usage_seconds_total")
    out.append(
        f"node_cpu_usage_seconds_total {go_float(sum(c[3] for c in containers) * 1.1)} {now_ms}\n"
    )
    family("node_memory_working_set_bytes")
    out.append(
        f"node_memory_working_set_bytes {go_float(sum(c[4] for c in containers) + 2e9)} {now_ms}\n"
    )
    family("node_swap_usage_bytes")
    out.append(f"node_swap_usage_bytes 0 {now_ms}\n")
    per_pod: dict[tuple[str, str], list[tuple[str, str, str, float, float, float, int]]] = {}
    for c in containers:
        per_pod.setdefault((c[0], c[1]), []).append(c)
    family("pod_cpu_usage_seconds_total")
    for ns, pod in pod_keys:
        cs = per_pod[(ns, pod)]
        out.append(
            f'pod_cpu_usage_seconds_total{{namespace="{ns}",pod="{pod}"}} '
            f"{go_float(sum(c[3] for c in cs))} {min(c[6] for c in cs)}\n"
        )
    family("pod_memory_working_set_bytes")
    for ns, pod in pod_keys:
        cs = per_pod[(ns, pod)]
        out.append(
            f'pod_memory_working_set_bytes{{namespace="{ns}",pod="{pod}"}} '
            f"{go_float(sum(c[4] for c in cs))} {min(c[6] for c in cs)}\n"
        )
    family("pod_swap_usage_bytes")
    for ns, pod in pod_keys:
        out.append(f'pod_swap_usage_bytes{{namespace="{ns}",pod="{pod}"}} 0 {now_ms}\n')
    family("resource_scrape_error")
    out.append("resource_scrape_error 0\n")
    return "".join(out).encode()


def lines_payload(lines: int, seed: int = 2) -> bytes:
    """Exactly `lines` lines of kubelet text (a big node's payload, cut at a line end)."""
    pods = lines // 8 + 10
    data = kubelet_payload(pods, seed)
    cut = data.split(b"\n")[:lines]
    assert len(cut) == lines, "generator produced too few lines"
    return b"\n".join(cut) + b"\n"
