"""Benchmarks, each run as a script (``.venv/bin/python bench/bench_x.py --help``).

A package so that the benchmarks, the tests and mypy name their modules the same way:
``bench.accel``, ``bench.bench_forward``.
"""
