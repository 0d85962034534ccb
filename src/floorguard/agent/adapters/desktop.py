"""Telling the operator: a desktop notification in their graphical session (best effort).

The agent runs as root; a session bus accepts only its own user, so the notification is
sent by ``notify-send`` running as that user against ``/run/user/UID/bus``. It runs on a
background thread with a short timeout: a missing desktop never delays a decision, and
the event is recorded whether or not anyone saw the notice.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading

import structlog

log = structlog.get_logger("floorguard.desktop")


def _command(user: str, title: str, body: str, urgency: str) -> list[str] | None:
    notify = shutil.which("notify-send")
    if notify is None:
        return None
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    bus = f"/run/user/{pw.pw_uid}/bus"
    if not os.path.exists(bus):
        return None
    env = ["env", f"DBUS_SESSION_BUS_ADDRESS=unix:path={bus}", f"HOME={pw.pw_dir}"]
    base = [notify, "--app-name=floorguard", f"--urgency={urgency}", title, body]
    if os.geteuid() == pw.pw_uid:
        return [*env, *base]
    return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups",
            *env, *base]


def notify_user(user: str | None, title: str, body: str, *, urgency: str = "critical",
                wait: bool = False) -> bool:
    """Show a notice in ``user``'s desktop session; False when there is none to show it in."""
    if not user:
        return False
    cmd = _command(user, title, body, urgency)
    if cmd is None:
        return False

    def send() -> None:
        try:
            subprocess.run(cmd, timeout=3, capture_output=True, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.info("desktop notification failed", user=user, error=str(exc))

    if wait:
        send()
    else:
        threading.Thread(target=send, name="notify", daemon=True).start()
    return True
