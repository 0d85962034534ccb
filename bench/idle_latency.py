"""How late the agent asks logind to lock after ``lock_after`` has passed.

The real agent process watches one session on dbusmock's logind. Each trial marks the
session idle (IdleSinceHint = now), and a separate D-Bus client timestamps the session's
``Lock`` signal, which logind emits when LockSession arrives. Lateness = that moment
minus (idle since + lock_after). Trials start at random phases of the 0.25 s check.

    PYTHONPATH=src python -m bench.idle_latency [--trials 20]
"""

from __future__ import annotations

import argparse
import queue
import random
import statistics
import time

from jeepney import MatchRule, message_bus
from jeepney.io.threading import DBusRouter, Proxy, open_dbus_connection

from bench.idle_rig import idle_agent, logind_bus

LOCK_AFTER = 1.0
POLICY = f'[idle]\nlock_after = "{LOCK_AFTER:g}s"\nverify_within = "5s"\nnotify = false\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    late: list[float] = []
    with logind_bus() as logind:
        logind.add_session("c1", 1000, "alice", type="wayland")
        router = DBusRouter(open_dbus_connection(logind.address))
        rule = MatchRule(type="signal", interface="org.freedesktop.login1.Session",
                         member="Lock")
        Proxy(message_bus, router).AddMatch(rule)
        seen: queue.Queue[object] = queue.Queue()
        handle = router.filter(rule, queue=seen)
        try:
            with idle_agent(logind.address, POLICY) as agent:
                for i in range(args.trials):
                    time.sleep(random.uniform(0.3, 0.6))
                    since = time.time()
                    logind.set_idle("c1", True, since)
                    seen.get(timeout=10)
                    late.append(time.time() - (since + LOCK_AFTER))
                    agent.wait_for("idle.locked", count=i + 1)
                    logind.set_locked("c1", False)
                    logind.set_idle("c1", False)
                    agent.wait_for("idle.unlocked", count=i + 1)
        finally:
            handle.close()
            router.close()
            router.conn.close()
    ms = sorted(x * 1000 for x in late)
    p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
    print(f"lock issued after lock_after passed ({len(ms)} trials, check every 0.25 s):")
    print(f"  median {statistics.median(ms):.0f} ms, p95 {p95:.0f} ms, "
          f"max {ms[-1]:.0f} ms, min {ms[0]:.0f} ms (target: within 1000 ms)")


if __name__ == "__main__":
    main()
