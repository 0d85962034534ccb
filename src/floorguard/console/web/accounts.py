"""The accounts page (admins): every account with its role, state and floors, and the
floors an admin sets for an SV or an auditor (the same change as ``floorguard console
user floors NAME --set ...``, audited the same way)."""

from __future__ import annotations

from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from floorguard.console.auth import User, audit, client_ip, list_users, require, require_write
from floorguard.console.membership import (
    MembershipError,
    all_memberships,
    parse_floors,
    set_floors,
)
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import users
from floorguard.console.web.i18n import N_
from floorguard.console.web.site import add_nav, render

router = APIRouter(include_in_schema=False)
add_nav("/admin/accounts", N_("Accounts"), ("admin",), order=92)
MAX_FLOORS_TEXT = 4000


def _page(request: Request, *, problem: str | None = None, status: int = 200
          ) -> HTMLResponse:
    with request.app.state.engine.connect() as conn:
        floors = all_memberships(conn)
        accounts = [{**u, "floors": floors.get(u["name"], [])} for u in list_users(conn)]
    return render(request, "accounts.html", {"accounts": accounts, "problem": problem},
                  status=status)


@router.get("/admin/accounts")
def accounts_page(request: Request, user: Annotated[User, Depends(require("admin"))]
                  ) -> HTMLResponse:
    """Accounts with their roles, states and floors (admins)."""
    return _page(request)


@router.post("/admin/accounts/{name}/floors")
def save_floors(request: Request, name: str,
                user: Annotated[User, Depends(require_write("admin"))],
                floors: Annotated[str, Form(max_length=MAX_FLOORS_TEXT)] = "") -> Response:
    """Set the floors an account reads and acts on (admins); a comma list, or empty."""
    if len(name) > 255:
        raise HTTPException(422, "name: at most 255 characters")
    try:
        wanted = parse_floors([floors])
    except MembershipError as exc:
        return _page(request, problem=f"floors: {exc}", status=422)
    with request.app.state.engine.begin() as conn:
        if conn.execute(sa.select(users.c.id).where(users.c.name == name)).first() is None:
            raise HTTPException(404, f"no account {name!r}")
        lost = set_floors(conn, name, wanted, now_us())
        audit(conn, user.name, "user.floors_set", name, client_ip(request),
              {"floors": wanted, "removed": lost})
    return RedirectResponse("/admin/accounts", status_code=303)
