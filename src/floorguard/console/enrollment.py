"""Enrollment: a one-time code exchanged for an agent's own token.

A code does exactly one of two things, fixed when an admin makes it:

- a plain code (``floorguard console enroll-code``) enrolls a **new** agent: the agent id
  it is presented with must not be known to the console yet;
- a re-enrollment code (``enroll-code --agent ID``) gives a new token to that one agent
  (a PC whose token file was lost); it is refused for any other id.

A revoked agent stays revoked: no code un-revokes it (enroll the PC as a new agent, with a
fresh ``STATE_DIR/agent_id``). So a stolen code can add one agent, never take over one
that exists, move it to another floor or bring it back from revocation.

The intended agent of a re-enrollment code is kept in ``enrollment_codes.agent_id`` while
the code is unused; once used, that column names the agent the code enrolled (as for a
plain code).

Every refusal is audited (``agent.enroll_refused``) in a transaction of its own, so the
audit row is not rolled back together with the refused enrollment.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from floorguard.console.auth import audit, sha256_hex
from floorguard.console.store.db import now_us
from floorguard.console.store.schema import agents, enrollment_codes

BAD_CODE = "unknown, used or expired enrollment code: ask an admin for a new one"


class EnrollRefused(Exception):
    """The enrollment is refused; ``str(exc)`` says why and what to do."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Enrolled:
    agent_id: str
    token: str
    reenrolled: bool


def create_code(conn: Connection, actor: str, floor: str, ttl: float,
                agent_id: str | None = None) -> str:
    """Make a one-time code (shown once; only its hash is stored).

    With ``agent_id`` the code re-enrolls that agent only; it must be enrolled and not
    revoked (``ValueError`` otherwise, saying so)."""
    if agent_id is not None:
        row = conn.execute(sa.select(agents.c.revoked_us).where(agents.c.id == agent_id)
                           ).first()
        if row is None:
            raise ValueError(f"no agent {agent_id} (see 'floorguard console agent list'); "
                             "leave out --agent to enroll a new agent")
        if row.revoked_us is not None:
            raise ValueError(f"agent {agent_id} is revoked and stays revoked: enroll the "
                             "PC as a new agent (a code without --agent, after removing "
                             "its agent_id and token files)")
    code = secrets.token_urlsafe(18)
    while code.startswith("-"):  # "--code -x..." would read as an option on the command line
        code = secrets.token_urlsafe(18)
    now = now_us()
    conn.execute(enrollment_codes.insert().values(
        code_hash=sha256_hex(code), created_by=actor, created_us=now,
        expires_us=now + int(ttl * 1_000_000), floor=floor, agent_id=agent_id))
    details: dict[str, Any] = {"expires_s": ttl}
    if agent_id is not None:
        details["agent"] = agent_id
    audit(conn, actor, "enroll_code.created", floor, "", details)
    return code


def enroll(engine: Engine, code: str, agent_id: str, host: str, seat: str,
           ip: str = "") -> Enrolled:
    """Exchange ``code`` for a new token for ``agent_id``; ``EnrollRefused`` otherwise
    (audited in its own transaction)."""
    token = secrets.token_urlsafe(32)
    try:
        with engine.begin() as conn:
            reenrolled, floor = _enroll(conn, code, agent_id, host, seat, token)
            audit(conn, "agent:" + agent_id, "agent.reenrolled" if reenrolled
                  else "agent.enrolled", seat, ip, {"host": host, "floor": floor})
    except IntegrityError:
        # Two enrollments raced for the same new id: the other one won.
        refused = EnrollRefused(f"agent {agent_id} is already enrolled: a new agent needs "
                                "an id of its own", "agent_exists")
        _audit_refusal(engine, agent_id, host, ip, refused)
        raise refused from None
    except EnrollRefused as refused:
        _audit_refusal(engine, agent_id, host, ip, refused)
        raise
    return Enrolled(agent_id, token, reenrolled)


def _audit_refusal(engine: Engine, agent_id: str, host: str, ip: str,
                   refused: EnrollRefused) -> None:
    with engine.begin() as conn:
        audit(conn, "agent:" + agent_id, "agent.enroll_refused", host, ip,
              {"reason": refused.reason, "why": str(refused)})


def _enroll(conn: Connection, code_text: str, agent_id: str, host: str, seat: str,
            token: str) -> tuple[bool, str]:
    now = now_us()
    code = conn.execute(sa.select(enrollment_codes)
                        .where(enrollment_codes.c.code_hash == sha256_hex(code_text))
                        .with_for_update()).first()
    if code is None or code.used_us is not None or code.expires_us < now:
        raise EnrollRefused(BAD_CODE, "bad_code")
    known = conn.execute(sa.select(agents.c.revoked_us, agents.c.floor)
                         .where(agents.c.id == agent_id).with_for_update()).first()
    intended = code.agent_id
    if intended is not None and intended != agent_id:
        raise EnrollRefused(f"this code re-enrolls agent {intended} only, not {agent_id}",
                            "other_agent")
    if intended is None and known is not None:
        raise EnrollRefused(
            f"agent {agent_id} is already enrolled: an admin re-enrolls it with a code "
            f"from 'floorguard console enroll-code --agent {agent_id}'", "agent_exists")
    if known is not None and known.revoked_us is not None:
        raise EnrollRefused(f"agent {agent_id} is revoked and stays revoked: enroll the "
                            "PC as a new agent", "revoked")
    if intended is not None and known is None:  # pragma: no cover - agents are not deleted
        raise EnrollRefused(f"no agent {agent_id} to re-enroll", "unknown_agent")
    conn.execute(enrollment_codes.update()
                 .where(enrollment_codes.c.code_hash == code.code_hash)
                 .values(used_us=now, agent_id=agent_id))
    values = {"token_hash": sha256_hex(token), "host": host, "seat": seat}
    if known is not None:
        # A re-enrollment keeps the agent's floor unless the code names one.
        floor = str(code.floor or known.floor)
        done = conn.execute(agents.update().where(agents.c.id == agent_id,
                                                  agents.c.revoked_us.is_(None))
                            .values(floor=floor, **values))
        if done.rowcount != 1:  # revoked by another process since the read above
            raise EnrollRefused(f"agent {agent_id} is revoked and stays revoked: enroll "
                                "the PC as a new agent", "revoked")
        return True, floor
    conn.execute(agents.insert().values(id=agent_id, enrolled_us=now, floor=code.floor,
                                        **values))
    return False, str(code.floor)
