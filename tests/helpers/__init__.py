"""Helpers shared by the tests and the benches (imported as `tests.helpers.*`)."""
