"""What the console needs to know of each floor's policy: ``max_operators_per_sv``, the
time zone, when an idle seat counts as "idle but unlocked", and the heartbeat interval.

Every reader goes through ``floor_policy(conn, floor)``. Today the values come from a
per-floor row an admin edits on the Floors page, with the policy schema's defaults for a
floor without one; when the console holds central policies per floor, this one function
is where they are read instead.
"""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from floorguard.console.auth import User, audit, client_ip, require, require_write
from floorguard.console.floors import all_floor_policies
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import floor_settings
from floorguard.console.web.i18n import DEFAULT_TIMEZONE, N_
from floorguard.console.web.site import add_nav, render
from floorguard.policy import parse_duration


def validate_settings(max_ops: str, timezone: str, idle_after: str, heartbeat: str
                      ) -> tuple[dict[str, object], list[str]]:
    """Form values to column values; problems name the field and what to write."""
    problems: list[str] = []
    values: dict[str, object] = {}
    max_ops = max_ops.strip()
    if not max_ops:
        values["max_operators_per_sv"] = None
    elif max_ops.isdigit() and 1 <= int(max_ops) <= 10_000:
        values["max_operators_per_sv"] = int(max_ops)
    else:
        problems.append(N_("Operators per SV: write a whole number from 1, or leave it "
                           "empty for no check."))
    try:
        ZoneInfo(timezone.strip())
        values["timezone"] = timezone.strip()
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(N_("Time zone: use an IANA name such as Asia/Tokyo."))
    for key, text, label in (
        ("idle_unlocked_after_s", idle_after,
         N_("Idle but unlocked after: write a duration such as 5m.")),
        ("heartbeat_interval_s", heartbeat,
         N_("Heartbeat interval: write a duration such as 30s.")),
    ):
        try:
            seconds = parse_duration(text.strip())
            if seconds <= 0:
                raise ValueError("not positive")
            values[key] = seconds
        except ValueError:
            problems.append(label)
    return values, problems


router = APIRouter(include_in_schema=False)
add_nav("/admin/floors", N_("Floors"), ("admin",), order=70)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s % 3600 == 0:
        return f"{s // 3600}h"
    if s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


@router.get("/admin/floors")
def floors_page(request: Request, user: Annotated[User, Depends(require("admin"))]
                ) -> HTMLResponse:
    with request.app.state.engine.connect() as conn:
        floors = sorted(all_floor_policies(conn).values(), key=lambda f: f.floor)
    return render(request, "floors.html", {"floors": floors, "duration": _duration,
                                           "problems": []})


@router.post("/admin/floors")
def save_floor(
    request: Request,
    user: Annotated[User, Depends(require_write("admin"))],
    floor: Annotated[str, Form(max_length=255)],
    max_operators_per_sv: Annotated[str, Form(max_length=8)] = "",
    timezone: Annotated[str, Form(max_length=64)] = DEFAULT_TIMEZONE,
    idle_unlocked_after: Annotated[str, Form(max_length=16)] = "5m",
    heartbeat_interval: Annotated[str, Form(max_length=16)] = "30s",
) -> Response:
    values, problems = validate_settings(max_operators_per_sv, timezone,
                                         idle_unlocked_after, heartbeat_interval)
    engine = request.app.state.engine
    if problems:
        with engine.connect() as conn:
            floors = sorted(all_floor_policies(conn).values(), key=lambda f: f.floor)
        return render(request, "floors.html", {"floors": floors, "duration": _duration,
                                               "problems": problems}, status=422)
    if not floor.strip():
        raise HTTPException(422, "floor: name the floor")
    now = now_us()
    with engine.begin() as conn:
        exists = conn.execute(sa.select(floor_settings.c.floor)
                              .where(floor_settings.c.floor == floor)).first()
        row = {**values, "updated_by": user.name, "updated_us": now}
        if exists:
            conn.execute(floor_settings.update().where(floor_settings.c.floor == floor)
                         .values(**row))
        else:
            conn.execute(floor_settings.insert().values(floor=floor, **row))
        audit(conn, user.name, "floor.settings_changed", floor, client_ip(request),
              {k: v for k, v in values.items()})
    return RedirectResponse("/admin/floors", status_code=303)
