"""The real-cluster tier (`make test-real`): one control plane, simulator and server per session.

Collected only when named (`pytest tests/real`); skipped, saying so, when the peers are not
built (`make peers`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.real import RealCluster, require_peers

# The HPA acts within seconds here instead of minutes: sync every 5 s, scale down after 20 s of
# lower recommendations (defaults 15 s and 5 min). Nothing else about the controller changes.
KCM_ARGS = (
    "--horizontal-pod-autoscaler-sync-period=5s",
    "--horizontal-pod-autoscaler-downscale-stabilization=20s",
)
NODES = 4
PODS_PER_NODE = 5


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    """4 nodes x 5 pods in a real kube-apiserver; kubemetrics behind both APIServices."""
    require_peers()
    c = RealCluster.start(
        tmp_path_factory.mktemp("real"), nodes=NODES, pods_per_node=PODS_PER_NODE, kcm_args=KCM_ARGS
    )
    try:
        km = c.backend("kubemetrics")
        c.route("v1beta1", km)
        c.route("v1", km)
        c.wait_served("v1", timeout=180)
        c.wait_served("v1beta1", timeout=60)
        yield c
    finally:
        c.stop()
