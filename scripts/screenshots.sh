#!/usr/bin/env bash
# Refreshes the committed screenshots in docs/screenshots/ from the browser tests. An
# ordinary test run writes them to build/screenshots/ and leaves the tree clean.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FLOORGUARD_SCREENSHOTS="$(pwd)/docs/screenshots" exec .venv/bin/python -m pytest -q \
  tests/console/test_browser.py -k screenshots "$@"
