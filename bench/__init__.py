"""Benchmarks against the local cluster; each writes its section of docs/benchmarks.md."""
