"""The report's formats: JSON, a zip of CSV tables, HTML and PDF (one Jinja2 template for
both), with charts as inline SVG and the strings in gettext catalogs (domain ``reports``).
"""

from __future__ import annotations

import csv
import gettext
import io
import json
import zipfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

HERE = Path(__file__).resolve().parent
LOCALE_DIR = HERE.parent / "web" / "locale"
DOMAIN = "reports"
LANGS = ("en", "ja")
FORMATS = ("csv", "json", "html", "pdf")
MEDIA_TYPES = {"csv": "application/zip", "json": "application/json",
               "html": "text/html; charset=utf-8", "pdf": "application/pdf"}
SUFFIXES = {"csv": ".csv.zip", "json": ".json", "html": ".html", "pdf": ".pdf"}


def translations(lang: str) -> gettext.NullTranslations:
    if lang not in LANGS:
        raise ValueError(f"unknown report language {lang!r}: use one of {', '.join(LANGS)}")
    if lang == "en":
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, str(LOCALE_DIR), languages=[lang])


# --- JSON ---------------------------------------------------------------------------------


def to_json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=False) + "\n").encode()


# --- CSV ----------------------------------------------------------------------------------

EVENT_COLUMNS = ("time", "agent", "seq", "seat", "user", "control", "kind", "severity",
                 "details")


def _events(key: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> Any:
    return EVENT_COLUMNS, key


# name -> (columns after floor and date, rows of one floor report)
CSV_TABLES: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], list[Any]]]] = {
    "summary": (("key", "value"),
                lambda f: [{"key": k, "value": v} for k, v in f["summary"].items()]),
    "coverage": (("agent", "host", "seat", "expected", "reporting", "hours_heard", "events",
                  "heartbeats", "first_heard", "last_heard"),
                 lambda f: f["coverage"]["agents"]),
    "silent_periods": (("agent", "seat", "start", "end", "minutes_in_day"),
                       lambda f: f["coverage"]["silent_periods"]),
    "controls_unavailable": (("time", "agent", "seat", "control", "reason"),
                             lambda f: f["coverage"]["controls_unavailable"]),
    "counts": (("control", "kind", "severity", "sub", "n", "pages"), lambda f: f["counts"]),
    "usb_exceptions": _events(lambda f: f["controls"]["usb"]["exceptions"]),
    "idle_lock_failures": _events(lambda f: f["controls"]["idle"]["lock_failures"]),
    "prints": (("time", "agent", "seq", "seat", "user", "kind", "job", "title", "queue",
                "pages", "by"), lambda f: f["controls"]["print"]["jobs"]),
    "operators": (("user", "seats", "events", "warnings", "violations",
                   *("usb.blocked", "usb.allowed", "idle.locked", "idle.lock_failed",
                     "print.held", "print.approved", "print.denied", "print.expired",
                     "files.flagged", "processes.flagged", "processes.killed",
                     "network.flagged")), lambda f: f["operators"]),
    "seats": (("seat", "users", "events", "warnings", "violations",
               *("usb.blocked", "usb.allowed", "idle.locked", "idle.lock_failed",
                 "print.held", "print.approved", "print.denied", "print.expired",
                 "files.flagged", "processes.flagged", "processes.killed",
                 "network.flagged")), lambda f: f["seats"]),
    "hourly": (("hour", "start", "events", "violations", "operators", "svs_on_duty",
                "operators_per_sv", "over_ratio", "ratio_exceeded_events"),
               lambda f: f["hourly"]),
    "sv_ratio_exceeded": _events(lambda f: f["sv_ratio"]["exceeded"]),
    "policies": (("hash", "agents", "sources"), lambda f: f["policies"]["in_force"]),
    "policy_changes": (("time", "agent", "seat", "hash", "previous", "source"),
                       lambda f: f["policies"]["changes"]),
    "integrity": (("agent", "seat", "records", "first_seq", "last_seq", "missing",
                   "declared_dropped", "bad_hash", "bad_link", "first_bad_seq", "verified"),
                  lambda f: f["integrity"]["agents"]),
    "chain_broken": _events(lambda f: f["integrity"]["chain_broken_events"]),
    "violations": ((*EVENT_COLUMNS, "acknowledged", "acknowledged_by", "acknowledged_at"),
                   lambda f: f["violations"]),
}


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP "CSV
# injection"): a seat or user name such as "=cmd|' /C calc'!A0" would run on the
# auditor's PC.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """OWASP's rule: a cell that starts like a formula gets a leading single quote, which
    spreadsheets show as text and do not evaluate. Only the CSV is changed; the JSON and
    PDF reports keep the true value."""
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_cell(value: Any) -> str:
    """One cell: empty for null, true/false, lists joined by ';', objects as JSON; text
    that a spreadsheet would run as a formula is neutralised (numbers are left alone:
    a number is never a formula)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return neutralise(";".join(str(v) for v in value))
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return neutralise(str(value))


def _csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    # Every cell quoted (OWASP's other half): a spreadsheet that splits on ';' (the list
    # separator in many locales) cannot cut a cell so that a later part starts a formula.
    w = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def to_csv_zip(doc: dict[str, Any]) -> bytes:
    """A zip of CSV tables (UTF-8, header row first); every table but ``mapping`` starts
    with the floor and date columns. Entry times are fixed so equal reports zip equal."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        def put(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o444 << 16
            z.writestr(info, data)

        for name, (cols, rows_of) in CSV_TABLES.items():
            rows = [[csv_cell(f["floor"]), f["date"], *(csv_cell(r.get(c)) for c in cols)]
                    for f in doc["floors"] for r in rows_of(f)]
            put(f"{name}.csv", _csv_bytes(["floor", "date", *cols], rows))
        mapping = doc["floors"][0]["mapping"] if doc["floors"] else []
        put("mapping.csv", _csv_bytes(
            ["control", "rules", "areas"],
            [[csv_cell(m["control"]), csv_cell([r["text"] for r in m["rules"]]),
              csv_cell([a["text"] for a in m["areas"]])] for m in mapping]))
    return out.getvalue()


# --- charts -------------------------------------------------------------------------------


def bar_chart(values: list[int], *, highlight: list[int] | None = None,
              limit: list[float | None] | None = None, title: str = "",
              width: int = 640, height: int = 150) -> Markup:
    """A bar per hour, an optional second series drawn over it in red, and an optional
    limit drawn as a step line (e.g. operators the SVs on duty may supervise)."""
    n = max(len(values), 1)
    top: float = max([*values, *(x for x in (limit or []) if x is not None), 1])
    left, plot_h = 30, height - 30
    bw = (width - left - 5) / n

    def y(v: float) -> float:
        return 10 + plot_h - plot_h * v / top

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f"<title>{Markup.escape(title)}</title>",
             f'<text x="2" y="{y(top) + 4:.1f}" font-size="9">{top:g}</text>',
             f'<text x="2" y="{y(0):.1f}" font-size="9">0</text>',
             f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - 5}" y2="{y(0):.1f}" '
             'stroke="#888" stroke-width="0.5"/>']
    for i, v in enumerate(values):
        x = left + i * bw
        parts.append(f'<rect x="{x + 1:.1f}" y="{y(v):.1f}" width="{bw - 2:.1f}" '
                     f'height="{y(0) - y(v):.1f}" fill="#4a78a8"><title>{i}: {v}</title>'
                     "</rect>")
        if highlight and highlight[i]:
            h = highlight[i]
            parts.append(f'<rect x="{x + 1:.1f}" y="{y(h):.1f}" width="{bw - 2:.1f}" '
                         f'height="{y(0) - y(h):.1f}" fill="#c0392b"/>')
        if i % 3 == 0:
            parts.append(f'<text x="{x + 1:.1f}" y="{height - 4}" font-size="9">{i}</text>')
    if limit:
        for i, cap in enumerate(limit):
            if cap is None:
                continue
            x = left + i * bw
            parts.append(f'<line x1="{x:.1f}" y1="{y(cap):.1f}" x2="{x + bw:.1f}" '
                         f'y2="{y(cap):.1f}" stroke="#e67e22" stroke-width="2"/>')
    parts.append("</svg>")
    # Every piece above is built from numbers and an escaped title.
    return Markup("".join(parts))  # noqa: S704


def charts(floor: dict[str, Any]) -> dict[str, Markup]:
    hourly = floor["hourly"]
    maxr = floor["sv_ratio"]["max_operators_per_sv"]
    limit: list[float | None] = [
        (maxr * h["svs_on_duty"]) if (maxr is not None and h["svs_on_duty"] is not None)
        else None for h in hourly]
    return {
        "events": bar_chart([h["events"] for h in hourly],
                            highlight=[h["violations"] for h in hourly],
                            title="events and violations by hour"),
        "operators": bar_chart([h["operators"] for h in hourly],
                               highlight=[h["ratio_exceeded_events"] for h in hourly],
                               limit=limit, title="operators by hour"),
    }


# --- HTML and PDF -------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _environment(lang: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")),
                             autoescape=True, extensions=["jinja2.ext.i18n"],
                             undefined=jinja2.StrictUndefined)
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    return env


def to_html(doc: dict[str, Any]) -> str:
    lang = doc.get("lang", "en")
    env = _environment(lang)
    css = (HERE / "templates" / "report.css").read_text(encoding="utf-8")
    return env.get_template("daily.html").render(
        doc=doc, lang=lang, css=Markup(css),  # noqa: S704 our own style sheet
        charts={f["floor"]: charts(f) for f in doc["floors"]})


def to_pdf(doc: dict[str, Any]) -> bytes:
    from weasyprint import HTML

    return bytes(HTML(string=to_html(doc), base_url=str(HERE)).write_pdf())


def render(doc: dict[str, Any], fmt: str) -> bytes:
    if fmt == "json":
        return to_json(doc)
    if fmt == "csv":
        return to_csv_zip(doc)
    if fmt == "html":
        return to_html(doc).encode("utf-8")
    if fmt == "pdf":
        return to_pdf(doc)
    raise ValueError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
