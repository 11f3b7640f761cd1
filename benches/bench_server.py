"""The whole server's cost per node: CPU seconds and RSS of a real `python -m kubemetrics`
scraping the simulator (SPEC §9; issue 4 item 9; goal ≤ 0.05 mCPU and ≤ 0.1 MiB per node,
upstream's budget 1 mCPU and 2 MiB).

Scale run (manual, ~2-3 minutes; numbers in docs/PERFORMANCE.md):

    .venv/bin/python -m benches.bench_server --nodes 1000 --pods-per-node 30 --cycles 4

starts the simulator (kubelets refreshing every 10-15 s like real ones), then the server with
`--metric-resolution=15s`, waits until every node is served, lets one more cycle pass (warm
connections, caches), then reads the server's utime+stime from /proc/PID/stat across `--cycles`
whole resolutions (so one tick per cycle is inside the window), and its VmRSS/VmHWM from
/proc/PID/status. With `--query`, one full pod list (protobuf, as `kubectl top pods -A` asks)
is also fetched per cycle, straight from the server.

`make bench` runs the same measurement at a small size (nodes from $BENCH_SERVER_NODES,
default 100; 2 cycles at 5 s) through pytest-benchmark, with the numbers in extra_info.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args
from tests.helpers.proc import cpu_seconds, memory_kib

GOAL_MCPU_PER_NODE = 0.05
GOAL_MIB_PER_NODE = 0.1


def measure(
    workdir: Path,
    *,
    nodes: int,
    pods_per_node: int,
    resolution_s: int,
    cycles: int,
    refresh_ms: tuple[int, int] = (10_000, 15_000),
    query: bool = False,
) -> dict[str, Any]:
    t0 = time.monotonic()
    with SimProcess(
        workdir / "sim",
        nodes=nodes,
        pods_per_node=pods_per_node,
        refresh_ms=refresh_ms,
        ready_timeout=600,
    ) as sim:
        sim_ready = time.monotonic() - t0
        workdir_server = workdir / "server"
        server = ServerProcess(
            workdir_server, server_args(sim, workdir_server, resolution=f"{resolution_s}s")
        )
        # Direct requests authenticate as the cluster admin (client CA = the cluster CA).
        server.client_cert = (sim.file("admin_cert"), sim.file("admin_key"))
        server.start()
        # before the node and pod lists are in: the interpreter, libraries, TLS
        rss_at_start_kib = memory_kib(server.pid)["VmRSS"]
        try:
            deadline = time.monotonic() + 10 * resolution_s + 120
            served = 0
            while served < nodes:
                status, _, body = server.get("/apis/metrics.k8s.io/v1beta1/nodes", timeout=60)
                served = len(json.loads(body)["items"]) if status == 200 else 0
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {served}/{nodes} nodes served")
                time.sleep(1.0)
            ready_after = time.monotonic() - t0 - sim_ready
            time.sleep(resolution_s)  # one more warm cycle
            pid = server.pid
            cpu0, w0 = cpu_seconds(pid), time.monotonic()
            list_ms: list[float] = []
            for _ in range(cycles):
                end = time.monotonic() + resolution_s
                if query:
                    q0 = time.perf_counter()
                    status, _, body = server.get(
                        "/apis/metrics.k8s.io/v1beta1/pods",
                        "application/vnd.kubernetes.protobuf",
                        timeout=60,
                    )
                    list_ms.append((time.perf_counter() - q0) * 1000)
                    assert status == 200 and body[:4] == b"k8s\x00"
                time.sleep(max(0.0, end - time.monotonic()))
            cpu1, w1 = cpu_seconds(pid), time.monotonic()
            mem = memory_kib(pid)
            status, _, body = server.get("/apis/metrics.k8s.io/v1beta1/pods", timeout=60)
            pods_served = len(json.loads(body)["items"])
            log = server.log()
        finally:
            code = server.stop(timeout=30)
    cores = (cpu1 - cpu0) / (w1 - w0)
    rss_mib = mem["VmRSS"] / 1024
    result: dict[str, Any] = {
        "nodes": nodes,
        "pods": nodes * pods_per_node,
        "pods_served": pods_served,
        "resolution_s": resolution_s,
        "measured_s": round(w1 - w0, 1),
        "sim_ready_s": round(sim_ready, 1),
        "server_ready_s": round(ready_after, 1),
        "server_mcpu": round(cores * 1000, 2),
        "mcpu_per_node": round(cores * 1000 / nodes, 4),
        "cpu_s_per_cycle": round(cores * resolution_s, 3),
        "rss_mib": round(rss_mib, 1),
        "peak_rss_mib": round(mem["VmHWM"] / 1024, 1),
        "rss_at_start_mib": round(rss_at_start_kib / 1024, 1),
        "mib_per_node": round(rss_mib / nodes, 4),
        "incremental_mib_per_node": round((rss_mib - rss_at_start_kib / 1024) / nodes, 4),
        "failed_scrapes_logged": log.count("Failed to scrape node"),
        "exit_code": code,
    }
    if list_ms:
        result["full_pod_list_protobuf_ms"] = round(sorted(list_ms)[len(list_ms) // 2], 1)
    return result


def test_server_cost_per_node(benchmark: Any, tmp_path: Path) -> None:
    nodes = int(os.environ.get("BENCH_SERVER_NODES", "100"))
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(
            measure(
                tmp_path,
                nodes=nodes,
                pods_per_node=30,
                resolution_s=5,
                cycles=2,
                refresh_ms=(4000, 5000),
            )
        )

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    assert result["pods_served"] == nodes * 30
    assert result["exit_code"] == 0


pytestmark = pytest.mark.slow


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--resolution", type=int, default=15, help="seconds (default 15)")
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--query", action="store_true", help="one full pod list per cycle")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        r = measure(
            Path(tmp),
            nodes=a.nodes,
            pods_per_node=a.pods_per_node,
            resolution_s=a.resolution,
            cycles=a.cycles,
            query=a.query,
        )
    print(json.dumps(r, indent=2))
    print(
        f"CPU {r['mcpu_per_node']} mCPU/node (goal ≤ {GOAL_MCPU_PER_NODE}), "
        f"RSS {r['mib_per_node']} MiB/node (goal ≤ {GOAL_MIB_PER_NODE}; "
        f"{r['incremental_mib_per_node']} above the idle process)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
