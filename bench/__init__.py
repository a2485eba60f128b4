"""Benchmarks: `make bench` (python -m bench) runs them all and regenerates BENCHMARKS.md."""
