"""The reports page: generate the daily summary on demand, list and download archived
reports with their SHA-256, and check a copy's digest. Auditors and admins only; SVs and
anonymous visitors are refused on the server."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from floorguard.console.api.limits import RowId
from floorguard.console.auth import User, audit, check_csrf, check_floor, client_ip, require
from floorguard.console.reports import archive as arch
from floorguard.console.reports import schedule
from floorguard.console.reports.daily import build_report, list_floors
from floorguard.console.reports.render import FORMATS, LANGS, MEDIA_TYPES, SUFFIXES, render

router = APIRouter(include_in_schema=False)

AUDITORS = require("admin", "auditor")
MAX_UPLOAD = 512 * 1024 * 1024
# The report is a standalone document with its own inline style sheet and no scripts.
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
              "frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def _whole_site(user: User) -> None:
    """Archived reports cover every floor: not for an auditor scoped to some floors."""
    if user.floors is not None:
        raise HTTPException(403, "archived reports cover every floor, and your account is "
                                 "limited to some floors; download the daily report for "
                                 "your floors instead")


def _page(request: Request, context: dict[str, object], status: int = 200) -> HTMLResponse:
    from floorguard.console.web.site import render as render_page

    user: User = request.state.user
    with request.app.state.engine.connect() as conn:
        rows = arch.archived(conn) if user.floors is None else []
        floors = [f for f in list_floors(conn, date.today()) if user.sees(f)]
    cfg = getattr(request.app.state, "report_schedule", None)
    return render_page(request, "reports.html", {
        "archive": rows, "floors": floors, "formats": FORMATS, "langs": LANGS,
        "schedule": cfg, "next_run": schedule.next_run(request.app),
        "today": date.today().isoformat(), "verify": None, **context}, status)


@router.get("/reports")
def reports_page(request: Request, user: Annotated[User, Depends(AUDITORS)]) -> HTMLResponse:
    return _page(request, {})


def _day(text: str) -> date:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"date {text!r}: write YYYY-MM-DD") from None
    # A day's bounds in the floor's zone, and the next day, must exist on the calendar.
    if not date(2, 1, 1) <= day <= date(9999, 12, 30):
        raise HTTPException(422, f"date {text!r}: a day between 0002-01-01 and 9999-12-30")
    return day


@router.get("/reports/daily")
async def daily(request: Request, user: Annotated[User, Depends(AUDITORS)],
                date: str, format: str = "html", lang: str = "en",
                floor: str = "") -> Response:
    day = _day(date)
    if format not in FORMATS:
        raise HTTPException(422, f"format {format!r}: use one of {', '.join(FORMATS)}")
    if lang not in LANGS:
        raise HTTPException(422, f"lang {lang!r}: use one of {', '.join(LANGS)}")
    if floor:
        check_floor(user, floor)
    wanted = [floor] if floor else None if user.floors is None else sorted(user.floors)
    engine = request.app.state.engine

    def make() -> bytes:
        with engine.connect() as conn:
            doc = build_report(conn, day, wanted, lang=lang)
        data = render(doc, format)
        with engine.begin() as conn:
            audit(conn, user.name, "report.downloaded", f"daily {day.isoformat()}",
                  client_ip(request), {"format": format, "lang": lang, "floor": floor,
                                       "sha256": hashlib.sha256(data).hexdigest()})
        return data

    data = await run_in_threadpool(make)
    name = f"floorguard-daily-{day.isoformat()}-{lang}{SUFFIXES[format]}"
    headers = {"Content-Security-Policy": REPORT_CSP,
               "X-Content-SHA256": hashlib.sha256(data).hexdigest()}
    if format != "html":
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return Response(data, media_type=MEDIA_TYPES[format], headers=headers)


@router.get("/reports/archive/{rid}")
def archived_download(request: Request, rid: RowId,
                      user: Annotated[User, Depends(AUDITORS)]) -> Response:
    _whole_site(user)
    with request.app.state.engine.begin() as conn:
        row = arch.archived_file(conn, rid)
        if row is None:
            raise HTTPException(404, "no such archived report")
        audit(conn, user.name, "report.archive_downloaded", row["path"], client_ip(request),
              {"sha256": row["sha256"]})
    path = Path(row["path"])
    if not path.is_file():
        raise HTTPException(410, "the archived file is no longer on disk; its digest is "
                                 f"{row['sha256']}")
    return FileResponse(path, media_type=MEDIA_TYPES[row["format"]], filename=path.name,
                        headers={"Content-Security-Policy": REPORT_CSP,
                                 "X-Content-SHA256": row["sha256"]})


@router.post("/reports/archive")
async def archive_now(request: Request, user: Annotated[User, Depends(AUDITORS)],
                      csrf: Annotated[str, Form()] = "",
                      date: Annotated[str, Form()] = "",
                      format: Annotated[str, Form()] = "pdf",
                      lang: Annotated[str, Form()] = "en") -> HTMLResponse:
    """Generate a day's report now and add it to the archive."""
    check_csrf(request, user, csrf)
    _whole_site(user)
    day = _day(date)
    if format not in FORMATS or lang not in LANGS:
        raise HTTPException(422, "unknown format or language")
    cfg = getattr(request.app.state, "report_schedule", None)
    directory = cfg.directory if cfg else schedule.archive_dir()
    engine = request.app.state.engine
    a = await run_in_threadpool(arch.archive_report, engine, day, format, lang, directory,
                                actor=user.name)
    with engine.begin() as conn:
        audit(conn, user.name, "report.archived", str(a.path), client_ip(request),
              {"sha256": a.sha256})
    return await run_in_threadpool(_page, request, {"archived": a})


@router.post("/reports/verify")
async def verify_copy(request: Request, user: Annotated[User, Depends(AUDITORS)],
                      file: UploadFile, csrf: Annotated[str, Form()] = "") -> HTMLResponse:
    """Check an uploaded copy's SHA-256 against the archive."""
    check_csrf(request, user, csrf)
    h = hashlib.sha256()
    size = 0
    while chunk := await file.read(1 << 20):
        size += len(chunk)
        if size > MAX_UPLOAD:
            raise HTTPException(413, "file too large to be a report")
        h.update(chunk)
    digest = h.hexdigest()

    def result() -> HTMLResponse:
        with request.app.state.engine.connect() as conn:
            hits = arch.find_digest(conn, digest)
        return _page(request, {"verify": {"name": file.filename or "", "sha256": digest,
                                          "matches": hits}})

    return await run_in_threadpool(result)
