"""Seat, user and other text from agents cannot become a spreadsheet formula in the report's
CSVs (OWASP: a leading quote on cells starting with = + - @ tab or CR, every cell quoted);
the JSON, HTML and PDF keep the true value."""

from __future__ import annotations

import copy
import csv
import io
import re
import subprocess
import uuid
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from floorguard.console.app import create_app
from floorguard.console.auth import sha256_hex
from floorguard.console.reports.daily import build_report
from floorguard.console.reports.render import render
from floorguard.console.store.schema import agents
from floorguard.events import GENESIS, record_hash
from tests.reports.fixture_day import FLOOR
from tests.reports.test_daily_figures import floor_of, report

NAMED = ("=cmd|' /C calc'!A0", "+SUM(1,1)", "@SUM(1)", "-2+3", "\t=1+1", "\r=1+1",
         "=HYPERLINK(\"http://x\",\"y\")")
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def csv_tables(doc: dict[str, Any]) -> dict[str, list[list[str]]]:
    z = zipfile.ZipFile(io.BytesIO(render(doc, "csv")))
    return {n: list(csv.reader(io.StringIO(z.read(n).decode("utf-8"), newline="")))
            for n in z.namelist()}


def expected(text: str) -> str:
    return "'" + text if text.startswith(FORMULA) else text


@pytest.fixture(scope="module")
def base_doc(fixture_stores: dict[str, Engine]) -> dict[str, Any]:
    return report(fixture_stores["sqlite"], floors=[FLOOR])


@settings(max_examples=150, deadline=None)
@given(text=st.text(min_size=1, max_size=40) | st.sampled_from(NAMED))
def test_no_csv_cell_starts_a_formula_and_the_value_reads_back(
        base_doc: dict[str, Any], text: str) -> None:
    doc = copy.deepcopy(base_doc)
    f = floor_of(doc)
    f["operators"][0]["user"] = text
    f["seats"][0]["seat"] = text
    f["violations"][0]["user"] = text
    f["controls"]["print"]["jobs"][0]["title"] = text
    f["coverage"]["agents"][0]["host"] = text
    tables = csv_tables(doc)
    for cells in tables.values():
        for row in cells:
            for cell in row:
                assert not cell.startswith(FORMULA), (cell, text)
    assert tables["operators.csv"][1][2] == expected(text)
    assert tables["seats.csv"][1][2] == expected(text)
    header = tables["violations.csv"][0]
    assert tables["violations.csv"][1][header.index("user")] == expected(text)
    header = tables["prints.csv"][0]
    assert tables["prints.csv"][1][header.index("title")] == expected(text)
    header = tables["coverage.csv"][0]
    assert tables["coverage.csv"][1][header.index("host")] == expected(text)


def test_numbers_stay_numbers(base_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(base_doc)
    floor_of(doc)["hourly"][0]["events"] = -1  # a number is never a formula
    header, first = csv_tables(doc)["hourly.csv"][:2]
    assert first[header.index("events")] == "-1"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, empty_store: Engine) -> Engine:
    return empty_store if request.param == "sqlite" else request.getfixturevalue("empty_pg")


def test_hostile_seat_and_user_names_from_agents(store: Engine, tmp_path: Path) -> None:
    """Through the real ingest API: the CSV neutralises them, the JSON, HTML and PDF
    show them as they are."""
    token = "csv-injection-token-0123456789"
    agent = str(uuid.uuid4())
    with store.begin() as conn:
        conn.execute(agents.insert().values(id=agent, token_hash=sha256_hex(token),
                                            floor=NAMED[0], seat=NAMED[1], enrolled_us=0))
    recs, prev = [], GENESIS
    for seq, (seat, user) in enumerate(zip(NAMED, reversed(NAMED), strict=True), start=1):
        rec = {"id": str(uuid.uuid4()), "seq": seq, "ts": f"2026-11-26T01:0{seq}:00Z",
               "agent": agent, "host": "pc", "seat": seat, "user": user, "control": "usb",
               "kind": "usb.blocked", "severity": "violation", "policy": "p",
               "details": {"recognition": "storage"}, "prev": prev}
        rec["hash"] = prev = record_hash(rec)
        recs.append(rec)
    with TestClient(create_app(engine=store)) as client:
        resp = client.post("/api/v1/events", json={"events": recs},
                           headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200, resp.text
    with store.connect() as conn:
        doc = build_report(conn, date(2026, 11, 26), [NAMED[0]])
    f = floor_of(doc, NAMED[0])
    assert {r["seat"] for r in f["seats"]} == set(NAMED)
    assert {v["user"] for v in f["violations"]} == set(NAMED)
    tables = csv_tables(doc)
    header, *rows = tables["seats.csv"]
    assert {r[header.index("seat")] for r in rows} == {"'" + n for n in NAMED}
    assert {r[0] for r in rows} == {"'" + NAMED[0]}  # the floor column too
    header, *rows = tables["violations.csv"]
    assert {r[header.index("user")] for r in rows} == {"'" + n for n in NAMED}
    assert all(not c.startswith(FORMULA) for t in tables.values() for r in t for c in r)
    html = render(doc, "html").decode()
    assert "+SUM(1,1)" in html and "@SUM(1)" in html and "=cmd|&#39; /C calc&#39;!A0" in html
    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(render(doc, "pdf"))
    try:
        text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                              text=True, check=True).stdout
    except FileNotFoundError:
        pytest.fail("pdftotext is missing: apt-get install poppler-utils")
    flat = re.sub(r"\s+", " ", text)
    assert "+SUM(1,1)" in flat and "@SUM(1)" in flat and "'+SUM" not in flat
