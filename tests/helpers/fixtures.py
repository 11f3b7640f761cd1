"""Pytest fixtures: thin wrappers over `kubemetrics_sim.launch` (the one launcher)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubemetrics_sim.launch import SimProcess


@pytest.fixture
def sim_factory(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start simulators with custom arguments; every one is stopped at teardown."""
    started: list[SimProcess] = []

    def make(**kwargs: Any) -> SimProcess:
        kwargs.setdefault("refresh_ms", (1000, 1500))
        s = SimProcess(tmp_path / f"sim{len(started)}", **kwargs)
        started.append(s)
        return s.start()

    try:
        yield make
    finally:
        for s in started:
            s.stop()


@pytest.fixture
def sim(sim_factory: Callable[..., SimProcess]) -> SimProcess:
    """3 nodes × 4 pods with 1–1.5 s sample refresh (so tests see new samples quickly)."""
    return sim_factory(nodes=3, pods_per_node=4)
