"""The signed-in user's own settings: the console's language (or the browser's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from floorguard.console.auth import User, audit, client_ip, require_write
from floorguard.console.store.schema import users
from floorguard.console.web.i18n import LANGUAGES
from floorguard.console.web.site import _safe_next

router = APIRouter(include_in_schema=False)


@router.post("/account/lang")
def set_language(request: Request,
                 user: Annotated[User, Depends(require_write("admin", "sv", "auditor"))],
                 lang: Annotated[str, Form(max_length=8)],
                 next: Annotated[str, Form(max_length=512)] = "/") -> Response:
    """``lang`` is one of the console's languages, or ``auto`` for the browser's."""
    value = lang if lang in LANGUAGES else None
    if lang != "auto" and value is None:
        raise HTTPException(422, f"lang: one of auto, {', '.join(LANGUAGES)}")
    with request.app.state.engine.begin() as conn:
        conn.execute(users.update().where(users.c.id == user.id).values(lang=value))
        audit(conn, user.name, "user.lang_set", user.name, client_ip(request),
              {"lang": lang})
    return RedirectResponse(_safe_next(next), status_code=303)
