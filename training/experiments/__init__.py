"""Experiments and benchmarks that are not tests: run by hand, report numbers."""
