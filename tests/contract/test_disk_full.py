"""A full state_dir loses no violation silently: they wait in memory and are written when
space returns; what cannot be kept is declared by a chained agent.gap with counts.

The journal runs in a child process inside a private mount namespace on a small tmpfs
(``unshare -m``, as root), which a filler file makes really full: SQLite meets ENOSPC
exactly as on a full /var/lib/floorguard. Run as a script, this file is that child.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

FIELDS = {"agent": "0a0a0a0a-0000-4000-8000-000000000001", "host": "pc-17", "seat": "T-01",
          "user": "alice", "control": "files", "policy": "ab" * 32}


def run_full(tmp_path: Path, scenario: str, *args: str, size: str = "4m") -> dict[str, Any]:
    """Run ``scenario`` of this file in a private mount namespace on a tmpfs of ``size``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("the disk-full tests need root and unshare (util-linux) to mount a "
                    "private tmpfs; run the suite as root as CI does")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).parents[2] / "src"), str(Path(__file__).parents[2])])}
    script = (f'mount -t tmpfs -o size={size} fgfull "$1" && shift && '
              f'exec "$@"')
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                          "sh", str(mnt), sys.executable, __file__, scenario, str(mnt), *args],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def test_violations_wait_in_memory_and_are_written_when_space_returns(tmp_path: Path
                                                                       ) -> None:
    out = run_full(tmp_path, "hold", "200")
    assert out["held_errors"] == 200  # each control heard at once that its event waits
    assert out["condition_while_full"].startswith("degraded: disk full (database or disk "
                                                  "is full)")
    assert "200 warnings/violations held in memory" in out["condition_while_full"]
    assert out["condition_after"] == "ok"
    # every one of them stored, in the order they happened, chain intact
    assert out["stored_n"] == list(range(200))
    assert out["verify"] == [None, "intact"]
    assert out["gaps"] == []  # nothing was lost, so nothing is declared
    assert out["waits_returned_records"] is True


def test_what_cannot_be_kept_is_declared_by_a_chained_gap_with_counts(tmp_path: Path
                                                                       ) -> None:
    out = run_full(tmp_path, "overflow")
    # hold_max is 5: five violations were kept, 15 more and every info were not
    assert out["stored_n"] == [0, 1, 2, 3, 4]
    (gap,) = out["gaps"]
    assert gap["severity"] == "warning" and gap["seq"] == out["first_seq_after"]
    assert gap["details"]["severities"] == {"info": 10, "violation": 15}
    assert gap["details"]["kinds"] == {"files.copied": 15, "files.flagged": 10}
    assert gap["details"]["dropped"] == 25
    assert "state_dir was full" in gap["details"]["reason"]
    assert gap["details"]["first_ts"] <= gap["details"]["last_ts"]
    assert out["verify"] == [None, "intact"]
    assert out["not_kept_errors"] == 25


# --- the child, in the private mount namespace -------------------------------------------


def _fill(mnt: Path) -> Path:
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 512, 1):  # down to the last byte
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def _child(scenario: str, mnt: Path, args: list[str]) -> dict[str, Any]:
    from floorguard.journal import Journal, JournalError, JournalHeld, JournalReader

    state = mnt / "state"
    # Big details exhaust the WAL file's free frames quickly; a second argument sets it.
    big = "x" * (int(args[1]) if len(args) > 1 else 2000)
    hold_max = 5 if scenario == "overflow" else 10_000
    out: dict[str, Any] = {}
    j = Journal(state, retry_interval=0.05, hold_max=hold_max).open()
    try:
        for i in range(5):
            j.record({**FIELDS, "kind": "files.flagged", "severity": "info",
                      "details": {"warmup": i}})
        filler = _fill(mnt)
        # Until SQLite runs out of room in the files it already has, violations still go
        # straight to disk; from the first one held, the disk is really full.
        stored_before = 0
        while True:
            try:
                j.record({**FIELDS, "kind": "files.copied", "severity": "violation",
                          "details": {"pad": big, "before": stored_before}})
            except JournalHeld:
                break
            stored_before += 1
            if stored_before > 10_000:
                raise RuntimeError("the tmpfs never filled up")
        out["stored_before_full"] = stored_before
        # That first held one is n=0 in the record below: re-label by count instead.
        tickets = []
        n = int(args[0]) if args else 20
        held = not_kept = 0
        t0 = time.monotonic()
        for i in range(1, n if scenario == "hold" else 20):
            ticket = j.append({**FIELDS, "kind": "files.copied", "severity": "violation",
                               "details": {"pad": big, "n": i}})
            tickets.append(ticket)
        if scenario == "overflow":
            for i in range(10):
                tickets.append(j.append({**FIELDS, "kind": "files.flagged",
                                         "severity": "info", "details": {"info": i}}))
        for t in tickets:
            try:
                t.wait(10)
            except JournalHeld:
                held += 1
            except JournalError:
                not_kept += 1
        out["hold_ms_per_event"] = round((time.monotonic() - t0) * 1000 / max(len(tickets),
                                                                              1), 3)
        out["held_errors"] = held + 1  # and the first one, held above
        out["not_kept_errors"] = not_kept
        out["condition_while_full"] = j.condition()
        freed = time.monotonic()
        filler.unlink()
        deadline = freed + 30
        while j.condition() != "ok" and time.monotonic() < deadline:
            time.sleep(0.005)
        out["flush_s"] = round(time.monotonic() - freed, 3)
        out["condition_after"] = j.condition()
        out["waits_returned_records"] = all(
            t.wait(0).get("seq") for t in tickets if t.error is None)
        out["first_seq_after"] = stored_before + 6
    finally:
        j.close()
    with JournalReader(state) as r:
        recs = list(r.records(after_seq=5 + stored_before))
        out["verify"] = list(r.verify())
    # the first held violation carries "before": stored_before; the rest carry "n"
    out["stored_n"] = [rec["details"].get("n", 0) for rec in recs
                       if rec["kind"] == "files.copied"]
    out["gaps"] = [rec for rec in recs if rec["kind"] == "agent.gap"]
    return out


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])))


def test_a_live_agent_on_a_full_disk_shows_degraded_and_delivers_every_violation(
        tmp_path: Path) -> None:
    """The real agent with its state_dir on a tmpfs of its own (a private mount
    namespace), files copied to a removable folder while that tmpfs is full: the Agents
    page says the journal is degraded, and once space returns every violation reaches
    the console."""
    import re

    from tests.rigs.agent import AgentProcess
    from tests.rigs.console import LiveConsole
    from tests.rigs.processes import base_env, running, wait_until

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.fail("this test needs root and unshare (util-linux) for a private tmpfs")
    media = tmp_path / "media"
    media.mkdir()
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[floor]\nname = "3F north"\n\n[agent]\nheartbeat_interval = "1s"\n\n'
                      f'[files]\nremovable = ["{media}"]\n')
    console = LiveConsole(tmp_path / "console")
    console.workdir.mkdir(parents=True)
    console.add_user("admin1", "admin")
    console.start()
    agent = AgentProcess(tmp_path / "agent", policy, console_url=console.url)
    # The enrolled state moves onto a 4 MiB tmpfs mounted over state_dir in the agent's
    # own mount namespace; from here it is reached through /proc/PID/root.
    agent.wrapper = ("unshare", "-m", "--propagation", "private", "sh", "-c",
                     'cp -a "$0" "$0.seed" && mount -t tmpfs -o size=4m fgfull "$0" && '
                     'cp -a "$0.seed/." "$0/" && exec "$@"', str(agent.state_dir))
    with running(console):
        assert agent.enroll(console.url, console.enroll_code()).returncode == 0
        agent.start()
        with running(agent):
            wait_until(lambda: "agent ready" in agent.log.read_text(), 20, 0.05,
                       "the agent to start its controls")
            assert agent.proc is not None
            inside = Path(f"/proc/{agent.proc.pid}/root{agent.state_dir}")
            web = console.login("admin1")

            def agents_page() -> str:
                return str(web.get("/agents").text)

            filler = _fill(inside)
            copied = []
            for i in range(30):
                (media / f"customers-{i}.csv").write_text("name,phone\n")
                copied.append(str(media / f"customers-{i}.csv"))
            page = wait_until(lambda: (lambda t: t if "degraded: disk full" in t else "")(
                agents_page()), 20, 0.2, "the Agents page to show the journal degraded")
            assert re.search(r"\d+ warnings/violations held in memory", page)
            filler.unlink()

            def delivered() -> set[str]:
                return {r for r in console_paths(console) if r in copied}

            wait_until(lambda: delivered() == set(copied), 30, 0.2,
                       "every violation to reach the console")
            wait_until(lambda: "degraded: disk full" not in agents_page(), 20, 0.2,
                       "the Agents page to show the journal healthy again")
            # verify runs inside the agent's mount namespace, where its state_dir is
            res = subprocess.run(["nsenter", "-t", str(agent.proc.pid), "-m",
                                  sys.executable, "-m", "floorguard", "verify",
                                  "--state-dir", str(agent.state_dir)],
                                 capture_output=True, text=True, env=base_env(), timeout=60)
            assert res.returncode == 0 and "journal intact" in res.stdout, res.stderr
            web.close()


def console_paths(console: Any) -> list[str]:
    """The paths of the files.copied events the console holds."""
    import sqlalchemy as sa

    engine = sa.create_engine(console.db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT details FROM events WHERE kind = 'files.copied'")).all()
    finally:
        engine.dispose()
    return [json.loads(d)["path"] for (d,) in rows]
