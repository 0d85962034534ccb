"""``floorguard demo`` runs a real console and real agents whose controls catch the
emulated operators."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.rigs.processes import floorguard, free_port


def test_demo_floor_reaches_the_console_through_real_controls(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    res = floorguard("demo", "--listen", f"127.0.0.1:{free_port()}", "--seats", "2",
                     "--duration", "14", "--every", "1", "--dir", str(root), timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "users admin, sv, auditor" in res.stdout
    acted = [line for line in res.stdout.splitlines() if line.startswith("A-0")]
    assert acted, res.stdout
    with sqlite3.connect(root / "console.db") as db:
        rows = db.execute("SELECT seat, kind FROM events").fetchall()
    seats = {seat for seat, _ in rows}
    kinds = {kind for _, kind in rows}
    assert seats == {"A-01", "A-02"}
    assert {"agent.started", "agent.stopped"} <= kinds
    expected = {"files.flagged" if "desktop" in line else
                "files.copied" if "USB stick" in line else "processes.killed"
                for line in acted[:-1]}  # the last action may land after shutdown began
    assert expected <= kinds, (acted, kinds)


def test_demo_refuses_a_non_loopback_address(tmp_path: Path) -> None:
    res = floorguard("demo", "--listen", "192.0.2.1:8765", "--dir", str(tmp_path))
    assert res.returncode == 2
    assert "loopback" in res.stderr
