#!/usr/bin/env bash
# Re-extract the console's UI strings and update and compile the ja and en catalogs.
# Run after adding or changing a string, then translate the new msgids in
# src/floorguard/console/web/locale/ja/LC_MESSAGES/messages.po and run it again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL=${PYBABEL:-.venv/bin/pybabel}
LOCALE=src/floorguard/console/web/locale
"$PYBABEL" extract -F babel.cfg -k N_ --no-location --sort-output --omit-header \
  -o "$LOCALE/messages.pot" . >/dev/null
for lang in ja en; do
  if [ -f "$LOCALE/$lang/LC_MESSAGES/messages.po" ]; then
    "$PYBABEL" update --no-fuzzy-matching -i "$LOCALE/messages.pot" \
      -d "$LOCALE" -l "$lang"
  else
    "$PYBABEL" init -i "$LOCALE/messages.pot" -d "$LOCALE" -l "$lang"
  fi
done
"$PYBABEL" compile --use-fuzzy -d "$LOCALE"
