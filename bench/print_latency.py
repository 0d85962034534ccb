"""Print approval latency: from the SV's approval request reaching the console to the job
completed in CUPS, through the real agent, console and a private cupsd.

    .venv/bin/python -m bench.print_latency [--jobs 100]

Prints p50, p95 and max over the jobs, and the split into the console-to-agent leg
(command queued -> delivered) and the agent-to-printer leg (delivered -> completed).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from tests.rigs.agent import AgentProcess
from tests.rigs.console import LiveConsole
from tests.rigs.cupsd import Cupsd
from tests.rigs.processes import floorguard, wait_until

from floorguard.agent.adapters.cups import COMPLETED, Cups
from floorguard.console.store.db import open_store
from floorguard.console.store.schema import commands


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100)
    args = ap.parse_args(argv)

    cupsd = Cupsd()
    work = Path(tempfile.mkdtemp(prefix="fgbench"))
    console = LiveConsole(work / "console")
    agent: AgentProcess | None = None
    try:
        cupsd.start()
        queue, _ = cupsd.add_queue("bench")
        pdf = cupsd.make_pdf("bench.pdf", 1)
        console.workdir.mkdir(parents=True)
        console.add_user("sv1", "sv")
        console.start()
        policy = work / "policy.toml"
        policy.write_text(f'[print]\nqueues = ["{queue}"]\nexpire_after = "1h"\n'
                          'check_interval = "1s"\n')
        agent = AgentProcess(work / "agent", policy, console_url=console.url,
                             env={"FLOORGUARD_CUPS_SERVER": cupsd.socket,
                                  "FLOORGUARD_CUPS_SPOOL": cupsd.spool,
                                  "FLOORGUARD_CUPS_CONF": str(cupsd.conf)})
        res = floorguard("enroll", "--console", console.url,
                         f"--code={console.enroll_code()}", env=agent.env)
        assert res.returncode == 0, res.stderr
        agent_id = (agent.state_dir / "agent_id").read_text().strip()
        agent.start()
        agent.wait_for("print.hold_restored", timeout=30, queue=queue)

        jobs = [cupsd.submit(queue, pdf, title=f"bench {i}") for i in range(args.jobs)]
        sv = console.login("sv1")
        page = sv.get("/print").text
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        assert m
        headers = {"X-CSRF-Token": m.group(1)}

        def all_held() -> bool:
            listed = sv.get("/api/v1/print/jobs", params={"limit": 5000}).json()
            return sum(1 for j in listed if j["agent"] == agent_id) >= len(jobs)

        wait_until(all_held, 120, 0.2, "every job to be held in the console")

        cups = Cups(cupsd.socket)
        total, legs = [], []
        for job in jobs:
            t0 = time.perf_counter()
            resp = sv.post(f"/api/v1/print/jobs/{agent_id}/{job}/decision",
                           json={"decision": "approve"}, headers=headers)
            resp.raise_for_status()
            command = resp.json()["command"]
            while True:
                j = cups.get_job(job)
                if j is not None and j.state == COMPLETED:
                    break
                if time.perf_counter() - t0 > 30:
                    raise SystemExit(f"job {job} did not complete within 30 s")
                time.sleep(0.002)
            total.append(time.perf_counter() - t0)
            legs.append(command)
        cups.close()

        engine = open_store(console.db_url)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(commands.c.created_us, commands.c.delivered_us)
                                .where(commands.c.id.in_(legs)).order_by(commands.c.id)).all()
        engine.dispose()
        delivery = [(r.delivered_us - r.created_us) / 1e6 for r in rows if r.delivered_us]
        agent_leg = [t - d for t, d in zip(total, delivery, strict=False)]

        def line(name: str, values: list[float]) -> str:
            return (f"{name:<34} p50 {percentile(values, 50) * 1000:7.1f} ms   "
                    f"p95 {percentile(values, 95) * 1000:7.1f} ms   "
                    f"max {max(values) * 1000:7.1f} ms")

        print(f"print approval latency over {len(total)} jobs (1-page PDF, private cupsd, "
              "live console on SQLite, real agent)")
        print(line("approval request -> completed", total))
        print(line("  console queued -> agent got it", delivery))
        print(line("  agent got it -> completed", agent_leg))
        print(f"mean {statistics.mean(total) * 1000:.1f} ms; target p95 < 1000 ms: "
              f"{'met' if percentile(total, 95) < 1.0 else 'NOT met'}")
        return 0
    finally:
        if agent is not None:
            agent.stop()
        console.stop()
        cupsd.cleanup()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
