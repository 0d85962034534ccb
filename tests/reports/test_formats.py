"""CSV, HTML and PDF carry the same figures as the JSON; the Japanese PDF embeds a CJK
font; the strings are all in the catalog."""

from __future__ import annotations

import csv
import gettext
import io
import json
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from babel.messages.extract import extract_from_file
from sqlalchemy.engine import Engine

from floorguard.console.reports.render import CSV_TABLES, LOCALE_DIR, csv_cell, render
from tests.reports.fixture_day import A3, FLOOR
from tests.reports.test_daily_figures import floor_of, report

TEMPLATE = (Path(__file__).resolve().parents[2]
            / "src/floorguard/console/reports/templates/daily.html")


def _cells(value: str, like: Any) -> Any:
    """Read a CSV cell back into the JSON value it came from."""
    if like is None:
        return None if value == "" else value
    if isinstance(like, bool):
        return {"true": True, "false": False}[value]
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    if isinstance(like, list):
        return value.split(";") if value else []
    if isinstance(like, dict):
        return json.loads(value)
    return value


def test_csv_zip_parses_back_to_the_json(store: Engine) -> None:
    doc = report(store)
    z = zipfile.ZipFile(io.BytesIO(render(doc, "csv")))
    assert set(z.namelist()) == {f"{n}.csv" for n in CSV_TABLES} | {"mapping.csv"}
    for name, (cols, rows_of) in CSV_TABLES.items():
        rows = list(csv.reader(io.StringIO(z.read(f"{name}.csv").decode("utf-8"))))
        assert rows[0] == ["floor", "date", *cols], name
        expected = [(f["floor"], f["date"], r) for f in doc["floors"] for r in rows_of(f)]
        assert len(rows) - 1 == len(expected), name
        for got, (floor, day, want) in zip(rows[1:], expected, strict=True):
            assert got[:2] == [floor, day]
            back = {c: _cells(v, want.get(c)) for c, v in zip(cols, got[2:], strict=True)}
            assert back == {c: want.get(c) for c in cols}, name
            assert [csv_cell(want.get(c)) for c in cols] == got[2:]
    # a few figures read straight from the files, as an auditor's spreadsheet would
    coverage = list(csv.DictReader(io.StringIO(z.read("coverage.csv").decode())))
    a3 = next(r for r in coverage if r["agent"] == A3)
    assert (a3["hours_heard"], a3["events"], a3["reporting"]) == ("4", "5", "true")
    integrity = list(csv.DictReader(io.StringIO(z.read("integrity.csv").decode())))
    assert [r["verified"] for r in integrity if r["floor"] == FLOOR] == ["true", "true",
                                                                         "false"]
    mapping = list(csv.DictReader(io.StringIO(z.read("mapping.csv").decode())))
    assert mapping[0]["control"] == "usb"
    # equal reports zip to equal bytes (fixed entry times), so digests are reproducible
    assert render(doc, "csv") == render(doc, "csv")


def _pdf_text(pdf: bytes, tmp_path: Path, name: str) -> tuple[str, str]:
    path = tmp_path / name
    path.write_bytes(pdf)
    try:
        text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True,
                              text=True, check=True).stdout
        fonts = subprocess.run(["pdffonts", str(path)], capture_output=True, text=True,
                               check=True).stdout
    except FileNotFoundError:
        pytest.fail("pdftotext/pdffonts are missing: apt-get install poppler-utils")
    return text, fonts


def test_pdf_holds_the_key_figures_and_embeds_a_cjk_font(fixture_stores: dict[str, Engine],
                                                          tmp_path: Path) -> None:
    store = fixture_stores["sqlite"]
    for lang, title, silent in (("en", "Daily compliance summary", "Silent periods"),
                                ("ja", "日次コンプライアンス報告", "無応答期間")):
        doc = report(store, lang=lang, floors=[FLOOR])
        text, fonts = _pdf_text(render(doc, "pdf"), tmp_path, f"{lang}.pdf")
        flat = re.sub(r"\s+", " ", text)
        assert title in flat
        assert silent in flat
        f = floor_of(doc)
        assert "2026-11-26T11:00:00+09:00" in flat  # the silent period's start
        assert "form" in flat and "sv1" in flat and "sv2" in flat  # prints and deciders
        for label, value in ((("Agents expected", "稼働予定エージェント数")[lang == "ja"], 4),
                             (("Violations", "違反")[lang == "ja"], 10)):
            assert re.search(re.escape(label) + r"\s+" + str(value), flat), label
        assert f["policies"]["changes"][-1]["hash"][:16] in flat  # the policy change
        assert "processes.killed" in flat and "floor.sv_ratio_exceeded" in flat
        embedded = [line for line in fonts.splitlines()[2:] if "CJK" in line
                    and re.search(r"\byes\s+yes\s+yes\b", line)]
        assert embedded, fonts
        if lang == "ja":
            assert "座席" in flat and "証跡の完全性" in flat
            assert "個人情報の技術的安全管理措置" in flat  # the mapping, in Japanese


def test_html_shows_silence_chain_fault_policy_change_and_ratio(store: Engine) -> None:
    html = render(report(store, floors=[FLOOR]), "html").decode()
    assert "still silent" not in html
    assert "2026-11-26T12:30:00+09:00" in html  # the silence ended
    assert "faults found" in html and "first bad seq" in html
    assert "Policy changes" in html and "222222222222" in html
    assert "floor.sv_ratio_exceeded" in html
    assert html.count("<svg") == 2
    assert "JIS Q 15001" in html


def test_every_report_string_has_a_japanese_translation() -> None:
    ids = {m[1] for m in extract_from_file("jinja2", str(TEMPLATE),
                                           options={"extensions": "jinja2.ext.i18n"})}
    assert len(ids) > 50
    ja = gettext.translation("reports", str(LOCALE_DIR), languages=["ja"])
    untranslated = sorted(i for i in ids if isinstance(i, str) and ja.gettext(i) == i
                          and i != "USB")
    assert untranslated == []


def test_an_open_silence_runs_to_the_end_of_the_day() -> None:
    from collections import namedtuple

    from floorguard.console.reports.daily import Window, silent_periods_of

    Row = namedtuple("Row", "agent kind ts_us details")
    w = Window.of(__import__("datetime").date(2026, 11, 26), "Asia/Tokyo")
    start = w.start_us + 22 * 3_600_000_000
    periods = silent_periods_of(w, [Row("a", "agent.silent", start, {})], w.end_us,
                                lambda a: "T-09")
    assert periods == [{"agent": "a", "seat": "T-09", "start": "2026-11-26T22:00:00+09:00",
                        "end": None, "minutes_in_day": 120.0}]
