#!/usr/bin/env bash
# One-time (and idempotent) set-up of a fresh Debian 12 machine for diracx-bridge:
# system packages, the Python environment (.venv) with DIRAC 9.1.22, diracx 0.7.0 and the bridge.
# Re-running it checks the stamps and changes nothing (about a second).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(mariadb-server mariadb-client swig libssl-dev libmariadb-dev pkg-config git build-essential openssl)
UV_VERSION=0.9.9
VENV=.venv

log() { printf '[bootstrap] %s\n' "$*" >&2; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  # The MariaDB package tries to start a system-wide server; the grid-in-a-box runs its own
  # private one on loopback, so the distribution service is not needed (policy-rc.d may deny it).
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=""
for cand in python3.11 /root/.pyenv/versions/3.11.*/bin/python3.11 /usr/bin/python3.11 python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PY=$("$cand" -c "import sys; print(sys.executable)"); break
  fi
done
[ -n "$PY" ] || { log "no Python 3.11 found (DIRAC 9.1.22 and the lock file target 3.11)"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
if [ ! -x "$VENV/bin/uv" ] || [ "$("$VENV/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$VENV/bin/python" -m pip install -q "uv==$UV_VERSION"
fi

stamp=$(cat requirements/lock.txt requirements/overrides.txt setup.cfg pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$VENV/.bootstrap-stamp" 2>/dev/null)" != "$stamp" ]; then
  log "installing the locked environment (requirements/lock.txt)"
  # --override drops DIRAC's unbuildable gfal2-python requirement (see requirements/overrides.txt).
  # The certificate bundle variables of this machine kind are not the business of pip/uv here.
  # --compile-bytecode: machines of this kind export PYTHONDONTWRITEBYTECODE=1, so without .pyc
  # files written now every DIRAC process would recompile DIRAC on each start.
  "$VENV/bin/uv" pip install --python "$VENV/bin/python" -q --compile-bytecode \
    --override requirements/overrides.txt -c requirements/lock.txt -e ".[test]"
  echo "$stamp" > "$VENV/.bootstrap-stamp"
fi
log "ready: $VENV ($("$VENV/bin/python" -c 'import DIRAC, diracx_bridge; print("DIRAC", DIRAC.version)'))"
