#!/usr/bin/env bash
# Install everything (including test tools and the real servers the tests use), then run the whole
# suite: ruff, mypy, pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test $(grep -v -E "^\s*(#|$)" scripts/test-packages.txt | tr "\n" " ")
.venv/bin/ruff check rhinobox tests benchmarks
.venv/bin/ruff format --check rhinobox tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
