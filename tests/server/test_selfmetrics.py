"""/metrics exposition: parsed back with prometheus_client's parser and checked against truth."""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from kubemetrics.selfmetrics import (
    DEFAULT_BUCKETS,
    FRESHNESS_BUCKETS,
    Histogram,
    SelfMetrics,
    format_float,
    scrape_duration_buckets,
)


def parse(m: SelfMetrics) -> dict[str, list[Sample]]:
    text = m.render().decode()
    assert text.endswith("\n")
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def types(m: SelfMetrics) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(m.render().decode())}


def buckets(samples: list[Sample], **labels: str) -> list[tuple[str, float]]:
    return [
        (s.labels["le"], s.value)
        for s in samples
        if s.name.endswith("_bucket") and all(s.labels.get(k) == v for k, v in labels.items())
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_upstream_bucket_boundaries() -> None:
    assert DEFAULT_BUCKETS == (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
    assert len(FRESHNESS_BUCKETS) == 20
    assert FRESHNESS_BUCKETS[0] == 1.0
    assert FRESHNESS_BUCKETS[19] == pytest.approx(1.364**19)
    # metrics-server's BucketsForScrapeDuration
    assert scrape_duration_buckets(15) == (*DEFAULT_BUCKETS, 12.5, 15, 22.5, 30)
    assert scrape_duration_buckets(60) == (*DEFAULT_BUCKETS, 35, 60, 90, 120)
    assert scrape_duration_buckets(10) == DEFAULT_BUCKETS
    assert scrape_duration_buckets(3) == (
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        3,
        5,
        10,
    )
    # too close to an existing bucket: left out
    assert scrape_duration_buckets(1) == DEFAULT_BUCKETS
    assert scrape_duration_buckets(2.501) == DEFAULT_BUCKETS


@pytest.mark.parametrize(
    ("v", "go"),
    [
        (0.0, "0"),
        (1.0, "1"),
        (10.0, "10"),
        (0.005, "0.005"),
        (2.5, "2.5"),
        (1e-05, "1e-05"),
        (0.0001, "0.0001"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (1735032833.0, "1.735032833e+09"),
        (1.5e-7, "1.5e-07"),
        (-3.25, "-3.25"),
        (123456.7, "123456.7"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (1.364**2, repr(1.364**2)),
    ],
)
def test_format_float_matches_go_g_shortest(v: float, go: str) -> None:
    assert format_float(v) == go


def test_kubelet_request_families() -> None:
    m = SelfMetrics(resolution_seconds=15)
    m.on_request("node-b", 0.02, True, 1_700_000_000.25)
    m.on_request("node-a", 0.3, True, 1_700_000_001.0)
    m.on_request("node-a", 12.0, False, 1_700_000_002.9)  # over the largest bucket
    m.on_request("node-a", 0.005, True, 1_700_000_003.0)  # exactly on a bound: le is inclusive
    fams = parse(m)
    assert types(m)["metrics_server_kubelet_request_duration_seconds"] == "histogram"

    d = fams["metrics_server_kubelet_request_duration_seconds"]
    les = [format_float(b) for b in DEFAULT_BUCKETS] + ["+Inf"]
    a = dict(buckets(d, node="node-a"))
    assert list(a) == les
    assert a == dict(zip(les, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3], strict=True))
    b = dict(buckets(d, node="node-b"))
    assert b == dict(zip(les, [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], strict=True))
    name = "metrics_server_kubelet_request_duration_seconds"
    assert value(d, f"{name}_sum", node="node-a") == pytest.approx(12.305)
    assert value(d, f"{name}_count", node="node-a") == 3
    assert value(d, f"{name}_count", node="node-b") == 1

    t = fams["metrics_server_kubelet_request"]  # the parser strips _total from counters
    assert value(t, "metrics_server_kubelet_request_total", success="true") == 3
    assert value(t, "metrics_server_kubelet_request_total", success="false") == 1

    g = fams["metrics_server_kubelet_last_request_time_seconds"]
    # whole seconds of the request's end, as upstream's time.Now().Unix()
    assert value(g, "metrics_server_kubelet_last_request_time_seconds", node="node-a") == (
        1_700_000_003
    )
    assert value(g, "metrics_server_kubelet_last_request_time_seconds", node="node-b") == (
        1_700_000_000
    )


def test_forgotten_node_series_disappear() -> None:
    m = SelfMetrics(resolution_seconds=15)
    m.on_request("gone", 0.1, True, 1.0)
    m.on_request("stays", 0.1, False, 1.0)
    m.on_node_removed("gone")
    text = m.render().decode()
    assert 'node="gone"' not in text
    assert 'node="stays"' in text
    # the request counter has no node label and keeps counting
    fams = parse(m)
    t = fams["metrics_server_kubelet_request"]
    assert value(t, "metrics_server_kubelet_request_total", success="true") == 1
    m.forget_node("stays")
    assert "node=" not in m.render().decode()


def test_tick_and_storage_points() -> None:
    m = SelfMetrics(resolution_seconds=15)
    fams = parse(m)
    # the tick histogram is a plain histogram: present (all zero) before the first tick
    tick = fams["metrics_server_manager_tick_duration_seconds"]
    assert value(tick, "metrics_server_manager_tick_duration_seconds_count") == 0
    assert "metrics_server_storage_points" not in fams
    m.on_tick(0.7)
    m.on_tick(14.0)
    m.on_tick(40.0)
    m.set_storage_points(nodes=3, containers=71)
    fams = parse(m)
    tick = fams["metrics_server_manager_tick_duration_seconds"]
    got = dict(buckets(tick))
    assert got["0.5"] == 0
    assert got["1"] == 1
    assert got["12.5"] == 1
    assert got["15"] == 2
    assert got["30"] == 2
    assert got["+Inf"] == 3
    assert value(tick, "metrics_server_manager_tick_duration_seconds_sum") == pytest.approx(54.7)
    pts = fams["metrics_server_storage_points"]
    assert value(pts, "metrics_server_storage_points", type="node") == 3
    assert value(pts, "metrics_server_storage_points", type="container") == 71


def test_freshness_vectorised_equals_one_by_one() -> None:
    rng = np.random.default_rng(7)
    now = 1_735_032_900.0
    ts = (now * 1000 - rng.uniform(0, 400_000, size=5000)).astype(np.int64)
    # exact bucket bounds, and beyond the last one
    ts[:3] = [int(now * 1000) - 1000, int(now * 1000) - 2000, int(now * 1000) - 10_000_000]
    m = SelfMetrics(resolution_seconds=15)
    assert "metrics_server_api_metric_freshness_seconds" not in m.render().decode()
    m.observe_freshness(now, ts[:2500])
    m.observe_freshness(now, ts[2500:])
    m.observe_freshness(now, ts[:0])  # an empty response records nothing

    ref = Histogram(FRESHNESS_BUCKETS)
    for t in ts:
        ref.observe(now - float(t) / 1000.0)

    fams = parse(m)
    f = fams["metrics_server_api_metric_freshness_seconds"]
    assert buckets(f) == [(format_float(b), float(c)) for b, c in ref.buckets()]
    name = "metrics_server_api_metric_freshness_seconds"
    assert value(f, f"{name}_count") == 5000
    assert value(f, f"{name}_sum") == pytest.approx(ref.sum, rel=1e-12)
    assert buckets(f)[-1] == ("+Inf", 5000.0)


def test_freshness_bounds_are_inclusive() -> None:
    now = 1_735_032_900.0
    ms = int(now * 1000)
    m = SelfMetrics(resolution_seconds=15)
    # ages 0.5 s, exactly 1 s, 1.2 s, 1.3 s
    m.observe_freshness(now, np.array([ms - 500, ms - 1000, ms - 1200, ms - 1300], np.int64))
    got = buckets(parse(m)["metrics_server_api_metric_freshness_seconds"])
    assert got[:3] == [("1", 2.0), ("1.364", 4.0), (format_float(1.364**2), 4.0)]


def test_process_metrics_tell_the_truth() -> None:
    m = SelfMetrics(resolution_seconds=15)
    before = os.times()
    fams = parse(m)
    after = os.times()
    cpu = value(fams["process_cpu_seconds"], "process_cpu_seconds_total")
    assert before.user + before.system <= cpu <= after.user + after.system
    rss = value(fams["process_resident_memory_bytes"], "process_resident_memory_bytes")
    with open("/proc/self/status") as f:
        vmrss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
    assert rss == pytest.approx(vmrss, abs=8 << 20)
    assert rss > 10 << 20
    start = value(fams["process_start_time_seconds"], "process_start_time_seconds")
    # this interpreter started before the test, and after the machine booted
    assert start <= time.time()
    assert start > time.time() - time.monotonic() - 5
    with open(f"/proc/{os.getpid()}/stat", "rb") as f:
        ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
    assert start == pytest.approx(
        time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + ticks / os.sysconf("SC_CLK_TCK"),
        abs=2.0,
    )


def test_label_values_are_escaped() -> None:
    m = SelfMetrics(resolution_seconds=15)
    weird = 'we"ird\\node\nname'
    m.on_request(weird, 0.1, True, 1.0)
    g = parse(m)["metrics_server_kubelet_last_request_time_seconds"]
    assert value(g, "metrics_server_kubelet_last_request_time_seconds", node=weird) == 1
