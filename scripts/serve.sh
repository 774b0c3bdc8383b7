#!/usr/bin/env bash
# Install everything, then run RhinoBox with the embedded default (SQLite + local disk under ./data).
# Settings come from RHINOBOX_* variables or flags, e.g. scripts/serve.sh --addr 0.0.0.0:8090
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/rhinobox serve "$@"
