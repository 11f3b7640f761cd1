"""Serving at scale (issue 9): every row of the issue's table, measured as a user sees it.

    .venv/bin/python -m benches.bench_serving --nodes 5000 --pods-per-node 30 \\
        [--baseline-python /path/to/previous/.venv/bin/python]

starts the simulator (5,000 kubelets on loopback, samples refreshed every 10-15 s), then runs
each server variant in turn against it — the previous code first when `--baseline-python`
names an interpreter with it installed, then this one — each with `--metric-resolution=15s`,
the scrape loop running throughout. Per variant, once every node is served and one more cycle
has passed:

1. **Lists, with curl** (a TLS handshake per request, as the issue's figures were taken), one
   cycle after another: a full JSON pod list as the first JSON request after a new snapshot,
   then again warm; full protobuf lists (time to first byte and total); a full Table; a JSON
   list with `Accept-Encoding: gzip` (bytes on the wire); a list whose selector is
   `app in (v1, …, v1500)`.
2. **The HPA load**: a separate process sends 200 requests/s (open loop: latency counts from
   the scheduled time, so a stalled server cannot hide queueing) of one namespace (~36,000 pods)
   with a label selector matching nothing, protobuf, over keep-alive TLS connections, for three
   cycles: p50/p99 latency, and server CPU per request = (CPU during the load − CPU of an
   equal quiet window) / requests. The same load against `GET /version` (same TLS, authn and
   authz, a static answer) for one cycle gives the framework's own floor.
3. **Memory**: the HPA load again with one full list of each kind per cycle, for the memory
   goal: RSS sampled every 100 ms (steady = median) and the peak (VmHWM, reset first).
4. **Slow readers**: the peak of one ordinary cycle, then 12 curls reading the full JSON list
   at once at 2 MB/s each: what they add over that peak, and each one's status (200, complete,
   or 429).

`make bench` runs the same code at 200 nodes × 30 pods (BENCH_SERVING_NODES) with short
phases, through pytest-benchmark (numbers in extra_info); the full run takes ~12 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args
from tests.helpers.proc import cpu_seconds, memory_kib, reset_peak

RESOLUTION_S = 15
BASE = "/apis/metrics.k8s.io/v1beta1"
PROTOBUF = "application/vnd.kubernetes.protobuf, */*"
JSON = "application/json"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io, application/json"
# aiohttp answers 400 to a request line over 8,190 bytes (its default max_line_size).
MAX_REQUEST_LINE = 8190
HPA_NAMESPACE = "team-a"
REQUEST_TIMEOUT_S = 10.0


class RssSampler:
    """VmRSS of a process every `interval` seconds, in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(memory_kib(self.pid)["VmRSS"] / 1024)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Curl:
    """curl against one server with the simulator's admin client certificate."""

    server: ServerProcess
    cert: str
    key: str

    def get(
        self, path: str, accept: str, *, gzip: bool = False, limit_rate: str = ""
    ) -> dict[str, float]:
        args = [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_appconnect} %{time_starttransfer} %{time_total} %{size_download}",
            "--cacert",
            str(self.server.cert_file),
            "--cert",
            self.cert,
            "--key",
            self.key,
            "-H",
            f"Accept: {accept}",
        ]
        if gzip:
            args.append("--compressed")
        if limit_rate:
            args += ["--limit-rate", limit_rate]
        args.append(f"{self.server.url}{path}")
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
        code, tls, ttfb, total, size = out.stdout.split()
        return {
            "status": float(code),
            "tls_ms": float(tls) * 1000,
            "ttfb_ms": float(ttfb) * 1000,
            "total_ms": float(total) * 1000,
            "bytes": float(size),
        }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 1) if values else float("nan")


def tick_count(server: ServerProcess) -> int:
    """Ticks the server has finished (from its own /metrics)."""
    status, _, body = server.get("/metrics")
    if status != 200:
        return -1
    for line in body.decode().splitlines():
        if line.startswith("metrics_server_manager_tick_duration_seconds_count"):
            return int(float(line.split()[-1]))
    return -1


def wait_next_snapshot(server: ServerProcess, publish_s: float) -> None:
    """Until the next tick has finished and its snapshot had `publish_s` to be published."""
    start = tick_count(server)
    deadline = time.monotonic() + 3 * RESOLUTION_S
    while tick_count(server) == start and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(publish_s)


def in_selector_path(path: str, n: int = 1500) -> tuple[str, int]:
    """`path` with `labelSelector=app in (v1, …, vN)` (commas and parentheses unescaped, as
    kubectl sends them): 1,500 values fit aiohttp's request line."""
    values = ",".join(f"v{i}" for i in range(1, n + 1))
    url = f"{path}?labelSelector=" + urllib.parse.quote(f"app in ({values})", safe=",()")
    assert len(f"GET {url} HTTP/1.1") <= MAX_REQUEST_LINE
    return url, n


# --- the HPA load generator (a separate process) ------------------------------------------------


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    import ssl

    import aiohttp

    ctx = ssl.create_default_context(cafile=args.ca)
    ctx.load_cert_chain(args.cert, args.key)
    connector = aiohttp.TCPConnector(limit=args.connections, ssl=ctx)
    latencies: list[float] = []
    timeline: list[tuple[float, float]] = []  # (scheduled wall time, latency)
    statuses: dict[str, int] = {}
    headers = {"Accept": PROTOBUF}
    async with aiohttp.ClientSession(connector=connector) as s:

        async def warm() -> None:
            async with s.get(args.url, headers=headers) as r:
                await r.read()

        # Open the connections first: handshakes are not what is measured.
        await asyncio.gather(*(warm() for _ in range(args.connections)))

        async def one(scheduled: float) -> None:
            # A server that cannot keep up still gets its answers counted: each request gives
            # up after REQUEST_TIMEOUT_S (counted as "timeout", at that latency).
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_S):
                    async with s.get(args.url, headers=headers) as r:
                        await r.read()
                        key = str(r.status)
            except (TimeoutError, aiohttp.ClientError) as e:
                key = "timeout" if isinstance(e, TimeoutError) else type(e).__name__
            statuses[key] = statuses.get(key, 0) + 1
            latency = time.perf_counter() - scheduled
            latencies.append(latency)
            timeline.append((wall0 + (scheduled - t0), latency))

        tasks = []
        n = int(args.rate * args.seconds)
        t0 = time.perf_counter() + 0.2
        wall0 = time.time() + 0.2
        for k in range(n):
            at = t0 + k / args.rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(at)))
        await asyncio.gather(*tasks)
    lat = sorted(latencies)
    return {
        "timeline": sorted(timeline),
        "requests": len(lat),
        "statuses": statuses,
        "p50_ms": round(lat[len(lat) // 2] * 1000, 2),
        "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2),
        "max_ms": round(lat[-1] * 1000, 2),
        "achieved_rate": round(len(lat) / args.seconds, 1),
    }


def load_generator_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--rate", type=float, default=200)
    p.add_argument("--seconds", type=float, default=45)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--timeline", help="write (wall time, latency) pairs here")
    a = p.parse_args(argv)
    try:
        import uvloop

        result = uvloop.run(_load(a))
    except ImportError:
        result = asyncio.run(_load(a))
    timeline = result.pop("timeline")
    if a.timeline:
        Path(a.timeline).write_text(json.dumps(timeline))
    print(json.dumps(result))
    return 0


def start_load(
    server: ServerProcess, sim: SimProcess, path: str, rate: float, seconds: float
) -> subprocess.Popen[str]:
    """The load generator (below) in its own process."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benches.bench_serving",
            "--load-generator",
            "--url",
            f"{server.url}{path}",
            "--ca",
            str(server.cert_file),
            "--cert",
            sim.file("admin_cert"),
            "--key",
            sim.file("admin_key"),
            "--rate",
            str(rate),
            "--seconds",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],  # where `benches` is a package
    )


# --- one server variant -------------------------------------------------------------------------


@dataclass
class Plan:
    cycles: int = 3  # of each phase
    readers: int = 12
    reader_rate: str = "2M"
    hpa_rate: float = 200
    publish_s: float = 3.0  # after a tick ends, by when its snapshot is published


@dataclass
class Result:
    name: str
    rows: dict[str, Any] = field(default_factory=dict)


def measure_variant(
    name: str, python: str, sim: SimProcess, workdir: Path, nodes: int, plan: Plan
) -> Result:
    res = Result(name)
    server = ServerProcess(workdir, server_args(sim, workdir, resolution=f"{RESOLUTION_S}s"))
    server.args[0] = python
    server.client_cert = (sim.file("admin_cert"), sim.file("admin_key"))
    curl = Curl(server, sim.file("admin_cert"), sim.file("admin_key"))
    server.start(timeout=120)
    try:
        pid = server.pid
        deadline = time.monotonic() + 10 * RESOLUTION_S + 300
        while True:
            status, _, body = server.get(f"{BASE}/nodes")
            served = len(json.loads(body)["items"]) if status == 200 else 0
            if served >= nodes:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: only {served}/{nodes} nodes served")
            time.sleep(1.0)
        wait_next_snapshot(server, plan.publish_s)
        pods = f"{BASE}/pods"
        in_path, in_values = in_selector_path(pods)
        res.rows["in_values"] = in_values

        # 1. lists, one cycle after another
        rows: dict[str, list[float]] = {}

        def add(key: str, value: float) -> None:
            rows.setdefault(key, []).append(value)

        sizes: dict[str, float] = {}
        for _ in range(plan.cycles):
            wait_next_snapshot(server, plan.publish_s)
            first = curl.get(pods, JSON)
            add("json_first_total_ms", first["total_ms"])
            warm = curl.get(pods, JSON)
            add("json_warm_total_ms", warm["total_ms"])
            add("json_warm_ttfb_ms", warm["ttfb_ms"])
            sizes["json_bytes"] = warm["bytes"]
            for _ in range(2):
                pb = curl.get(pods, PROTOBUF)
                add("protobuf_ttfb_ms", pb["ttfb_ms"])
                add("protobuf_total_ms", pb["total_ms"])
                add("tls_handshake_ms", pb["tls_ms"])
            table = curl.get(pods, TABLE)
            add("table_total_ms", table["total_ms"])
            gz = curl.get(pods, JSON, gzip=True)
            add("json_gzip_total_ms", gz["total_ms"])
            sizes["json_gzip_bytes_sent"] = gz["bytes"]
            sel = curl.get(in_path, PROTOBUF)
            add("in_list_total_ms", sel["total_ms"])
            assert sel["status"] == 200, sel
        res.rows.update({k: median(v) for k, v in rows.items()})
        res.rows.update(sizes)

        # 2. the HPA load alone; then the same load on a static answer (the framework floor)
        quiet_s = plan.cycles * RESOLUTION_S
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(quiet_s)
        quiet_cpu_per_s = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
        res.rows["quiet_server_mcpu"] = round(quiet_cpu_per_s * 1000, 1)
        hpa_path = f"{BASE}/namespaces/{HPA_NAMESPACE}/pods?labelSelector=" + urllib.parse.quote(
            "app=no-such-app"
        )

        def load(path: str, seconds: float) -> tuple[dict[str, Any], float]:
            """The load's result, and the server's CPU per request above the quiet rate."""
            gen = start_load(server, sim, path, plan.hpa_rate, seconds)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            out, _ = gen.communicate(timeout=seconds + REQUEST_TIMEOUT_S + 300)
            extra = cpu_seconds(pid) - c0 - quiet_cpu_per_s * (time.monotonic() - t0)
            result = json.loads(out.strip().splitlines()[-1])
            return result, round(extra / max(1, result["requests"]) * 1000, 3)

        res.rows["hpa"], res.rows["hpa_cpu_ms_per_request"] = load(
            hpa_path, plan.cycles * RESOLUTION_S
        )
        res.rows["floor"], res.rows["floor_cpu_ms_per_request"] = load("/version", RESOLUTION_S)

        # 3. memory through cycles with the HPA load and one full list of each kind per cycle
        gen = start_load(server, sim, hpa_path, plan.hpa_rate, plan.cycles * RESOLUTION_S)
        reset_peak(pid)
        with RssSampler(pid) as rss:
            for _ in range(plan.cycles):
                end = time.monotonic() + RESOLUTION_S
                for accept in (JSON, PROTOBUF, TABLE):
                    curl.get(pods, accept)
                time.sleep(max(0.0, end - time.monotonic()))
            gen.communicate(timeout=RESOLUTION_S * plan.cycles + REQUEST_TIMEOUT_S + 300)
        res.rows["rss_steady_mib"] = round(statistics.median(rss.samples), 1)
        res.rows["rss_peak_mib"] = round(memory_kib(pid)["VmHWM"] / 1024, 1)
        res.rows["rss_min_mib"] = round(min(rss.samples), 1)

        # 4. slow readers, against the peak of an ordinary cycle
        reset_peak(pid)
        time.sleep(RESOLUTION_S + plan.publish_s)
        ordinary_peak = memory_kib(pid)["VmHWM"] / 1024
        before = memory_kib(pid)["VmRSS"] / 1024
        reset_peak(pid)
        results: list[dict[str, float]] = [{} for _ in range(plan.readers)]

        def read(k: int) -> None:
            results[k] = curl.get(pods, JSON, limit_rate=plan.reader_rate)

        threads = [threading.Thread(target=read, args=(k,)) for k in range(plan.readers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(400)
        peak = memory_kib(pid)["VmHWM"] / 1024
        full = sizes["json_bytes"]
        res.rows["slow_readers"] = {
            "ordinary_cycle_peak_mib": round(ordinary_peak, 1),
            "rss_before_mib": round(before, 1),
            "peak_mib": round(peak, 1),
            "rise_over_ordinary_peak_mib": round(peak - ordinary_peak, 1),
            "rise_over_before_mib": round(peak - before, 1),
            "statuses": [int(r.get("status", 0)) for r in results],
            "complete": sum(1 for r in results if r.get("bytes", 0) >= full * 0.99),
            "seconds": median([r.get("total_ms", 0) / 1000 for r in results]),
        }
        res.rows["failed_scrapes_logged"] = server.log().count("Failed to scrape node")
    finally:
        res.rows["exit_code"] = server.stop()
    return res


def measure(
    workdir: Path,
    *,
    nodes: int,
    pods_per_node: int,
    baseline_python: str | None,
    plan: Plan,
) -> dict[str, Any]:
    t0 = time.monotonic()
    with SimProcess(
        workdir / "sim",
        nodes=nodes,
        pods_per_node=pods_per_node,
        refresh_ms=(10_000, 15_000),
        ready_timeout=600,
    ) as sim:
        out: dict[str, Any] = {
            "nodes": nodes,
            "pods": nodes * pods_per_node,
            "sim_ready_s": round(time.monotonic() - t0, 1),
        }
        variants = [("now", sys.executable)]
        if baseline_python:
            variants.insert(0, ("before", baseline_python))
        for name, python in variants:
            r = measure_variant(name, python, sim, workdir / name, nodes, plan)
            out[name] = r.rows
            print(f"--- {name}\n{json.dumps(r.rows, indent=1)}", flush=True)
    return out


def test_serving(benchmark: Any, tmp_path: Path) -> None:
    nodes = int(os.environ.get("BENCH_SERVING_NODES", "200"))
    result: dict[str, Any] = {}
    plan = Plan(cycles=1, readers=4, reader_rate="4M", hpa_rate=50)

    def run() -> None:
        result.update(
            measure(tmp_path, nodes=nodes, pods_per_node=30, baseline_python=None, plan=plan)
        )

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    now = result["now"]
    assert now["exit_code"] == 0
    assert now["hpa"]["statuses"] == {"200": now["hpa"]["requests"]}
    assert now["slow_readers"]["complete"] == plan.readers


pytestmark = pytest.mark.slow


def main() -> int:
    if sys.argv[1:2] == ["--load-generator"]:
        return load_generator_main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--baseline-python", help="an interpreter with the previous code installed")
    p.add_argument("--cycles", type=int, default=3)
    p.add_argument("--out", help="also write the JSON result here")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        r = measure(
            Path(tmp),
            nodes=a.nodes,
            pods_per_node=a.pods_per_node,
            baseline_python=a.baseline_python,
            plan=Plan(cycles=a.cycles),
        )
    text = json.dumps(r, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
