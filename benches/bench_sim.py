"""Simulator benchmarks.

pytest-benchmark (``make bench``): rendering one kubelet payload (30 pods) against an in-run
baseline of joining the same number of pre-formatted lines, and encoding a pod list.

Scale run (manual, a few minutes; numbers in docs/SIMULATOR.md):

    .venv/bin/python -m benches.bench_sim --nodes 5000 --pods-per-node 30 --seconds 60

starts ``kubemetrics-sim``, scrapes every kubelet once per 15 s over kept-alive TLS connections
(like a metrics server), lists 150,000 pods (full and metadata-only), and reports the
simulator's own CPU use from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from kubemetrics_sim.cluster import Cluster, Config
from kubemetrics_sim.launch import SimProcess
from kubemetrics_sim.model import render
from tests.helpers.proc import cpu_seconds, memory_kib

# --- pytest-benchmark ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    c = Cluster(Config(nodes=50, pods_per_node=30, state_dir=Path(tempfile.mkdtemp())))
    c.make_pki()
    c.make_users()
    c.kubelet_port = 10250
    c.build()
    return c


def test_render_payload_vs_join_baseline(benchmark: Any, cluster: Cluster) -> None:
    node = next(iter(cluster.nodes.values()))
    node.advance(int(time.time() * 1000))
    body = render(node)
    lines = body.decode().splitlines(keepends=True)

    def baseline() -> bytes:
        return "".join(lines).encode()

    t0 = time.perf_counter()
    for _ in range(200):
        baseline()
    base = (time.perf_counter() - t0) / 200
    benchmark(render, node)
    ratio = benchmark.stats.stats.median / base
    benchmark.extra_info["baseline_join_s"] = base
    benchmark.extra_info["ratio_vs_join"] = ratio
    benchmark.extra_info["payload_bytes"] = len(body)


def test_encode_pod_list(benchmark: Any, cluster: Cluster) -> None:
    import orjson

    pods = list(cluster.pods.values())

    def encode() -> int:
        return sum(len(orjson.dumps(p.to_dict())) for p in pods)

    benchmark(encode)
    benchmark.extra_info["pods"] = len(pods)


# --- scale run ----------------------------------------------------------------------------


async def scrape_all(info: dict[str, Any], seconds: float, period: float) -> tuple[int, int]:
    import aiohttp

    ctx = ssl.create_default_context(cafile=info["files"]["ca"])
    token = info["users"]["metrics-server"]["token"]
    nodes = list(info["nodes"].values())
    ok = fail = 0
    errors: dict[str, int] = {}
    conn = aiohttp.TCPConnector(ssl=ctx, limit=0, limit_per_host=1)
    async with aiohttp.ClientSession(
        connector=conn,
        headers={"Authorization": f"Bearer {token}"},
        timeout=aiohttp.ClientTimeout(total=10),
    ) as s:

        async def one(n: dict[str, Any], delay: float) -> None:
            nonlocal ok, fail
            await asyncio.sleep(delay)
            try:
                async with s.get(f"https://{n['address']}:{n['port']}/metrics/resource") as r:
                    await r.read()
                    ok += r.status == 200
                    fail += r.status != 200
            except (aiohttp.ClientError, TimeoutError) as e:
                fail += 1
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            # Spread the tick over the period, like a staggered scraper.
            await asyncio.gather(*(one(n, i * period / len(nodes)) for i, n in enumerate(nodes)))
            await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))
    if errors:
        print("client errors:", errors)
    return ok, fail


def list_pods(info: dict[str, Any], accept: str) -> tuple[float, int]:
    import http.client

    ctx = ssl.create_default_context(cafile=info["files"]["ca"])
    c = http.client.HTTPSConnection(
        "127.0.0.1", info["apiserver"]["port"], context=ctx, timeout=300
    )
    t0 = time.monotonic()
    c.request(
        "GET",
        "/api/v1/pods",
        headers={
            "Authorization": f"Bearer {info['users']['metrics-server']['token']}",
            "Accept": accept,
        },
    )
    body = c.getresponse().read()
    return time.monotonic() - t0, len(body)


def main() -> None:

    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--period", type=float, default=15)
    a = p.parse_args()
    state = Path(tempfile.mkdtemp(prefix="sim-bench-"))
    sim = SimProcess(state, nodes=a.nodes, pods_per_node=a.pods_per_node, ready_timeout=600).start()
    try:
        print(sim.ready_line, f"(wall {sim.startup_seconds:.1f}s)")
        info = sim.info
        pid = sim.pid
        print("simulator", f"VmRSS: {memory_kib(pid)['VmRSS']} kB")
        for name, accept in (
            ("full", "application/json"),
            ("metadata", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
        ):
            c0 = cpu_seconds(pid)
            secs, size = list_pods(info, accept)
            print(
                f"list pods ({name}): {secs:.2f}s, {size / 1e6:.1f} MB, "
                f"simulator CPU {cpu_seconds(pid) - c0:.2f}s"
            )
        c0 = cpu_seconds(pid)
        w0 = time.monotonic()
        p0 = time.process_time()
        ok, fail = asyncio.run(scrape_all(info, a.seconds, a.period))
        wall = time.monotonic() - w0
        print(f"load client CPU {(time.process_time() - p0) / wall:.2f} cores")
        used = cpu_seconds(pid) - c0
        print(
            f"scraped {ok} ok / {fail} failed in {wall:.0f}s "
            f"({ok / wall:.0f} req/s): simulator CPU {used:.1f}s = {used / wall:.2f} cores "
            f"(includes first-tick TLS handshakes)"
        )
        c0 = cpu_seconds(pid)
        w0 = time.monotonic()
        ok, fail = asyncio.run(scrape_all(info, a.period, a.period))
        wall = time.monotonic() - w0
        print(
            f"one more tick with new connections: {ok} ok, simulator "
            f"{(cpu_seconds(pid) - c0) / wall:.2f} cores"
        )
        random.seed(0)
    finally:
        sim.stop(30)


if __name__ == "__main__":
    main()
