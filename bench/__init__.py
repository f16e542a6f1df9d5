"""Benchmarks behind `make bench`; figures land in BENCHMARKS.md."""
