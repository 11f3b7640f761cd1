"""Fixtures every test directory may use (defined in tests/helpers/fixtures.py)."""

from pathlib import Path

import pytest

from tests.helpers.fixtures import sim, sim_factory

__all__ = ["sim", "sim_factory"]

HERE = Path(__file__).resolve().parent
# Tiers that run only when named: tests/real (the real-cluster tier, `make test-real`) and
# tests/soak (the 10-minute chaos soak, `make soak`); both are minutes long.
NAMED_ONLY = (HERE / "real", HERE / "soak")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if collection_path not in NAMED_ONLY:
        return None
    base = config.invocation_params.dir
    for arg in config.args:
        p = (base / arg.split("::")[0]).resolve()
        if p == collection_path or collection_path in p.parents:
            return None
    return True
