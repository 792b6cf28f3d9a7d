"""Benchmarks of the bridge: measured ratios, not tests (``make bench`` runs them all).

Each ``bench/*_bench.py`` is a standalone script (``.venv/bin/python bench/<name>_bench.py``);
this file only makes ``python -m bench`` (:mod:`bench.__main__`) possible from the repo root.
"""
