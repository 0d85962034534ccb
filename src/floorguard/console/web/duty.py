"""SVs on duty: an SV marks themself on or off duty for one of their floors (see
``membership``); every change is kept (one row per stint) and written to the audit
trail. The floor view counts SVs on duty against operators logged in (see ``ratio``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from floorguard.console.auth import User, audit, check_floor, client_ip, require_write
from floorguard.console.duty import (
    go_off_duty,
    go_on_duty,
)
from floorguard.console.store.db import now_us

router = APIRouter(include_in_schema=False)


@router.post("/duty")
def set_duty(request: Request, user: Annotated[User, Depends(require_write("sv"))],
             action: Annotated[str, Form(pattern="^(on|off)$")],
             floor: Annotated[str, Form(max_length=255)] = "") -> Response:
    """An SV goes on duty for a floor, or off duty."""
    now = now_us()
    with request.app.state.engine.begin() as conn:
        if action == "on":
            if not floor:
                raise HTTPException(422, "floor: choose the floor you are on duty for")
            check_floor(user, floor)  # on duty only for a floor one is a member of
            go_on_duty(conn, user.name, floor, now)
            audit(conn, user.name, "duty.on", floor, client_ip(request))
        elif go_off_duty(conn, user.name, now):
            audit(conn, user.name, "duty.off", "", client_ip(request))
    return RedirectResponse("/floor", status_code=303)
