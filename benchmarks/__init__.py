"""Benchmarks: pytest-benchmark suites and the end-to-end load generator (`python -m benchmarks.load`).

They print figures and never fail on speed; docs/dev/performance-log.md records what they measured
and docs/performance.md gives users the headline figures.
"""
