"""Fixtures every test directory may use (defined in tests/helpers/fixtures.py)."""

from pathlib import Path

import pytest

from tests.helpers.fixtures import sim, sim_factory

__all__ = ["sim", "sim_factory"]

REAL = Path(__file__).resolve().parent / "real"


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """tests/real (the real-cluster tier, minutes long) runs only when named: `make test-real`."""
    if collection_path != REAL:
        return None
    base = config.invocation_params.dir
    for arg in config.args:
        p = (base / arg.split("::")[0]).resolve()
        if p == REAL or REAL in p.parents:
            return None
    return True
