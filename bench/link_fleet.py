"""A fleet of simulated agents against one console on SQLite: heartbeats and long-polls.

Runs the agent's real channel classes (``ConsoleSession``, ``Heartbeat``,
``CommandPoller`` from ``floorguard.agent.link.channel``), many per process, each agent with
its own client and its own heartbeat and command-poll threads as in the agent, against
``floorguard console`` in its own process. Commands are queued two ways: through the SV's
"lock this seat now" button (the console process wakes the long-poll at once) and
straight into the store, as another console process behind a load balancer would (found
by the store poll). Prints the console's CPU and memory, heartbeat round-trip percentiles
and command delivery percentiles (queued -> handler running on the agent).

    python bench/link_fleet.py --agents 1000 --duration 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

import httpx  # noqa: E402
import psutil  # noqa: E402

from floorguard.agent.link.channel import CommandPoller, ConsoleSession, Heartbeat  # noqa: E402


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def worker(url: str, agents: list[tuple[str, str]], interval: float, duration: float,
           out: Any, niceness: int) -> None:
    """One client process: ``len(agents)`` agents, each with its own client and its
    heartbeat and command-poll threads, as ``Channel`` runs them in the agent."""
    if niceness:
        os.nice(niceness)
    stop = threading.Event()
    received: list[tuple[str, int, dict[str, Any], float]] = []
    heartbeats: list[Heartbeat] = []
    pollers: list[CommandPoller] = []
    sessions: list[ConsoleSession] = []
    threads: list[threading.Thread] = []
    for aid, tok in agents:
        # each agent its own client and connections, as on the floor (plain HTTP on
        # loopback: no CA bundle to load a thousand times)
        session = ConsoleSession(url, (lambda t=tok: t), verify=False)
        sessions.append(session)
        status = {"version": "bench", "policy": "0" * 64, "controls": ["usb", "idle"],
                  "unavailable": {}, "user": "op", "locked": False, "interval": interval}
        hb = Heartbeat(session, lambda s=status: s, interval=lambda: interval)

        def execute(cmd: dict[str, Any], aid: str = aid) -> dict[str, Any]:
            received.append((aid, int(cmd["id"]), cmd["args"], time.time()))
            return {"ok": True}

        poller = CommandPoller(session, execute)
        heartbeats.append(hb)
        pollers.append(poller)
        boot = random.uniform(0, interval)  # agents boot at random

        def run(loop: Any, boot: float = boot) -> None:
            if not stop.wait(boot):
                loop(stop)

        threads += [threading.Thread(target=run, args=(hb.run,), daemon=True),
                    threading.Thread(target=run, args=(poller.run,), daemon=True)]
    for t in threads:
        t.start()
    time.sleep(duration)
    stop.set()
    for hb in heartbeats:
        hb.wake()
    for t in threads[0::2]:  # heartbeats end at once; command polls may be mid-wait
        t.join(15)
    failures = {"hb_failures": sum(hb.failures for hb in heartbeats),
                "poll_failures": sum(p.failures for p in pollers)}
    cpu = psutil.Process().cpu_times()
    out.put({"cpu_s": cpu.user + cpu.system,
             "heartbeat": [x for hb in heartbeats for x in hb.latencies],
             "received": list(received), **failures})
    for session in sessions:
        session.close()


def setup_store(db_url: str, n: int) -> list[tuple[str, str]]:
    import uuid

    from floorguard.console.auth import add_user, sha256_hex
    from floorguard.console.store.db import now_us, open_store
    from floorguard.console.store.schema import agents

    engine = open_store(db_url)
    fleet = [(str(uuid.uuid4()), secrets.token_urlsafe(32)) for _ in range(n)]
    with engine.begin() as conn:
        conn.execute(agents.insert(), [
            {"id": aid, "token_hash": sha256_hex(tok), "host": f"pc{i}", "seat": f"S-{i:04d}",
             "floor": "bench", "enrolled_us": now_us()} for i, (aid, tok) in enumerate(fleet)])
        add_user(conn, "sv1", "sv", "bench password 123")
    engine.dispose()
    return fleet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    ap.add_argument("--interval", type=float, default=10.0, help="heartbeat interval (s)")
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    ap.add_argument("--commands", type=float, default=10.0, help="commands per second")
    ap.add_argument("--console-nice", type=int, default=0,
                    help="niceness of the console (negative needs root): on a shared "
                    "machine, give it the priority a dedicated console host would")
    ap.add_argument("--client-nice", type=int, default=0,
                    help="niceness of the simulated agents (their own PCs on a real floor)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fg-bench-"))
    db_url = f"sqlite:///{tmp}/console.db"
    fleet = setup_store(db_url, args.agents)
    port = 20000 + os.getpid() % 20000
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "FLOORGUARD_CONFIG": "/dev/null"}
    def console_priority() -> None:
        if args.console_nice:
            os.nice(args.console_nice)

    console = subprocess.Popen([sys.executable, "-m", "floorguard", "console", "--db", db_url,
                                "--listen", f"127.0.0.1:{port}"], env=env,
                               stdout=subprocess.DEVNULL, preexec_fn=console_priority,
                               stderr=open(tmp / "console.log", "w"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the console did not start: " + (tmp / "console.log").read_text())
            time.sleep(0.1)
        proc = psutil.Process(console.pid)
        warmup = args.interval + 5
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        shares = [fleet[i::args.procs] for i in range(args.procs)]
        workers = [ctx.Process(target=worker, args=(url, share, args.interval,
                                                    warmup + args.duration, queue,
                                                    args.client_nice))
                   for share in shares]
        for w in workers:
            w.start()
        time.sleep(warmup)  # every agent has heartbeat once and is long-polling

        sv = httpx.Client(base_url=url, timeout=30)
        sv.post("/login", data={"username": "sv1", "password": "bench password 123"})
        csrf = re.search(r'name="csrf" value="([^"]+)"', sv.get("/agents").text)
        assert csrf, "could not sign in as the SV"
        from floorguard.console.commands import enqueue
        from floorguard.console.store.db import make_engine

        store = make_engine(db_url)
        cpu0, t0 = proc.cpu_times(), time.monotonic()
        rss = [proc.memory_info().rss]
        sent_ui: dict[str, float] = {}
        sent = sv_failures = 0
        end = t0 + args.duration
        next_cmd = t0
        order = [aid for aid, _ in fleet]
        random.shuffle(order)
        while time.monotonic() < end - 3:  # leave time for the last deliveries
            now = time.monotonic()
            if now >= next_cmd:
                # each SV press goes to an agent not pressed before, so that its
                # delivery is matched to the right press
                aid = order[sent % len(order)]
                if sent % 2 == 0 and aid not in sent_ui:
                    sent_ui[aid] = time.time()
                    try:
                        sv.post(f"/agents/{aid}/lock", data={"csrf": csrf.group(1)})
                    except httpx.HTTPError:
                        sv_failures += 1
                else:
                    with store.begin() as conn:
                        enqueue(conn, aid, "bench_probe", {"t0": time.time()}, "bench")
                sent += 1
                next_cmd += 1 / args.commands
            if int(now - t0) != int(now - t0 - 0.01):
                rss.append(proc.memory_info().rss)
            time.sleep(0.005)
        while time.monotonic() < end:
            time.sleep(0.2)
            rss.append(proc.memory_info().rss)
        cpu1, t1 = proc.cpu_times(), time.monotonic()
        results = [queue.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(30)
        # The console's own part of delivery, from its store: queued -> handed to the
        # agent's waiting poll (free of any delay in the simulated agents' processes).
        with store.connect() as conn:
            server = [(r[1] - r[0]) / 1e6 for r in conn.exec_driver_sql(
                "SELECT created_us, delivered_us FROM commands WHERE delivered_us "
                "IS NOT NULL")]
            undelivered = conn.exec_driver_sql(
                "SELECT count(*) FROM commands WHERE delivered_us IS NULL").scalar()
        store.dispose()
    finally:
        console.terminate()
        try:
            console.wait(15)
        except subprocess.TimeoutExpired:
            console.kill()
            console.wait(5)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)

    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (t1 - t0)
    hb = [x for r in results for x in r["heartbeat"]]
    ui, direct = [], []
    for r in results:
        for aid, _cid, cargs, at in r["received"]:
            if "t0" in cargs:
                direct.append(at - cargs["t0"])
            elif aid in sent_ui:
                ui.append(at - sent_ui[aid])
    both = ui + direct
    report = {
        "agents": args.agents, "client_processes": args.procs,
        "heartbeat_interval_s": args.interval, "measured_s": round(t1 - t0, 1),
        "console_cpu_percent_of_one_core": round(cpu * 100, 1),
        "console_rss_mb_max": round(max(rss) / 1_048_576, 1),
        "heartbeats": len(hb), "heartbeat_ms_p50": round(pct(hb, 50) * 1000, 1),
        "heartbeat_ms_p99": round(pct(hb, 99) * 1000, 1),
        "heartbeat_failures": sum(r["hb_failures"] for r in results),
        "poll_failures": sum(r["poll_failures"] for r in results),
        "commands_sent": sent, "commands_delivered": len(both),
        "sv_button_failures": sv_failures,
        "delivery_ms_p50": round(pct(both, 50) * 1000, 1),
        "delivery_ms_p99": round(pct(both, 99) * 1000, 1),
        "delivery_sv_button_ms_p99": round(pct(ui, 99) * 1000, 1),
        "delivery_other_process_ms_p99": round(pct(direct, 99) * 1000, 1),
        "delivery_ms_mean": round(statistics.fmean(both) * 1000, 1) if both else None,
        "console_side_delivery_ms_p50": round(pct(server, 50) * 1000, 1),
        "console_side_delivery_ms_p99": round(pct(server, 99) * 1000, 1),
        "commands_never_delivered": undelivered,
        "client_cpu_s_total": round(sum(r["cpu_s"] for r in results), 1),
        "console_nice": args.console_nice, "client_nice": args.client_nice,
        "host_cores": os.cpu_count(),
        "host_load_avg_1m_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
