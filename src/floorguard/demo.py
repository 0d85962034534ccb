"""``floorguard demo``: a whole emulated floor on one machine.

Starts a console on SQLite and one real agent per emulated seat, each enrolled with the
console and enforcing its own small policy, then plays a floor's day at them: operators
saving customer exports to the desktop, copying files to a "USB stick" folder, starting a
forbidden screen recorder. Every event the console shows comes from the real controls.
Everything lives in one folder (a temporary one unless ``--dir``); Ctrl-C stops it all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICY = """\
[floor]
name = "Demo floor"
max_operators_per_sv = 4
timezone = "Asia/Tokyo"

[agent]
heartbeat_interval = "5s"

[files]
removable = ["{seat_dir}/usb-stick"]
watch = ["{seat_dir}/Desktop"]
flag = ["*.csv", "*.xlsx"]

[processes]
forbid = ["{recorder}"]
action = "kill"
check_interval = "500ms"
"""


def _floorguard(*args: str, env: dict[str, str] | None = None, input: str | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "floorguard", *args], env=env, input=input,
                          capture_output=True, text=True, check=True, timeout=120)


def _wait_healthy(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the demo console did not come up at {url}")


class Floor:
    def __init__(self, root: Path, listen: str, seats: int):
        self.root = root
        self.listen = listen
        self.url = f"http://{listen}"
        self.seats = [f"A-{n:02d}" for n in range(1, seats + 1)]
        self.db = f"sqlite:///{root}/console.db"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.recorders: list[subprocess.Popen[bytes]] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FLOORGUARD_")}
        self.env["FLOORGUARD_CONFIG"] = os.devnull

    def seat_dir(self, seat: str) -> Path:
        return self.root / "seats" / seat

    def recorder(self, seat: str) -> str:
        return f"recorder-{seat.lower()}"

    def start(self) -> str:
        password = secrets.token_urlsafe(9)
        for name, role in (("admin", "admin"), ("sv", "sv"), ("auditor", "auditor")):
            _floorguard("console", "--db", self.db, "user", "add", name, "--role", role,
                        env=self.env, input=password + "\n")
        log = open(self.root / "console.log", "ab")  # noqa: SIM115 handed to the child
        self.procs.append(subprocess.Popen(
            [sys.executable, "-m", "floorguard", "console", "--db", self.db, "--listen",
             self.listen], env=self.env, stdout=log, stderr=subprocess.STDOUT))
        _wait_healthy(self.url)
        for seat in self.seats:
            self._start_agent(seat)
        return password

    def _start_agent(self, seat: str) -> None:
        sdir = self.seat_dir(seat)
        for sub in ("Desktop", "usb-stick", "state"):
            (sdir / sub).mkdir(parents=True, exist_ok=True)
        policy = sdir / "policy.toml"
        policy.write_text(POLICY.format(seat_dir=sdir, recorder=self.recorder(seat)),
                          encoding="utf-8")
        env = dict(self.env, FLOORGUARD_STATE_DIR=str(sdir / "state"),
                   FLOORGUARD_POLICY=str(policy), FLOORGUARD_CONSOLE_URL=self.url,
                   FLOORGUARD_SEAT=seat)
        code = _floorguard("console", "--db", self.db, "enroll-code", "--floor", "Demo floor",
                           "--expires", "10m", env=self.env).stdout.strip()
        _floorguard("enroll", "--console", self.url, "--code", code, env=env)
        log = open(sdir / "agent.log", "ab")  # noqa: SIM115 handed to the child
        self.procs.append(subprocess.Popen([sys.executable, "-m", "floorguard", "agent"],
                                           env=env, stdout=log, stderr=subprocess.STDOUT))

    def play(self, rng: random.Random) -> str:
        """One thing an operator does; returns what, for the terminal."""
        seat = rng.choice(self.seats)
        sdir = self.seat_dir(seat)
        act = rng.choice(("export", "export", "stick", "recorder"))
        stamp = time.strftime("%H%M%S")
        if act == "export":
            path = sdir / "Desktop" / f"customers-{stamp}.csv"
            path.write_text("id,name,phone\n1,Sato Hanako,090-0000-0000\n", encoding="utf-8")
            return f"{seat}: saved {path.name} to the desktop"
        if act == "stick":
            path = sdir / "usb-stick" / f"script-{stamp}.txt"
            path.write_text("call script, page 3\n", encoding="utf-8")
            return f"{seat}: copied {path.name} to a USB stick"
        sleep = shutil.which("sleep") or "/bin/sleep"
        exe = sdir / self.recorder(seat)
        shutil.copy2(sleep, exe)
        self.recorders.append(subprocess.Popen([str(exe), "60"], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL,
                                               start_new_session=True))
        return f"{seat}: started a screen recorder"

    def reap(self) -> None:
        """Collect recorders the agents killed, so none lingers as a zombie."""
        self.recorders = [p for p in self.recorders if p.poll() is None]

    def stop(self) -> None:
        for rec in self.recorders:
            if rec.poll() is None:
                rec.kill()
                rec.wait(5)
        # Agents first, while the console still takes their last events (agent.stopped).
        console, agents = self.procs[:1], self.procs[1:]
        for group in (agents, console):
            for proc in group:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in group:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()


def demo_command(args: argparse.Namespace) -> int:
    """Run the emulated floor until Ctrl-C (or for ``--duration`` seconds)."""
    host, _, port = args.listen.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]") or not port.isdigit():
        print("floorguard demo: --listen must be a loopback HOST:PORT", file=sys.stderr)
        return 2
    if args.seats < 1 or args.seats > 50:
        print("floorguard demo: --seats must be between 1 and 50", file=sys.stderr)
        return 2
    made = args.dir is None
    root = Path(args.dir or tempfile.mkdtemp(prefix="floorguard-demo-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    floor = Floor(root, args.listen, args.seats)
    stop = {"now": False}

    def on_signal(*_: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        password = floor.start()
        print(f"floorguard demo floor: {floor.url}/  (users admin, sv, auditor; "
              f"password {password})\nstate in {root}; Ctrl-C stops it", flush=True)
        rng = random.Random()  # noqa: S311 a demo's choices, not secrets
        deadline = time.monotonic() + args.duration if args.duration else None
        next_act = time.monotonic() + 2
        while not stop["now"] and (deadline is None or time.monotonic() < deadline):
            if time.monotonic() >= next_act:
                print(floor.play(rng), flush=True)
                next_act = time.monotonic() + rng.uniform(args.every / 2, args.every * 1.5)
            floor.reap()
            time.sleep(0.1)
    finally:
        floor.stop()
        if made and not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0
