"""Benchmarks against the tools a user would use instead; `make bench [BENCH=name]`."""
