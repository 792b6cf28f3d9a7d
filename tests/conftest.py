"""Shared pytest set-up: a failed test that used servers of the grid-in-a-box carries their logs (grid_logs)."""

from __future__ import annotations

pytest_plugins = ["grid_logs", "pytester"]
