"""Benchmarks of the auditlog service; results are written to bench/results/."""
