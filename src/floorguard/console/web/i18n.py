"""Japanese and English: gettext catalogs (Babel), the language of each request, and
dates in the floor's time zone.

Every UI string is written ``{{ _("...") }}`` in templates or marked ``N_("...")`` in
Python and translated where it is shown. Catalogs live in ``locale/LANG/LC_MESSAGES``;
``messages.po`` is the source and the compiled ``messages.mo`` is committed next to it, so
a fresh clone runs without a build step (a test checks that the two agree).

The language of a request: the signed-in user's own choice (``users.lang``) if set,
otherwise the best match of the browser's ``Accept-Language``, otherwise English.
"""

from __future__ import annotations

import gettext
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from babel import negotiate_locale
from babel.support import Translations
from jinja2 import pass_context
from markupsafe import Markup

from floorguard.policy import FloorSettings

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "messages"
DEFAULT_LANG = "en"
LANGUAGES: dict[str, str] = {"en": "English", "ja": "日本語"}
DEFAULT_TIMEZONE = FloorSettings().timezone  # the [floor] table's default, declared once


def N_(message: str) -> str:
    """Mark a string for extraction; it is translated where it is shown."""
    return message


@cache
def translations(lang: str) -> gettext.NullTranslations:
    if lang not in LANGUAGES:
        lang = DEFAULT_LANG
    mo = LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.mo"
    if not mo.exists():
        if lang == DEFAULT_LANG:
            return gettext.NullTranslations()
        raise RuntimeError(f"missing catalog {mo}: run 'pybabel compile -d "
                           f"src/floorguard/console/web/locale' (see README, Development)")
    return Translations.load(str(LOCALE_DIR), [lang], DOMAIN)


def parse_accept_language(header: str) -> list[str]:
    """Language tags from an Accept-Language header, best first (q=0 dropped)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip()
        if not tag or tag == "*":
            continue
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        if q > 0:
            ranked.append((-q, i, tag.replace("_", "-")))
    return [tag for _, _, tag in sorted(ranked)]


def negotiate(accept_language: str | None) -> str:
    preferred = parse_accept_language(accept_language or "")
    # Match "ja-JP" to "ja" as well as exact tags.
    found = negotiate_locale(preferred + [p.split("-")[0] for p in preferred],
                             list(LANGUAGES), sep="-")
    return found if found in LANGUAGES else DEFAULT_LANG


def choose_lang(user_lang: str | None, accept_language: str | None) -> str:
    if user_lang in LANGUAGES:
        return str(user_lang)
    return negotiate(accept_language)


def gettext_for(lang: str) -> tuple[Any, Any]:
    """Jinja ``_``/``gettext`` and ``ngettext`` callables for ``lang`` (new-style:
    autoescaped, with ``%(name)s`` placeholders filled from keyword arguments)."""
    trans = translations(lang)

    @pass_context
    def _gettext(ctx: Any, message: str, **variables: Any) -> str:
        text = trans.gettext(message)
        if ctx.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 catalog text is ours; % escapes the values
        return text % variables if variables else text

    @pass_context
    def _ngettext(ctx: Any, singular: str, plural: str, num: int, **variables: Any) -> str:
        variables.setdefault("num", num)
        text = trans.ngettext(singular, plural, num)
        if ctx.eval_ctx.autoescape:
            text = Markup(text)  # noqa: S704 catalog text is ours; % escapes the values
        return text % variables

    return _gettext, _ngettext


def translate(lang: str, message: str) -> str:
    return translations(lang).gettext(message)


SEVERITY_LABELS = {"info": N_("info"), "warning": N_("warning"),
                   "violation": N_("violation")}
KIND_LABELS = {
    "agent.chain_broken": N_("Evidence chain broken"),
    "agent.command": N_("Command from the console"),
    "agent.control_unavailable": N_("Control unavailable"),
    "agent.gap": N_("Journal gap"),
    "agent.policy_loaded": N_("Policy loaded"),
    "agent.policy_rejected": N_("Policy rejected"),
    "agent.recovered": N_("Agent back"),
    "agent.silent": N_("Agent silent"),
    "agent.started": N_("Agent started"),
    "agent.stopped": N_("Agent stopped"),
    "files.copied": N_("File copied to removable media"),
    "files.flagged": N_("File flagged"),
    "files.mounted": N_("Removable media mounted"),
    "floor.sv_ratio_exceeded": N_("Too few SVs for the operators"),
    "idle.inhibited": N_("Idle lock inhibited"),
    "idle.lock_failed": N_("Lock failed"),
    "idle.locked": N_("Seat locked"),
    "idle.source_stale": N_("Idle detection stale"),
    "idle.suspended": N_("PC suspended while idle"),
    "idle.unlocked": N_("Seat unlocked"),
    "idle.warned": N_("Idle warning"),
    "network.flagged": N_("Network traffic flagged"),
    "network.interface": N_("Network interface appeared"),
    "print.approved": N_("Print approved"),
    "print.decision_failed": N_("Print decision failed"),
    "print.denied": N_("Print denied"),
    "print.expired": N_("Print request expired"),
    "print.held": N_("Print held for approval"),
    "print.hold_restored": N_("Print hold restored"),
    "print.misconfigured": N_("Printer misconfigured"),
    "print.released": N_("Print released"),
    "processes.flagged": N_("Process flagged"),
    "processes.killed": N_("Forbidden process stopped"),
    "usb.allowed": N_("USB device allowed"),
    "usb.blocked": N_("USB device blocked"),
    "usb.removed": N_("USB device removed"),
}
ROLE_LABELS = {"admin": N_("admin"), "sv": N_("SV"), "auditor": N_("auditor")}


def template_context(lang: str) -> dict[str, Any]:
    """What a page needs to speak ``lang``: pass into every template render."""
    _g, _n = gettext_for(lang)
    return {"_": _g, "gettext": _g, "ngettext": _n, "lang": lang, "languages": LANGUAGES,
            "severity_labels": SEVERITY_LABELS, "role_labels": ROLE_LABELS,
            "kind_label": lambda kind: _translate_kind(lang, kind)}


def _translate_kind(lang: str, kind: str) -> str:
    """A kind's name in ``lang``; the kind itself for one without a label yet."""
    label = KIND_LABELS.get(kind)
    return translate(lang, label) if label else kind


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def localtime(ts_us: int | None, tz: str = DEFAULT_TIMEZONE, fmt: str = "%Y-%m-%d %H:%M:%S"
              ) -> str:
    """A stored time (microseconds since the epoch) as wall-clock time in ``tz``.

    Never raises: a stored value no calendar holds (a PC's clock at year 9999, a row
    written by hand) is shown as its raw number rather than failing the whole page."""
    if ts_us is None:
        return ""
    try:
        dt = datetime.fromtimestamp(ts_us / 1_000_000, UTC).astimezone(_zone(tz))
        return dt.strftime(fmt)
    except (OverflowError, ValueError, OSError, TypeError, KeyError):
        return f"? ({ts_us} µs)"


def install(env: Any) -> None:
    """Set up a Jinja environment: i18n extension, English by default, date filters."""
    env.add_extension("jinja2.ext.i18n")
    env.install_null_translations(newstyle=True)
    env.filters["localtime"] = localtime
