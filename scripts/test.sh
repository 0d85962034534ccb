#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite: lint, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k policy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
