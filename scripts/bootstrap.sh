#!/usr/bin/env bash
# Install what RhinoBox needs on a fresh Debian machine: system packages (libmagic), a virtualenv in
# .venv, the package itself, and the web page (Node.js/npm from Debian, npm packages from web/package-lock.json).
# Idempotent; pass extra Debian packages as arguments.
# Use: scripts/bootstrap.sh [--test] [debian-package...]
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; shift; fi
# g++ and libre2-dev: pip builds the compiled type-detection filter (rhinobox/ingest/magic_*.cc),
# with Hyperscan where Debian has it (amd64) to search text.
packages=(libmagic1 python3-venv curl g++ libre2-dev "$@")
if [ "$(dpkg --print-architecture)" = amd64 ]; then packages+=(libhyperscan-dev); fi

missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".${extras}" 2>&1 | grep -v -E "^(WARNING|  )" || true
.venv/bin/python -c "import rhinobox, magic, blake3, aiohttp, aiosqlite, uvloop, python_multipart" \
  || { echo "bootstrap: installation is incomplete" >&2; exit 1; }
.venv/bin/python -c "import sys; from rhinobox.ingest.magic_native import native_library; sys.exit(native_library() is None)" \
  || echo "bootstrap: warning: the compiled type-detection filter was not built (g++, libre2-dev): typing costs more CPU" >&2

# The web page (web/, served at /): Node.js and npm from Debian when missing, npm packages exactly as the
# committed lockfile names them (reinstalled only when it changed), then an esbuild build into web/dist/.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "bootstrap: installing Debian packages: nodejs npm" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
if ! cmp -s web/package-lock.json web/node_modules/.rhinobox-installed-lock; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
  cp web/package-lock.json web/node_modules/.rhinobox-installed-lock
fi
(cd web && npm run --silent build >/dev/null) || { echo "bootstrap: building the web page failed" >&2; exit 1; }
