"""A real X server (Xvfb) on a private display, with its Xauthority cookie, and
xdotool/xprintidle to drive and read its idle time."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from tests.rigs.processes import need


class Xserver:
    """One Xvfb display."""

    def __init__(self, proc: subprocess.Popen[bytes], display: str, auth: Path | None):
        self.proc = proc
        self.display = display
        self.auth = auth

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "XAUTHORITY")}
        env["DISPLAY"] = self.display
        if self.auth is not None:
            env["XAUTHORITY"] = str(self.auth)
        return env

    def xdotool(self, *args: str) -> None:
        subprocess.run([need("xdotool", "xdotool"), *args], env=self.env(), check=True,
                       timeout=10, capture_output=True)

    def xprintidle(self) -> int:
        res = subprocess.run([need("xprintidle", "xprintidle")], env=self.env(), check=True,
                             timeout=10, capture_output=True, text=True)
        return int(res.stdout.strip())


def start_xvfb(workdir: Path, *, cookie: str | None = None) -> Xserver:
    xvfb = need("Xvfb", "xvfb")
    auth: Path | None = None
    args = [xvfb, "-screen", "0", "640x480x24", "-nolisten", "tcp"]
    if cookie is not None:
        # The server loads every cookie in the file whatever display it names; the
        # client looks one up by display, so the entry is added again once N is known.
        auth = workdir / "Xauthority"
        subprocess.run([need("xauth", "xauth"), "-f", str(auth), "add", ":0", ".", cookie],
                       check=True, timeout=10, capture_output=True)
        args += ["-auth", str(auth)]
    r, w = os.pipe()
    proc = subprocess.Popen([*args, "-displayfd", str(w)], pass_fds=(w,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        data = b""
        deadline = time.monotonic() + 10
        while not data.endswith(b"\n"):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("Xvfb did not start")
            chunk = os.read(r, 64)
            if not chunk:
                raise AssertionError("Xvfb exited before printing its display")
            data += chunk
    except BaseException:
        proc.kill()
        proc.wait(5)
        raise
    finally:
        os.close(r)
    display = ":" + data.decode().strip()
    if cookie is not None and auth is not None:
        subprocess.run([need("xauth", "xauth"), "-f", str(auth), "add", display, ".", cookie],
                       check=True, timeout=10, capture_output=True)
    return Xserver(proc, display, auth)


def stop_xvfb(x: Xserver) -> None:
    if x.proc.poll() is None:
        x.proc.terminate()
        try:
            x.proc.wait(5)
        except subprocess.TimeoutExpired:
            x.proc.kill()
            x.proc.wait(5)
