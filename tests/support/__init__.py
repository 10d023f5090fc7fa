"""Helpers and reference implementations for the tests (and the benches)."""
