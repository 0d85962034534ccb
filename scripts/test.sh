#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs the whole test suite: lint, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k policy).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests bench scripts
.venv/bin/mypy
before=$(git status --porcelain 2>/dev/null || true)
# pytest's own exit code, including 5 (no test ran), is the run's: set -e stops here.
.venv/bin/python -m pytest "$@"
after=$(git status --porcelain 2>/dev/null || true)
if [ "$before" != "$after" ]; then
  echo "The test run changed the working tree (a test must write only to temporary or" >&2
  echo "ignored folders):" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
