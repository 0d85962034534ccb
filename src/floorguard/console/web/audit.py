"""The audit trail, read-only, for admins and auditors: who signed in (or failed to),
acknowledged, went on duty, changed settings or accounts. No route edits or deletes it."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from floorguard.console.api.limits import RowId
from floorguard.console.auth import User, require
from floorguard.console.store.schema import audit_log
from floorguard.console.violations import display_timezone
from floorguard.console.web.i18n import N_
from floorguard.console.web.site import add_nav, render

router = APIRouter(include_in_schema=False)
PAGE = 100
add_nav("/audit", N_("Audit trail"), ("admin", "auditor"), order=80)


@router.get("/audit")
def audit_page(request: Request, user: Annotated[User, Depends(require("admin", "auditor"))],
               actor: str = "", action: str = "", before: RowId | None = None
               ) -> HTMLResponse:
    if len(actor) > 64 or len(action) > 64:
        raise HTTPException(422, "actor and action are at most 64 characters")
    q = sa.select(audit_log)
    if actor:
        q = q.where(audit_log.c.actor == actor)
    if action:
        q = q.where(audit_log.c.action == action)
    if before is not None:
        q = q.where(audit_log.c.id < before)
    with request.app.state.engine.connect() as conn:
        rows = conn.execute(q.order_by(audit_log.c.id.desc()).limit(PAGE + 1)).all()
        tz = display_timezone(conn)
    more = rows[PAGE - 1].id if len(rows) > PAGE else None
    return render(request, "audit.html", {"rows": rows[:PAGE], "more": more, "tz": tz,
                                          "actor": actor, "action": action})
