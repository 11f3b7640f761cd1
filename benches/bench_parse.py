"""Parser benchmarks (issue 2, item 6).

A realistic 110-pod kubelet payload (current format, ~130 KB; see kubelet_payload.py)
parsed by `parse_resource_metrics` and, in the same run, by prometheus_client's text
parser (the baseline: what a pure-Python server would use). Each of our benchmarks
records MB/s and its speedup over the baseline in `extra_info`. Also MB/s on a
10,000-line payload. Targets: ≥ 100x prometheus_client, ≥ 1 GB/s.

Names are stable for `make bench-save` / `make bench-compare`.
"""

from __future__ import annotations

import statistics
from functools import lru_cache
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benches.kubelet_payload import kubelet_payload, lines_payload
from kubemetrics._native._testing import parse_resource_metrics

PODS = 110
BASELINE = "test_parse_110_pods_prometheus_client"

_medians: dict[str, float] = {}


@lru_cache(maxsize=1)
def payload_110_pods() -> bytes:
    data = kubelet_payload(PODS)
    # Not a timing check: make sure the benchmark parses what it claims to.
    m = parse_resource_metrics(data)
    assert len(set(zip(m.containers["namespace"], m.containers["pod"], strict=True))) == PODS
    families = {f.name for f in text_string_to_metric_families(data.decode())}
    assert (
        "container_cpu_usage_seconds_total" in families or "container_cpu_usage_seconds" in families
    )
    return data


@lru_cache(maxsize=1)
def payload_10k_lines() -> bytes:
    data = lines_payload(10_000)
    assert data.count(b"\n") == 10_000
    parse_resource_metrics(data)
    return data


def _record(benchmark: Any, name: str, size: int, baseline: str | None = None) -> None:
    median = float(statistics.median(benchmark.stats.stats.data))
    _medians[name] = median
    mb_s = size / median / 1e6
    benchmark.extra_info["bytes"] = size
    benchmark.extra_info["median_us"] = round(median * 1e6, 1)
    benchmark.extra_info["mb_per_s"] = round(mb_s, 1)
    line = f"\n{name}: {median * 1e6:.1f} us, {mb_s:.1f} MB/s"
    if baseline and baseline in _medians:
        ratio = _medians[baseline] / median
        benchmark.extra_info[f"speedup_vs_{baseline}"] = round(ratio, 1)
        line += f", {ratio:.0f}x prometheus_client"
    print(line)


def test_parse_110_pods_prometheus_client(benchmark: Any) -> None:
    data = payload_110_pods()

    def python_parse() -> list[Any]:
        return list(text_string_to_metric_families(data.decode()))

    # ~20 ms a call: a fixed number of rounds keeps the suite short.
    benchmark.pedantic(python_parse, rounds=15, iterations=1, warmup_rounds=1)
    _record(benchmark, BASELINE, len(data))


def test_parse_110_pods(benchmark: Any) -> None:
    data = payload_110_pods()
    benchmark(parse_resource_metrics, data)
    _record(benchmark, "test_parse_110_pods", len(data), BASELINE)


def test_parse_110_pods_to_numpy(benchmark: Any) -> None:
    """Parse and build the numpy columns (what a Python caller sees)."""
    data = payload_110_pods()
    benchmark(lambda: parse_resource_metrics(data).containers)
    _record(benchmark, "test_parse_110_pods_to_numpy", len(data), BASELINE)


def test_parse_10k_lines(benchmark: Any) -> None:
    data = payload_10k_lines()
    benchmark(parse_resource_metrics, data)
    _record(benchmark, "test_parse_10k_lines", len(data))
