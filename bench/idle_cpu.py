"""The idle control's CPU cost while it watches 5 sessions.

The real agent process (idle control only) follows 5 X11 sessions on dbusmock's logind,
each with its own Xvfb display read through XScreenSaver every 0.25 s, while the desktop
side flips one session's IdleHint every second (PropertiesChanged signals). The agent's
CPU time (user + system, from /proc) over the window is compared with the same agent
watching no session.

    PYTHONPATH=src python -m bench.idle_cpu [--seconds 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import psutil
from tests.rigs.xvfb import start_xvfb, stop_xvfb

from bench.idle_rig import idle_agent, logind_bus

POLICY = '[idle]\nlock_after = "1h"\nnotify = false\n'


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def measure(sessions: int, seconds: float) -> float:
    """CPU seconds per wall second of an agent watching ``sessions`` sessions."""
    with tempfile.TemporaryDirectory(prefix="fg-bench-x-") as tmp, logind_bus() as logind:
        servers = []
        try:
            for i in range(sessions):
                (Path(tmp) / str(i)).mkdir()
                servers.append(start_xvfb(Path(tmp) / str(i)))
            for i, x in enumerate(servers):
                logind.add_session(f"c{i}", 1000 + i, f"op{i}", type="x11",
                                   display=x.display)
            with idle_agent(logind.address, POLICY) as agent:
                assert agent.proc is not None
                time.sleep(3)  # past start-up
                start_cpu, start = cpu_seconds(agent.proc.pid), time.monotonic()
                flips = 0
                while time.monotonic() - start < seconds:
                    if servers:
                        sid = f"c{flips % len(servers)}"
                        logind.set_idle(sid, flips % 2 == 0, time.time())
                        flips += 1
                    time.sleep(1.0)
                used = cpu_seconds(agent.proc.pid) - start_cpu
                problems = [line for line in agent.log.read_text().splitlines()
                            if "X idle time unavailable" in line or "error" in line]
                if problems:
                    raise SystemExit("the agent could not watch every session:\n"
                                     + "\n".join(problems[:5]))
                return used / (time.monotonic() - start)
        finally:
            for x in servers:
                stop_xvfb(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    idle0 = measure(0, args.seconds)
    idle5 = measure(5, args.seconds)
    print(f"agent CPU, idle control watching 0 sessions: {idle0 * 100:.2f} % of one core")
    print(f"agent CPU, idle control watching 5 sessions: {idle5 * 100:.2f} % of one core "
          f"({idle5 / idle0 if idle0 else float('inf'):.1f}x; "
          f"{(idle5 - idle0) * 1000 / 4:.2f} ms of CPU per 0.25 s check for 5 sessions)")


if __name__ == "__main__":
    main()
