"""The server's memory behind a real kube-apiserver against the simulator's API server, same size,
same run (docs/PERFORMANCE.md).

kube-apiserver sends what the simulator does not: pods carry `managedFields` (~1.9 KB of
metadata per pod, four times the simulator's), and the first list (resourceVersion=0, from the
watch cache) comes whole. Reading that list at once left the server ~10 KB per pod bigger behind
the real API server (445 against ~160 MiB at 1,000 x 30); read in pieces the two are alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubemetrics_sim.launch import ServerProcess, SimProcess, server_args
from tests.helpers.proc import memory_kib
from tests.helpers.real import RealCluster, insecure_context, require_peers

NODES, PODS_PER_NODE = 300, 30  # 9,000 pods, ~17 MB of pod metadata from kube-apiserver
RESOLUTION_S = 15.0  # deploy/base's, and the simulator-side server's


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    require_peers()
    c = RealCluster.start(
        tmp_path_factory.mktemp("realmem"),
        nodes=NODES,
        pods_per_node=PODS_PER_NODE,
        controller_manager=False,
        sim_timeout=900,
    )
    try:
        yield c
    finally:
        c.stop()


def wait_ready(server: ServerProcess, timeout: float) -> None:
    """Until /readyz says the server has metrics to serve (two scrapes of every node)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _, _ = server.get("/readyz", context=insecure_context())
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"{server.name} not ready after {timeout}s:\n{server.log_tail()}")


def test_rss_behind_the_real_api_server_is_the_simulators(
    cluster: RealCluster, tmp_path: Path
) -> None:
    real = cluster.backend("kubemetrics")
    sim = SimProcess(
        tmp_path / "sim", nodes=NODES, pods_per_node=PODS_PER_NODE, seed=7, ready_timeout=300
    ).start()
    try:
        on_sim = ServerProcess(tmp_path / "km-sim", server_args(sim, tmp_path / "km-sim")).start()
        try:
            wait_ready(real, 180)
            wait_ready(on_sim, 180)
            time.sleep(3 * RESOLUTION_S)  # a few whole cycles, with the scrape loop running
            mem_real, mem_sim = memory_kib(real.pid), memory_kib(on_sim.pid)
        finally:
            on_sim.stop()
    finally:
        sim.stop()
    rss_real, rss_sim = mem_real["VmRSS"] / 1024, mem_sim["VmRSS"] / 1024
    hwm_real, hwm_sim = mem_real["VmHWM"] / 1024, mem_sim["VmHWM"] / 1024
    figures = f"RSS {rss_real:.0f} vs {rss_sim:.0f} MiB, peak {hwm_real:.0f} vs {hwm_sim:.0f} MiB"
    print(f"behind kube-apiserver vs the simulator, {NODES} x {PODS_PER_NODE}: {figures}")
    # Generous: alike within 35% (reading the first list whole: ~1.9x here, 2.7x at 1,000 x 30).
    assert rss_real < 1.35 * rss_sim, figures
    assert hwm_real < 1.35 * hwm_sim, figures
