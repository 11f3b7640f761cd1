"""The server's own metrics (`/metrics`), written in Prometheus text exposition format 0.0.4.

Same families, labels, help texts and bucket boundaries as upstream metrics-server (component-base
marks them `[ALPHA]`), plus the standard process metrics. Written by hand rather than with a client
library: six families do not justify a runtime dependency, and the API freshness histogram takes
one vectorised update per response instead of one call per returned item.
"""

from __future__ import annotations

import bisect
import decimal
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# client_golang's DefBuckets, used upstream for the kubelet request duration.
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor**i for i in range(count))


# Upstream's metrics_server_api_metric_freshness_seconds: ExponentialBuckets(1, 1.364, 20).
FRESHNESS_BUCKETS = exponential_buckets(1.0, 1.364, 20)


def scrape_duration_buckets(resolution_seconds: float) -> tuple[float, ...]:
    """Default buckets with extra ones around the resolution, as upstream's tick histogram has.

    Above the largest default bucket: halfway there, the resolution, 1.5× and 2× it. Below: the
    resolution slotted in, unless it sits within the smallest bucket's width of a neighbour.
    """
    buckets = list(DEFAULT_BUCKETS)
    top = buckets[-1]
    t = float(resolution_seconds)
    if t > top:
        buckets += [top + (t - top) / 2, t, t * 1.5, t * 2.0]
    elif t < top:
        i = next(k for k, b in enumerate(buckets) if b > t)
        above = buckets[i]
        if above - t < buckets[0] or (i > 0 and t - buckets[i - 1] < buckets[0]):
            return tuple(buckets)
        buckets.insert(i, t)
    return tuple(buckets)


def format_float(v: float) -> str:
    """Go's `strconv.FormatFloat(v, 'g', -1, 64)`, which the Go exposition writer uses."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign, digit_tuple, exponent = decimal.Decimal(repr(v)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    # decimal point position relative to the digit string, as Go's `decimalSlice.dp`
    dp = len(digit_tuple) + exponent
    neg = "-" if sign else ""
    exp = dp - 1
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        es = "-" if exp < 0 else "+"
        return f"{neg}{mant}e{es}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{digits}"
    if dp >= len(digits):
        return f"{neg}{digits}{'0' * (dp - len(digits))}"
    return f"{neg}{digits[:dp]}.{digits[dp:]}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Histogram:
    """One histogram series: per-bucket counts (non-cumulative), sum, count."""

    __slots__ = ("_bounds", "_counts", "_np_bounds", "count", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = tuple(float(b) for b in bounds)
        self._np_bounds = np.asarray(self._bounds, dtype=np.float64)
        # one slot per bound plus the +Inf overflow
        self._counts = np.zeros(len(self._bounds) + 1, dtype=np.int64)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        # `le` is inclusive: the first bound >= value
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value
        self.count += 1

    def observe_many(self, values: npt.NDArray[np.float64]) -> None:
        """Vectorised `observe` over a whole column (NaN values are skipped)."""
        if values.size == 0:
            return
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        idx = np.searchsorted(self._np_bounds, values, side="left")
        self._counts += np.bincount(idx, minlength=self._counts.size)
        self.sum += float(values.sum())
        self.count += int(values.size)

    def buckets(self) -> list[tuple[float, int]]:
        """Cumulative (upper bound, count) pairs, ending with +Inf."""
        cum = np.cumsum(self._counts)
        bounds = [*self._bounds, math.inf]
        return [(b, int(c)) for b, c in zip(bounds, cum, strict=True)]


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def header(self, name: str, help_: str, type_: str) -> None:
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {type_}")

    def sample(self, name: str, labels: Sequence[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {format_float(value)}")

    def histogram(self, name: str, labels: Sequence[tuple[str, str]], h: Histogram) -> None:
        for bound, count in h.buckets():
            self.sample(f"{name}_bucket", [*labels, ("le", format_float(bound))], count)
        self.sample(f"{name}_sum", labels, h.sum)
        self.sample(f"{name}_count", labels, h.count)

    def render(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


# What other parts of the server write into /metrics: families of their own, named
# `kubemetrics_*` (they sort before upstream's `metrics_server_*`, as Go's registry orders them).
MetricWriter = _Writer
MetricSource = Callable[[MetricWriter], None]


_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _read_proc(path: str) -> bytes | None:
    # procfs files are generated in memory by the kernel; reading one never waits on a disk.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _process_start_time() -> float:
    """Start time of this process since the epoch (from /proc, like client_golang)."""
    stat = _read_proc("/proc/self/stat")
    boot = _read_proc("/proc/stat")
    if stat is None or boot is None:
        return time.time()
    # field 22 (starttime, clock ticks since boot); fields after the ")" of the command name
    after = stat[stat.rfind(b")") + 2 :].split()
    start_ticks = int(after[19])
    btime = next(
        (int(line.split()[1]) for line in boot.splitlines() if line.startswith(b"btime ")), 0
    )
    return btime + start_ticks / _CLK_TCK


def _resident_memory_bytes() -> int | None:
    statm = _read_proc("/proc/self/statm")
    if statm is None:
        return None
    fields = statm.split()
    return int(fields[1]) * _PAGE_SIZE if len(fields) > 1 else None


class SelfMetrics:
    """Collects the server's metrics; implements the scraper's observer interface.

    Call `on_request` per kubelet request, `on_tick` per finished cycle, `forget_node` when a node
    leaves (its series disappear, unlike upstream), `set_storage_points` after each store, and
    `observe_freshness` with the timestamps of the items an API response returned.
    """

    def __init__(self, resolution_seconds: float) -> None:
        self._request_duration: dict[str, Histogram] = {}
        self._last_request_time: dict[str, float] = {}
        self._request_total: dict[str, float] = {}
        self._tick = Histogram(scrape_duration_buckets(resolution_seconds))
        self._storage_points: dict[str, float] = {}
        self._freshness: Histogram | None = None
        self._start_time = _process_start_time()
        self.sources: list[MetricSource] = []
        # --sharding=lease only (absent otherwise)
        self._shard: dict[str, float] = {}
        self._peer_requests: dict[str, float] = {}
        self._peer_bytes = 0.0
        self._peer_seconds: Histogram | None = None

    # --- scraper observer -------------------------------------------------------------------

    def on_request(self, node: str, seconds: float, success: bool, started_at: float) -> None:
        """One kubelet request finished; `started_at` is its wall-clock start (Unix seconds)."""
        h = self._request_duration.get(node)
        if h is None:
            h = self._request_duration[node] = Histogram(DEFAULT_BUCKETS)
        h.observe(seconds)
        key = "true" if success else "false"
        self._request_total[key] = self._request_total.get(key, 0.0) + 1.0
        # upstream records whole seconds (time.Now().Unix()) when the request ends
        self._last_request_time[node] = float(math.floor(started_at + seconds))

    def on_tick(self, seconds: float) -> None:
        """A scrape cycle (all nodes plus storing) took `seconds`."""
        self._tick.observe(seconds)

    def on_node_removed(self, node: str) -> None:
        """A node left: drop its series (upstream keeps them forever)."""
        self._request_duration.pop(node, None)
        self._last_request_time.pop(node, None)

    forget_node = on_node_removed

    def set_storage_points(self, nodes: int, containers: int) -> None:
        self._storage_points["node"] = float(nodes)
        self._storage_points["container"] = float(containers)

    # --- sharding -----------------------------------------------------------------------------

    def set_shard(self, members: int, owned: int, standing_in: int) -> None:
        """After each assignment: live members, nodes owned, nodes stood in for."""
        self._shard = {"members": members, "owned": owned, "standing_in": standing_in}

    def on_peer_fetch(self, result: str, nbytes: int, seconds: float) -> None:
        """One fetch of a peer's points: `ok` or why not, the body's size, its duration."""
        self._peer_requests[result] = self._peer_requests.get(result, 0.0) + 1.0
        self._peer_bytes += nbytes
        if self._peer_seconds is None:
            self._peer_seconds = Histogram(DEFAULT_BUCKETS)
        self._peer_seconds.observe(seconds)

    def _render_shard(self, w: _Writer) -> None:
        if self._shard:
            name = "kubemetrics_shard_members"
            w.header(name, "Live replicas sharing the kubelets, this one included.", "gauge")
            w.sample(name, [], self._shard["members"])
            name = "kubemetrics_shard_nodes"
            w.header(
                name,
                "Nodes this replica scraped in its last cycle: owned, or stood in for (their "
                "owner could not deliver them).",
                "gauge",
            )
            w.sample(name, [("role", "owned")], self._shard["owned"])
            w.sample(name, [("role", "standing_in")], self._shard["standing_in"])
        if self._peer_seconds is not None:
            name = "kubemetrics_shard_peer_request_duration_seconds"
            w.header(name, "Duration of fetches of the peers' points.", "histogram")
            w.histogram(name, [], self._peer_seconds)
            name = "kubemetrics_shard_peer_requests_total"
            w.header(name, "Fetches of the peers' points, by result.", "counter")
            for key in sorted(self._peer_requests):
                w.sample(name, [("result", key)], self._peer_requests[key])
            name = "kubemetrics_shard_peer_response_bytes_total"
            w.header(name, "Bytes of the peers' points received (compressed).", "counter")
            w.sample(name, [], self._peer_bytes)

    # --- API ----------------------------------------------------------------------------------

    def observe_freshness(self, now_s: float, timestamps_ms: npt.NDArray[np.int64]) -> None:
        """Record `now − timestamp` for every returned item, in one vectorised update."""
        if timestamps_ms.size == 0:
            return
        if self._freshness is None:
            self._freshness = Histogram(FRESHNESS_BUCKETS)
        ages = now_s - timestamps_ms.astype(np.float64) / 1000.0
        self._freshness.observe_many(ages)

    # --- exposition -----------------------------------------------------------------------------

    def render(self) -> bytes:
        w = _Writer()
        # Families in name order and series in label order, as Go's registry gathers them.
        for source in self.sources:
            source(w)
        self._render_shard(w)
        if self._freshness is not None:
            name = "metrics_server_api_metric_freshness_seconds"
            w.header(name, "[ALPHA] Freshness of metrics exported", "histogram")
            w.histogram(name, [], self._freshness)
        if self._last_request_time:
            name = "metrics_server_kubelet_last_request_time_seconds"
            w.header(
                name,
                "[ALPHA] Time of last request performed to Kubelet API since unix epoch in seconds",
                "gauge",
            )
            for node in sorted(self._last_request_time):
                w.sample(name, [("node", node)], self._last_request_time[node])
        if self._request_duration:
            name = "metrics_server_kubelet_request_duration_seconds"
            w.header(name, "[ALPHA] Duration of requests to Kubelet API in seconds", "histogram")
            for node in sorted(self._request_duration):
                w.histogram(name, [("node", node)], self._request_duration[node])
        if self._request_total:
            name = "metrics_server_kubelet_request_total"
            w.header(name, "[ALPHA] Number of requests sent to Kubelet API", "counter")
            for key in sorted(self._request_total):
                w.sample(name, [("success", key)], self._request_total[key])
        name = "metrics_server_manager_tick_duration_seconds"
        w.header(
            name,
            "[ALPHA] The total time spent collecting and storing metrics in seconds.",
            "histogram",
        )
        w.histogram(name, [], self._tick)
        if self._storage_points:
            name = "metrics_server_storage_points"
            w.header(name, "[ALPHA] Number of metrics points stored.", "gauge")
            for key in sorted(self._storage_points):
                w.sample(name, [("type", key)], self._storage_points[key])
        self._render_process(w)
        return w.render()

    def _render_process(self, w: _Writer) -> None:
        times = os.times()
        w.header(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            "counter",
        )
        w.sample("process_cpu_seconds_total", [], times.user + times.system)
        rss = _resident_memory_bytes()
        if rss is not None:
            w.header("process_resident_memory_bytes", "Resident memory size in bytes.", "gauge")
            w.sample("process_resident_memory_bytes", [], float(rss))
        w.header(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
        )
        w.sample("process_start_time_seconds", [], self._start_time)
