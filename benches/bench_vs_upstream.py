"""kubemetrics against upstream metrics-server v0.8.0, side by side in one run (issue 12).

Both servers run at once with the same flags (deploy/base's arguments) behind the same real
kube-apiserver (peers/bin, `make peers`), scraping the same simulated kubelets
(`kubemetrics-sim --apiserver`, kubelets refreshing every 10-15 s like real ones). After both
serve every node and one more resolution has passed, the CPU (utime+stime from /proc/PID/stat)
of each is read across `--cycles` whole resolutions, then VmRSS/VmHWM; the result is the ratio
kubemetrics / upstream. Last, each server's node and pod lists are checked against the
simulator's truth for the sample pair each value claims (timestamp and window).

Scale run (manual; numbers in docs/PERFORMANCE.md):

    .venv/bin/python -m benches.bench_vs_upstream --nodes 1000 --pods-per-node 30 --cycles 4

`make bench` runs the same at 20 nodes x 10 pods, 2 cycles, through pytest-benchmark (numbers
in extra_info); skipped when the peers are not built.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from kubemetrics_sim.launch import ServerProcess
from tests.helpers.e2e import duration_ms, node_mismatch, rfc3339_seconds
from tests.helpers.proc import cpu_seconds, memory_kib
from tests.helpers.real import GROUP, RealCluster, pod_truth_mismatch, require_peers

RESOLUTION_S = 15.0  # deploy/base's --metric-resolution


def served(real: RealCluster, b: ServerProcess, kind: str) -> list[dict[str, Any]]:
    return list(real.direct(b, f"{GROUP}/v1beta1/{kind}")["items"])


def older_than_history(item: dict[str, Any], hists: list[list[list[int]]]) -> bool:
    """The item's earlier sample (timestamp - window) predates every sample the simulator still
    keeps (4 per container): its value cannot be checked, which is not the same as wrong. It
    happens when two scrapes 15 s apart straddle two kubelet refreshes (10-15 s)."""
    earlier_ms = rfc3339_seconds(item["timestamp"]) * 1000 - duration_ms(item["window"])
    return all(h and earlier_ms < h[0][0] - 1000 for h in hists)


def accuracy(real: RealCluster, b: ServerProcess) -> dict[str, Any]:
    """How many served values are exactly what the truth's samples give (same sample pair)."""
    nodes, pods = served(real, b, "nodes"), served(real, b, "pods")
    truth = real.sim.truth()
    wrong: list[str] = []
    counts = {"nodes_wrong": 0, "nodes_unverifiable": 0, "pods_wrong": 0, "pods_unverifiable": 0}
    for i in nodes:
        t = truth["nodes"][i["metadata"]["name"]]
        m = node_mismatch(i, t)
        if m is None:
            continue
        if older_than_history(i, [t["history"]]):
            counts["nodes_unverifiable"] += 1
        else:
            counts["nodes_wrong"] += 1
            wrong.append(m)
    unknown = 0
    for i in pods:
        key = f"{i['metadata']['namespace']}/{i['metadata']['name']}"
        if key not in truth["pods"]:
            unknown += 1
            continue
        t = truth["pods"][key]
        m = pod_truth_mismatch(i, t)
        if m is None:
            continue
        if older_than_history(i, [c["history"] for c in t["containers"].values()]):
            counts["pods_unverifiable"] += 1
        else:
            counts["pods_wrong"] += 1
            wrong.append(m)
    return {
        "nodes_served": len(nodes),
        "nodes_truth": len(truth["nodes"]),
        "pods_served": len(pods),
        "pods_truth": len(truth["pods"]),
        "pods_not_running": unknown,
        **counts,
        "examples": wrong[:3],
    }


def wait_all_served(real: RealCluster, backends: list[ServerProcess], timeout: float) -> None:
    want = set(real.sim.info["nodes"])
    deadline = time.monotonic() + timeout
    pending = list(backends)
    while pending and time.monotonic() < deadline:
        for b in list(pending):
            try:
                names = {i["metadata"]["name"] for i in served(real, b, "nodes")}
            except OSError:
                continue
            if names >= want:
                pending.remove(b)
        time.sleep(2.0)
    if pending:
        raise RuntimeError(f"not every node served by {[b.name for b in pending]} in {timeout}s")


def run(root: Path, nodes: int, pods_per_node: int, cycles: int) -> dict[str, Any]:
    t0 = time.monotonic()
    real = RealCluster.start(
        root,
        nodes=nodes,
        pods_per_node=pods_per_node,
        refresh_ms=(10_000, 15_000),
        controller_manager=False,
        sim_timeout=3600,
    )
    try:
        t_cluster = time.monotonic() - t0
        backends = [real.backend("upstream"), real.backend("kubemetrics")]
        wait_all_served(real, backends, timeout=max(120.0, nodes / 5))
        time.sleep(RESOLUTION_S)  # one more cycle: warm connections and caches
        cpu0 = {b.name: cpu_seconds(b.pid) for b in backends}
        w0 = time.monotonic()
        time.sleep(RESOLUTION_S * cycles)
        wall = time.monotonic() - w0
        cpu = {b.name: cpu_seconds(b.pid) - cpu0[b.name] for b in backends}
        mem = {b.name: memory_kib(b.pid) for b in backends}
        acc = {b.name: accuracy(real, b) for b in backends}
        sim_state = real.sim.control("GET", "attached/state")
    finally:
        real.stop()
    per: dict[str, Any] = {}
    for name in ("upstream", "kubemetrics"):
        per[name] = {
            "cores": round(cpu[name] / wall, 4),
            "mcpu_per_node": round(1000 * cpu[name] / wall / nodes, 4),
            "rss_mib": round(mem[name]["VmRSS"] / 1024, 1),
            "hwm_mib": round(mem[name]["VmHWM"] / 1024, 1),
            "rss_kib_per_node": round(mem[name]["VmRSS"] / nodes, 2),
            "accuracy": acc[name],
        }
    u, k = per["upstream"], per["kubemetrics"]
    return {
        "nodes": nodes,
        "pods": nodes * pods_per_node,
        "cycles": cycles,
        "window_s": round(wall, 1),
        "cluster_setup_s": round(t_cluster, 1),
        "sim": sim_state,
        "upstream": u,
        "kubemetrics": k,
        "ratio_cpu": round(k["cores"] / u["cores"], 3) if u["cores"] else None,
        "ratio_rss": round(k["rss_mib"] / u["rss_mib"], 3),
        "ratio_hwm": round(k["hwm_mib"] / u["hwm_mib"], 3),
    }


def test_vs_upstream(benchmark: Any, tmp_path: Path) -> None:
    require_peers("metrics-server")
    result: dict[str, Any] = {}

    def go() -> None:
        result.update(run(tmp_path, 20, 10, 2))

    benchmark.pedantic(go, rounds=1, iterations=1)
    benchmark.extra_info.update(result)
    for name in ("upstream", "kubemetrics"):
        acc = result[name]["accuracy"]
        assert acc["nodes_served"] == acc["nodes_truth"], acc
        assert acc["nodes_wrong"] == 0 and acc["pods_wrong"] == 0, acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--pods-per-node", type=int, default=30)
    p.add_argument("--cycles", type=int, default=4)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="vs-upstream-") as d:
        print(json.dumps(run(Path(d), a.nodes, a.pods_per_node, a.cycles), indent=2))


if __name__ == "__main__":
    main()
