"""Benchmarks of rtdash; results in BENCHMARKS.md. Shared load generator in bench.loadgen."""
