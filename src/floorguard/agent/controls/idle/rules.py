"""The idle control's rules: how idle a session is by each witness, what stage that
means (warn, lock) and which doors a lock goes through. Plain functions on plain data.
"""

from __future__ import annotations

from floorguard.agent.adapters.logind import Inhibitor
from floorguard.policy import IdleSettings

X_INPUT_TOLERANCE_MS = 100  # jitter between the X server reading its clock and ours

# The doors a lock request can go through, tried in this order (then round again).
LOCK_SESSION = "LockSession"
SESSION_LOCK = "Session.Lock"
LOGINCTL = "loginctl"
XDG_SCREENSAVER = "xdg-screensaver"


def idle_stage(idle_for: float, limits: IdleSettings) -> str:
    """``active``, ``warn`` or ``lock`` for a session idle ``idle_for`` seconds."""
    if idle_for >= limits.lock_after:
        return "lock"
    if limits.warn_after is not None and idle_for >= limits.warn_after:
        return "warn"
    return "active"


def x_input_between(prev_ms: int, prev_at: float, ms: int, at: float,
                    tolerance_ms: int = X_INPUT_TOLERANCE_MS) -> bool:
    """Whether there was input on the display between two readings of its idle counter:
    without input the counter grows by the (real, monotonic) time that passed, so any
    reading short of that means it was reset."""
    expected = prev_ms + (at - prev_at) * 1000.0
    return ms + tolerance_ms < expected


def hint_is_stale(*, hint_idle: bool, hint_true_at: float | None, x_since: float | None,
                  now: float, limit: float) -> bool:
    """The desktop does not maintain IdleHint: X has seen no input for ``limit`` seconds
    and the hint has not once been true in all that time."""
    if hint_idle or x_since is None or now - x_since < limit:
        return False
    return hint_true_at is None or hint_true_at < x_since


def lock_doors(session_type: str) -> list[str]:
    """The ways to ask a session to lock, first choice first."""
    doors = [LOCK_SESSION, SESSION_LOCK, LOGINCTL]
    if session_type == "x11":
        doors.append(XDG_SCREENSAVER)
    return doors


def affected_by(inhibitor: Inhibitor, uid: int) -> bool:
    """An idle inhibitor held by the session's user, or by a system process (root)."""
    return inhibitor.blocks_idle and inhibitor.uid in (uid, 0)


