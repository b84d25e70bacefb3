"""Benchmarks: how close the map-reduce pipeline runs to the physical limit (see bench/README.md)."""
