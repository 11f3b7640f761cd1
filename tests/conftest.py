"""Shared pytest fixtures."""

# The simulator fixtures: `sim` (3 nodes x 4 pods, fast sample refresh) and `sim_factory`.
from kubemetrics_sim.testing import sim, sim_factory  # noqa: F401
