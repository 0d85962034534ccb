"""Catalogs and language choice: every UI string extracted from the code has a Japanese
translation, the committed .mo files match the .po sources, placeholders survive
translation, and the language of a request is chosen as documented."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from floorguard.console.web.i18n import (
    LOCALE_DIR,
    choose_lang,
    localtime,
    negotiate,
    parse_accept_language,
    translate,
)
from tests.rigs.processes import REPO


def _po(lang: str):  # type: ignore[no-untyped-def]
    with open(LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po", "rb") as f:
        return read_po(f, locale=lang)


def test_every_ui_string_in_the_code_has_a_japanese_translation(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    res = subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F",
                          str(REPO / "babel.cfg"), "-k", "N_", "-o", str(pot), str(REPO)],
                         cwd=REPO, capture_output=True, text=True)
    if res.returncode != 0:  # older Babel has no module entry point: use the script
        res = subprocess.run([str(Path(sys.executable).parent / "pybabel"), "extract", "-F",
                              str(REPO / "babel.cfg"), "-k", "N_", "-o", str(pot), "."],
                             cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with open(pot, "rb") as f:
        extracted = {m.id for m in read_po(f) if m.id}
    assert len(extracted) > 80
    ja = {m.id: m.string for m in _po("ja") if m.id}
    missing = sorted(extracted - {k for k, v in ja.items() if v})
    assert not missing, ("untranslated; run scripts/catalogs.sh and translate in "
                         f"locale/ja/LC_MESSAGES/messages.po: {missing}")


def test_compiled_catalogs_match_their_sources() -> None:
    for lang in ("ja", "en"):
        with open(LOCALE_DIR / lang / "LC_MESSAGES" / "messages.mo", "rb") as f:
            mo = {m.id: m.string for m in read_mo(io.BytesIO(f.read())) if m.id}
        po = {m.id: m.string for m in _po(lang) if m.id and m.string}
        assert mo == po, f"{lang}: run 'pybabel compile -d src/floorguard/console/web/locale'"


def test_translations_keep_their_placeholders() -> None:
    for m in _po("ja"):
        if m.id and m.string:
            assert sorted(re.findall(r"%\(\w+\)s", m.id)) == sorted(
                re.findall(r"%\(\w+\)s", m.string)), m.id


def test_language_from_accept_language_and_user_choice() -> None:
    assert parse_accept_language("en;q=0.5, ja-JP, fr;q=0") == ["ja-JP", "en"]
    assert negotiate("ja-JP,ja;q=0.9,en;q=0.8") == "ja"
    assert negotiate("fr-FR, en-GB;q=0.5") == "en"
    assert negotiate("de") == "en" and negotiate(None) == "en"
    assert negotiate("en;q=0.2, ja;q=0.9") == "ja"
    assert choose_lang("en", "ja") == "en"
    assert choose_lang(None, "ja") == "ja"
    assert choose_lang("xx", "ja") == "ja"
    assert translate("ja", "Violations") == "違反"
    assert translate("en", "Violations") == "Violations"


def test_local_time_in_the_floor_zone() -> None:
    us = 1_764_286_200_000_000  # 2025-11-27T23:30:00Z
    assert localtime(us, "Asia/Tokyo") == "2025-11-28 08:30:00"
    assert localtime(us, "UTC") == "2025-11-27 23:30:00"
    assert localtime(None) == ""


def test_kind_labels_name_real_kinds_and_read_in_japanese() -> None:
    from floorguard.console.web.i18n import KIND_LABELS, template_context
    from floorguard.events import KINDS

    assert set(KIND_LABELS) <= KINDS
    assert template_context("ja")["kind_label"]("usb.blocked") == "USB機器をブロック"
    assert template_context("en")["kind_label"]("usb.blocked") == "USB device blocked"
    assert template_context("ja")["kind_label"]("some.new_kind") == "some.new_kind"
