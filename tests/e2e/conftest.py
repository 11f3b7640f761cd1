"""One simulator + server for the read-only end-to-end modules (started once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.e2e import KUBECTL, Cluster


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """6 nodes x 5 pods (seed 11), nothing injected: tests here must not change the cluster."""
    with Cluster.start(tmp_path_factory.mktemp("e2e"), nodes=6, pods_per_node=5, seed=11) as c:
        yield c


@pytest.fixture
def kubectl_cluster(cluster: Cluster) -> Cluster:
    if KUBECTL is None:
        pytest.skip("kubectl not installed")
    return cluster
