"""Sharded replicas at scale: 1, 2 and 3 replicas on the same simulated cluster, in one run.

    .venv/bin/python -m benches.bench_shard --nodes 3000 --pods-per-node 30 --cycles 4

One simulator (kubelets refreshing every 10-15 s, as real ones). Then, one after the other:
one replica with `--sharding=none` (the baseline: today's single server), two and three
replicas with `--sharding=lease`, all with `--metric-resolution=15s`. For each set, once every
replica serves every node and none stands in for another, over `--cycles` resolutions:

- CPU (utime+stime from /proc) and RSS (VmRSS, and the peak VmHWM) of each replica, and their
  total CPU: the goals are total CPU ≤ 1.25 × the single replica's and RSS per replica ≤ 1.2 ×
  the single replica's;
- kubelet requests per node per cycle, counted by the simulator's kubelets (goal: 1; upstream's
  HA sends one per replica);
- peer bytes per cycle (what each replica fetched from its peers, compressed);
- the full pod list (protobuf, as `kubectl top pods -A` asks) straight from each replica, after
  the CPU window (so that every set serves the same requests: none while CPU is counted), five
  times each: its median latency.

The machine is shared: the numbers are same-run ratios, and the simulator's own CPU is
reported (it competes for the same cores). `make bench` runs it at 100 nodes × 30 pods, 5 s
resolution, 2 cycles.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args
from tests.helpers.proc import cpu_seconds, memory_kib
from tests.helpers.shard import grant_leases, shard_args

GOAL_TOTAL_CPU = 1.25
GOAL_RSS = 1.2
PROTOBUF = "application/vnd.kubernetes.protobuf"
PEER_BYTES = "kubemetrics_shard_peer_response_bytes_total"
STANDING_IN = 'kubemetrics_shard_nodes{role="standing_in"}'
LISTS = 5  # full pod lists per replica after the CPU window


def _metric(server: ServerProcess, prefix: str) -> float:
    body = server.get("/metrics", timeout=60)[2].decode()
    for line in body.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return 0.0


def _served_nodes(server: ServerProcess) -> int:
    status, _, body = server.get("/apis/metrics.k8s.io/v1beta1/nodes", timeout=60)
    return len(json.loads(body)["items"]) if status == 200 else 0


def _replicas(
    sim: SimProcess, workdir: Path, count: int, resolution_s: int, sharded: bool
) -> list[ServerProcess]:
    servers = []
    for i in range(count):
        name = f"r{count}-{i}"
        w = workdir / name
        extra = shard_args(name, lease_duration=15.0) if sharded else []
        s = ServerProcess(w, server_args(sim, w, *extra, resolution=f"{resolution_s}s"), name=name)
        s.client_cert = (sim.file("admin_cert"), sim.file("admin_key"))
        servers.append(s)
    try:
        with ThreadPoolExecutor(count) as pool:  # started at the same moment
            list(pool.map(lambda s: s.start(timeout=120), servers))
    except BaseException:
        for s in servers:  # those that did start
            s.stop()
        raise
    return servers


def measure_set(
    sim: SimProcess,
    workdir: Path,
    *,
    count: int,
    sharded: bool,
    nodes: int,
    resolution_s: int,
    cycles: int,
) -> dict[str, Any]:
    servers = _replicas(sim, workdir, count, resolution_s, sharded)
    try:
        deadline = time.monotonic() + 12 * resolution_s + 180
        while not all(_served_nodes(s) == nodes for s in servers) or (
            sharded and any(_metric(s, STANDING_IN) for s in servers)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{count} replicas: not every node served by every replica")
            time.sleep(1.0)
        time.sleep(resolution_s)  # one more warm cycle
        pids = [s.pid for s in servers]
        cpu0 = [cpu_seconds(p) for p in pids]
        sim_cpu0 = cpu_seconds(sim.pid)
        peer0 = [_metric(s, PEER_BYTES) for s in servers]
        kubelet0 = sim.kubelet_requests()
        w0 = time.monotonic()
        # The cost of keeping every node served, with no API traffic (the requests a cluster
        # sends are the same in number whatever the replica count: each goes to one replica).
        time.sleep(cycles * resolution_s)
        w1 = time.monotonic()
        cpu1 = [cpu_seconds(p) for p in pids]
        sim_cpu1 = cpu_seconds(sim.pid)
        peer1 = [_metric(s, PEER_BYTES) for s in servers]
        kubelet1 = sim.kubelet_requests()
        mems = [memory_kib(p) for p in pids]
        # Then the full pod list from each replica, one at a time, a few times each.
        list_ms: list[list[float]] = [[] for _ in servers]
        for _ in range(LISTS):
            for i, s in enumerate(servers):
                q0 = time.perf_counter()
                status, _, body = s.get("/apis/metrics.k8s.io/v1beta1/pods", PROTOBUF, timeout=120)
                list_ms[i].append((time.perf_counter() - q0) * 1000)
                assert status == 200 and body[:4] == b"k8s\x00", status
            time.sleep(1.0)
    finally:
        codes = [s.stop(timeout=30) for s in servers]
    seconds = w1 - w0
    measured_cycles = seconds / resolution_s
    requests = sum(sum(a.values()) for a in kubelet1.values()) - sum(
        sum(a.values()) for a in kubelet0.values()
    )
    per = [
        {
            "name": s.name,
            "mcpu": round((c1 - c0) / seconds * 1000, 1),
            "rss_mib": round(m["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(m["VmHWM"] / 1024, 1),
            "peer_kib_per_cycle": round((p1 - p0) / measured_cycles / 1024, 1),
            "full_pod_list_ms": round(statistics.median(ms), 1),
        }
        for s, c0, c1, m, p0, p1, ms in zip(
            servers, cpu0, cpu1, mems, peer0, peer1, list_ms, strict=True
        )
    ]
    return {
        "replicas": count,
        "sharding": "lease" if sharded else "none",
        "measured_s": round(seconds, 1),
        "total_mcpu": round(sum(p["mcpu"] for p in per), 1),
        "max_rss_mib": max(p["rss_mib"] for p in per),
        "kubelet_requests_per_node_per_cycle": round(requests / nodes / measured_cycles, 3),
        "peer_kib_per_cycle_total": round(sum(p["peer_kib_per_cycle"] for p in per), 1),
        "simulator_mcpu": round((sim_cpu1 - sim_cpu0) / seconds * 1000, 1),
        "per_replica": per,
        "exit_codes": codes,
    }


def measure(
    workdir: Path,
    *,
    nodes: int,
    pods_per_node: int,
    resolution_s: int,
    cycles: int,
    counts: tuple[int, ...] = (1, 2, 3),
    refresh_ms: tuple[int, int] = (10_000, 15_000),
) -> dict[str, Any]:
    t0 = time.monotonic()
    with SimProcess(
        workdir / "sim",
        nodes=nodes,
        pods_per_node=pods_per_node,
        refresh_ms=refresh_ms,
        ready_timeout=900,
    ) as sim:
        grant_leases(sim)
        sim_ready = time.monotonic() - t0
        sets = [
            measure_set(
                sim,
                workdir,
                count=k,
                sharded=k > 1,
                nodes=nodes,
                resolution_s=resolution_s,
                cycles=cycles,
            )
            for k in counts
        ]
    base = sets[0]
    for s in sets[1:]:
        s["total_cpu_ratio"] = round(s["total_mcpu"] / base["total_mcpu"], 3)
        s["rss_ratio"] = round(s["max_rss_mib"] / base["max_rss_mib"], 3)
    return {
        "nodes": nodes,
        "pods": nodes * pods_per_node,
        "resolution_s": resolution_s,
        "cycles": cycles,
        "sim_ready_s": round(sim_ready, 1),
        "sets": sets,
    }


def summary(r: dict[str, Any]) -> str:
    lines = [
        f"{r['nodes']} nodes x {r['pods'] // r['nodes']} pods, {r['resolution_s']} s resolution, "
        f"{r['cycles']} cycles per set",
        "replicas  total mCPU  (ratio)  max RSS MiB  (ratio)  kubelet req/node/cycle  "
        "peer KiB/cycle  full list ms (each replica)",
    ]
    for s in r["sets"]:
        lists = ", ".join(str(p["full_pod_list_ms"]) for p in s["per_replica"])
        lines.append(
            f"{s['replicas']:>8}  {s['total_mcpu']:>10}  {s.get('total_cpu_ratio', 1.0):>7}  "
            f"{s['max_rss_mib']:>11}  {s.get('rss_ratio', 1.0):>7}  "
            f"{s['kubelet_requests_per_node_per_cycle']:>22}  {s['peer_kib_per_cycle_total']:>14}"
            f"  {lists}"
        )
    lines.append(
        f"goals: total CPU <= {GOAL_TOTAL_CPU} x one replica's; RSS per replica <= {GOAL_RSS} x; "
        "1 kubelet request per node per cycle"
    )
    return "\n".join(lines)


@pytest.mark.slow
def test_sharded_replicas_cost(benchmark: Any, tmp_path: Path) -> None:
    nodes = int(os.environ.get("BENCH_SHARD_NODES", "100"))
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
    for s in result["sets"]:
        assert s["exit_codes"] == [0] * s["replicas"]
        # Small clusters, short windows: a cycle boundary may fall either side.
        assert 0.5 <= s["kubelet_requests_per_node_per_cycle"] <= 1.6, s
    print(summary(result))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=3000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--resolution", type=int, default=15, help="seconds (default 15)")
    p.add_argument("--cycles", type=int, default=4)
    p.add_argument("--replicas", default="1,2,3", help="replica counts, the first is the baseline")
    a = p.parse_args()
    counts = tuple(int(x) for x in a.replicas.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-shard-") as tmp:
        r = measure(
            Path(tmp),
            nodes=a.nodes,
            pods_per_node=a.pods_per_node,
            resolution_s=a.resolution,
            cycles=a.cycles,
            counts=counts,
        )
    print(json.dumps(r, indent=2))
    print(summary(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
