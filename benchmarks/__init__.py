"""Benchmarks: `python -m benchmarks [name ...]` (`make bench`) runs them, writes RESULTS.md."""
