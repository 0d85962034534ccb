"""The reports page, the archive and the CLI, against a live console."""

from __future__ import annotations

import hashlib
import io
import json
import re
import stat
import zipfile
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from floorguard.console.reports.schedule import (
    ScheduleError,
    make_scheduler,
    run_daily,
    schedule_config,
)
from floorguard.console.store.db import open_store
from floorguard.console.store.schema import report_archive
from tests.reports import fixture_day
from tests.rigs.console import LiveConsole
from tests.rigs.processes import floorguard

POLICY = """
[floor]
name = "3F north"
max_operators_per_sv = 2
timezone = "Asia/Tokyo"
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[LiveConsole, dict[str, str]]]:
    """A console holding the fixture day, with a schedule, an archive and floor policies
    (one for the module: starting it and loading the day is the slow part)."""
    tmp_path = tmp_path_factory.mktemp("live")
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "3f.toml").write_text(POLICY)
    env = {"FLOORGUARD_REPORT_TIME": "06:00", "FLOORGUARD_REPORT_DIR": str(tmp_path / "arc"),
           "FLOORGUARD_REPORT_POLICIES": str(policies)}
    console = LiveConsole(tmp_path / "console", env=env)
    console.workdir.mkdir(parents=True)
    for name, role in (("admin1", "admin"), ("sv1", "sv"), ("aud1", "auditor")):
        console.add_user(name, role)
    console.start()
    try:
        engine = open_store(console.db_url)
        with httpx.Client(base_url=console.url) as client:
            fixture_day.load(engine, client)
        engine.dispose()
        yield console, env
    finally:
        console.stop()


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/reports")
    assert page.status_code == 200, page.text
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m
    return m.group(1)


QUERY = "/reports/daily?date=2026-11-26&floor=3F+north&format="
SLOW = 120  # seconds: a PDF on a loaded CI machine takes a while; no test asserts speed


def test_auditors_and_admins_get_reports_svs_and_anonymous_do_not(live: Any) -> None:
    console, _env = live
    anon = httpx.Client(base_url=console.url)
    for path in ("/reports", QUERY + "json", "/reports/archive/1"):
        r = anon.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
    assert anon.post("/reports/verify", files={"file": ("x", b"x")}).status_code == 303

    sv = console.login("sv1")
    assert "/reports" not in sv.get("/events").text  # no nav link for SVs
    for path in ("/reports", QUERY + "json", QUERY + "pdf", "/reports/archive/1"):
        assert sv.get(path, timeout=SLOW).status_code == 403, path
    assert sv.post("/reports/archive", data={"date": "2026-11-26"}).status_code == 403

    aud = console.login("aud1")
    assert 'href="/reports"' in aud.get("/events").text
    r = aud.get(QUERY + "json", timeout=SLOW)
    assert r.status_code == 200
    doc = r.json()
    f = doc["floors"][0]
    assert f["summary"]["violations"] == 10 and f["summary"]["agents_expected"] == 4
    # the floor policy the console was pointed at sets the ratio
    assert f["settings"]["max_operators_per_sv"] == 2
    assert f["settings"]["policy_file"].endswith("3f.toml")
    assert r.headers["x-content-sha256"] == hashlib.sha256(r.content).hexdigest()
    pdf = aud.get(QUERY + "pdf&lang=ja", timeout=SLOW)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert "attachment" in pdf.headers["content-disposition"]
    z = zipfile.ZipFile(io.BytesIO(aud.get(QUERY + "csv", timeout=SLOW).content))
    assert "violations.csv" in z.namelist()
    html = aud.get(QUERY + "html", timeout=SLOW)
    assert html.headers["content-type"].startswith("text/html")
    assert "script-src" not in html.headers["content-security-policy"]
    assert "<svg" in html.text
    assert aud.get(QUERY + "docx").status_code == 422
    assert aud.get("/reports/daily?date=26-11-2026").status_code == 422

    admin = console.login("admin1")
    assert admin.get(QUERY + "json", timeout=SLOW).json()["floors"][0]["summary"] == \
        f["summary"]


def test_archive_is_read_only_listed_with_its_digest_and_checkable(live: Any,
                                                                   tmp_path: Path) -> None:
    console, env = live
    aud = console.login("aud1")
    assert aud.post("/reports/archive", data={"date": "2026-11-26", "format": "pdf",
                                              "lang": "ja"}).status_code == 403  # no CSRF
    page = aud.post("/reports/archive", data={"csrf": csrf_of(aud), "date": "2026-11-26",
                                              "format": "json", "lang": "en"}, timeout=SLOW)
    assert page.status_code == 200, page.text
    engine = open_store(console.db_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(report_archive)).one()
    engine.dispose()
    path = Path(row.path)
    assert path.parent.parent == Path(env["FLOORGUARD_REPORT_DIR"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == row.sha256 and len(data) == row.size
    assert row.sha256 in page.text and row.sha256 in aud.get("/reports").text
    assert row.created_by == "aud1"

    got = aud.get(f"/reports/archive/{row.id}")
    assert got.status_code == 200 and got.content == data

    csrf = csrf_of(aud)
    ok = aud.post("/reports/verify", data={"csrf": csrf},
                  files={"file": ("copy.json", data, "application/json")})
    assert 'data-result="match"' in ok.text
    altered = data.replace(b'"violations": 10', b'"violations": 9')
    assert altered != data
    bad = aud.post("/reports/verify", data={"csrf": csrf},
                   files={"file": ("copy.json", altered, "application/json")})
    assert 'data-result="nomatch"' in bad.text
    assert aud.post("/reports/verify", data={"csrf": "nope"},
                    files={"file": ("copy.json", data)}).status_code == 403

    copy = tmp_path / "copy.json"
    copy.write_bytes(data)
    res = floorguard("report", "verify", str(copy), "--db", console.db_url)
    assert res.returncode == 0, res.stderr
    assert row.sha256 in res.stdout and "2026-11-26" in res.stdout
    copy.write_bytes(altered)
    res = floorguard("report", "verify", str(copy), "--db", console.db_url)
    assert res.returncode == 1 and "matches no archived report" in res.stdout

    # the schedule the console runs is shown on the page
    assert "06:00" in aud.get("/reports").text


def test_cli_writes_the_report_from_the_store(live: Any, tmp_path: Path) -> None:
    console, env = live
    out = tmp_path / "r.json"
    res = floorguard("report", "daily", "--date", "2026-11-26", "--format", "json", "-o",
                     str(out), "--db", console.db_url, "--floor", "3F north",
                     env={"FLOORGUARD_REPORT_POLICIES": env["FLOORGUARD_REPORT_POLICIES"]})
    assert res.returncode == 0, res.stderr
    f = json.loads(out.read_text())["floors"][0]
    assert f["summary"]["chains_with_faults"] == 1
    assert f["settings"]["max_operators_per_sv"] == 2
    pdf = tmp_path / "r.pdf"
    res = floorguard("report", "daily", "--date", "2026-11-26", "--format", "pdf", "-o",
                     str(pdf), "--db", console.db_url, "--lang", "ja", "--deep", timeout=SLOW)
    assert res.returncode == 0, res.stderr
    assert pdf.read_bytes().startswith(b"%PDF")
    res = floorguard("report", "daily", "--date", "yesterday", "--format", "json",
                     "--db", console.db_url)
    assert res.returncode == 2 and "YYYY-MM-DD" in res.stderr
    bad = tmp_path / "badpol"
    bad.mkdir()
    (bad / "x.toml").write_text("[floor]\nname = 3\n")
    res = floorguard("report", "daily", "--date", "2026-11-26", "--format", "json",
                     "--db", console.db_url, env={"FLOORGUARD_REPORT_POLICIES": str(bad)})
    assert res.returncode == 1 and "x.toml:2" in res.stderr


def test_schedule_settings_are_checked() -> None:
    assert schedule_config({}) is None
    cfg = schedule_config({"FLOORGUARD_REPORT_TIME": "6:30", "FLOORGUARD_REPORT_DIR": "/a",
                           "FLOORGUARD_REPORT_LANGS": "en,ja"})
    assert cfg is not None and (cfg.hour, cfg.minute, cfg.langs) == (6, 30, ("en", "ja"))
    for env, message in (
            ({"FLOORGUARD_REPORT_TIME": "25:00"}, "write HH:MM"),
            ({"FLOORGUARD_REPORT_TIME": "06:00", "FLOORGUARD_REPORT_TZ": "Mars/Olympus"},
             "IANA"),
            ({"FLOORGUARD_REPORT_TIME": "06:00", "FLOORGUARD_REPORT_DIR": "rel"}, "absolute"),
            ({"FLOORGUARD_REPORT_TIME": "06:00", "FLOORGUARD_REPORT_DIR": "/a",
              "FLOORGUARD_REPORT_FORMATS": "pdf,docx"}, "FLOORGUARD_REPORT_FORMATS")):
        with pytest.raises(ScheduleError, match=message):
            schedule_config(env)


def test_console_refuses_to_start_with_a_bad_schedule(tmp_path: Path) -> None:
    console = LiveConsole(tmp_path / "c", env={"FLOORGUARD_REPORT_TIME": "7pm"})
    with pytest.raises(AssertionError) as err:
        console.start(timeout=60)
    console.stop()
    assert "FLOORGUARD_REPORT_TIME='7pm': write HH:MM" in str(err.value)


def test_scheduled_job_archives_the_previous_day(tmp_path: Path) -> None:
    from tests.reports.conftest import load_fixture_day

    engine = open_store(f"sqlite:///{tmp_path}/c.db")
    try:
        load_fixture_day(engine)
        cfg = schedule_config({"FLOORGUARD_REPORT_TIME": "06:00",
                               "FLOORGUARD_REPORT_DIR": str(tmp_path / "arc"),
                               "FLOORGUARD_REPORT_FORMATS": "json,csv"})
        assert cfg is not None
        now = datetime(2026, 11, 26, 22, 0, tzinfo=UTC)  # 07:00 on the 27th in Tokyo
        scheduler = make_scheduler(engine, cfg, clock=lambda: now)
        job = scheduler.get_job("daily-report")
        nxt = job.trigger.get_next_fire_time(None, now)
        assert nxt.isoformat() == "2026-11-28T06:00:00+09:00"
        job.func()  # what the scheduler runs at 06:00
        files = sorted((tmp_path / "arc" / "2026-11-26").iterdir())
        assert sorted(p.name.rsplit("Z", 1)[1] for p in files) == [".csv.zip", ".json"]
        assert all(p.name.startswith("floorguard-daily-2026-11-26-all-en-") for p in files)
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o444 for p in files)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(report_archive)).all()
        assert {r.format for r in rows} == {"json", "csv"}
        assert all(r.created_by == "schedule" and r.day == "2026-11-26" for r in rows)
        for r in rows:
            assert hashlib.sha256(Path(r.path).read_bytes()).hexdigest() == r.sha256
        doc = json.loads(next(p for p in files if p.suffix == ".json").read_text())
        # the scheduled copy re-hashes the stored rows
        assert doc["floors"][1]["integrity"]["method"] == "stored rows re-hashed"
        # a second run never overwrites: a new file beside the first
        assert len(run_daily(engine, cfg, date(2026, 11, 26))) == 2
        assert len(list((tmp_path / "arc" / "2026-11-26").iterdir())) == 4
    finally:
        engine.dispose()
