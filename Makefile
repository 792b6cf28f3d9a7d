# The two commands of README.md. Both set the machine up first (idempotent, fast when done).
.PHONY: setup demo test lint bench
setup:
	@scripts/bootstrap.sh

demo: setup
	.venv/bin/python -m diracx_bridge.demo

test: setup lint
	.venv/bin/python -m pytest

lint: setup
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench

bench: setup
	.venv/bin/python -m bench
