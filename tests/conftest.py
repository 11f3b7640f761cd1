"""Fixtures every test directory may use (defined in tests/helpers/fixtures.py)."""

from tests.helpers.fixtures import sim, sim_factory

__all__ = ["sim", "sim_factory"]
