#!/usr/bin/env bash
# Regenerate requirements/lock.txt from setup.cfg (run after changing dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/uv pip compile setup.cfg --extra test --override requirements/overrides.txt \
  --python-version 3.11 --no-header -o requirements/lock.txt
