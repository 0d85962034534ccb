"""What the leak controls cost: CPU with many processes running, and time to kill.

    python -m bench.leaks_cpu [--duration 600] [--processes 400] [--kill-runs 20]

1. CPU: starts ``--processes`` sleeping processes, then two real agents side by side over
   the same period: one running the files, processes and network controls at their
   policy intervals (the policy defaults: pid diff every 1 s, full scan every 30 s,
   interfaces and connections every 5 s), and one with no control at all (the idle
   agent: scheduler, journal, heartbeat-free). Each agent's own CPU time (all threads,
   user + system) is read from the kernel before and after ``--duration`` seconds, after a
   warm-up that covers start-up and the first full scan. Prints % of one core for both and
   the difference, which is what the three controls cost. Budget: under 0.2 %.
2. Kill time: an agent with ``action = "kill"`` (default ``scan_interval``); a forbidden
   program is started ``--kill-runs`` times and the time from starting it to its death
   (seen by ``waitpid``) is measured. Prints p50, p95 and max.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
from tests.live import AgentProcess, wait_until

from floorguard.policy import parse_duration


def _start_agent(work: Path, name: str, policy: str,
                 env: dict[str, str] | None = None) -> AgentProcess:
    path = work / f"{name}.toml"
    path.write_text(policy)
    agent = AgentProcess(work / name, path, seat=f"BENCH-{name}", env=env)
    agent.start()
    wait_until(lambda: agent.log.exists() and "agent ready" in agent.log.read_text(), 60,
               0.1, f"the {name} agent to be ready")
    return agent


def _cpu(agent: AgentProcess) -> float:
    assert agent.proc is not None
    t = psutil.Process(agent.proc.pid).cpu_times()
    return float(t.user + t.system)


def _unique_program(folder: Path, name: str) -> Path:
    path = folder / name
    shutil.copyfile("/bin/sleep", path)
    with open(path, "ab") as f:
        f.write(secrets.token_bytes(64))  # a hash that matches nothing else on the machine
    os.chmod(path, 0o700)
    return path


def cpu_cost(work: Path, duration: float, processes: int, warmup: float) -> None:
    media, desktop = work / "media", work / "home" / "op1" / "Desktop"
    media.mkdir(parents=True)
    desktop.mkdir(parents=True)
    rec = _unique_program(work, "fgbenchrec" + secrets.token_hex(2))
    digest = hashlib.sha256(rec.read_bytes()).hexdigest()
    controls = textwrap.dedent(f"""\
        [files]
        removable = ["{media}"]
        watch = ["{work}/home/*/Desktop", "{work}/home/*/Downloads"]
        flag = ["*.csv", "*.xlsx", "*.png"]

        [processes]
        forbid = ["{rec.name}", "simplescreenrecorder-bench"]
        forbid_sha256 = ["{digest}"]
        action = "kill"

        [network]
        interfaces = ["*"]

        [[network.egress]]
        net = "10.0.0.0/8"
        ports = [443]
        """)
    sleepers: list[subprocess.Popen[bytes]] = []
    agents: list[AgentProcess] = []
    try:
        for _ in range(processes):
            sleepers.append(subprocess.Popen(["sleep", str(int(duration + warmup + 600))]))
        total = len(psutil.pids())
        with_controls = _start_agent(work, "controls", controls)
        agents.append(with_controls)
        idle = _start_agent(work, "idle", '[floor]\nname = "bench"\n')
        agents.append(idle)
        time.sleep(warmup)
        c0, i0, t0 = _cpu(with_controls), _cpu(idle), time.monotonic()
        time.sleep(duration)
        c1, i1, t1 = _cpu(with_controls), _cpu(idle), time.monotonic()
        elapsed = t1 - t0
        pc, pi = (c1 - c0) / elapsed * 100, (i1 - i0) / elapsed * 100
        print(f"CPU over {elapsed:.0f} s with {total} processes on the machine "
              f"({processes} sleepers started):")
        print(f"  agent with files+processes+network: {c1 - c0:.3f} s CPU = {pc:.3f} % of a core")
        print(f"  idle agent (no controls):           {i1 - i0:.3f} s CPU = {pi:.3f} % of a core")
        print(f"  the three controls:                 {pc - pi:.3f} % of a core "
              f"(budget 0.2 %: {'within' if pc - pi < 0.2 else 'OVER'})")
        events = with_controls.events()
        print(f"  events recorded by the controls agent: {len(events)}")
    finally:
        for a in agents:
            a.stop()
        for s in sleepers:
            s.kill()
        for s in sleepers:
            s.wait()


def kill_time(work: Path, runs: int, scan_interval: str) -> None:
    work.mkdir(parents=True)
    prog = _unique_program(work, "fgbenchobs" + secrets.token_hex(2))
    policy = (f'[processes]\nforbid = ["{prog.name}"]\naction = "kill"\n'
              f'scan_interval = "{scan_interval}"\n')
    agent = _start_agent(work, "killer", policy)
    period = parse_duration(scan_interval)
    times = []
    try:
        for _ in range(runs):
            t0 = time.monotonic()
            p = subprocess.Popen([str(prog), "600"])
            try:
                rc = p.wait(30)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            times.append(time.monotonic() - t0)
            assert rc == -9, f"the forbidden program ended with {rc}, not SIGKILL"
            # start at a random phase of the scan cycle, not just after a scan
            time.sleep(period * secrets.randbelow(1000) / 1000)
        killed = [e for e in agent.events() if e["kind"] == "processes.killed"]
    finally:
        agent.stop()
    q = statistics.quantiles(times, n=20, method="inclusive")
    print(f"start of a forbidden program to its death, scan_interval {scan_interval}, "
          f"{runs} runs:")
    print(f"  p50 {statistics.median(times) * 1000:.0f} ms, p95 {q[18] * 1000:.0f} ms, "
          f"max {max(times) * 1000:.0f} ms; processes.killed events: {len(killed)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="measured seconds (600)")
    ap.add_argument("--warmup", type=float, default=35.0,
                    help="seconds before measuring: start-up and the first full scan (35)")
    ap.add_argument("--processes", type=int, default=400, help="sleepers to start (400)")
    ap.add_argument("--kill-runs", type=int, default=20, help="kill-time samples (20)")
    ap.add_argument("--scan-interval", default="1s", help='processes.scan_interval ("1s")')
    ap.add_argument("--skip-cpu", action="store_true", help="only measure the kill time")
    ap.add_argument("--skip-kill", action="store_true", help="only measure CPU")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root: the agent reads every process and kills forbidden ones",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fgbench-") as tmp:
        work = Path(tmp)
        if not args.skip_kill:
            kill_time(work / "kill", args.kill_runs, args.scan_interval)
        if not args.skip_cpu:
            cpu_cost(work / "cpu", args.duration, args.processes, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
