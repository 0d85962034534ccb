#!/usr/bin/env bash
# Runs every benchmark and prints its figures. Needs the venv (scripts/setup.sh).
# Extra arguments are not passed on; run a script alone for its options (--help).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
echo "== agent idle footprint"; "$PY" bench/agent_footprint.py
echo "== journal append rate"; "$PY" bench/journal_append.py
echo "== console ingest rate"; "$PY" bench/console_ingest.py
echo "== daily report (100k and 1M events, SQLite and PostgreSQL)"; PYTHONPATH=src "$PY" -m bench.report_daily
