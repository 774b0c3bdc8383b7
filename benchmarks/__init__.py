"""Benchmarks: pytest-benchmark suites and the end-to-end load generator (`python -m benchmarks.load`).

They print figures and never fail on speed; docs/performance.md records what they measured.
"""
