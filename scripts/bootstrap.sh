#!/usr/bin/env bash
# Install what RhinoBox needs on a fresh Debian machine: system packages (libmagic), a virtualenv in
# .venv, and the package itself. Idempotent; pass extra Debian packages as arguments.
# Use: scripts/bootstrap.sh [--test] [debian-package...]
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; shift; fi
packages=(libmagic1 python3-venv curl "$@")

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
