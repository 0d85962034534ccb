"""The processes control against real processes (psutil over the real /proc)."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from floorguard.agent.controls.processes.control import ProcessesControl, protected_pids
from tests.controls.leaks.conftest import Harness, unique_program
from tests.rigs.processes import wait_until

FAST = 'check_interval = "50ms"\nfull_check_interval = "1s"\n'


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(5)


def _name() -> str:
    return "fgobs" + secrets.token_hex(3)


def test_a_forbidden_program_is_killed_and_the_event_names_user_and_command_line(
        harness: Harness, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    name = _name()
    prog = unique_program(tmp_path, name)
    harness.start(ProcessesControl,
                  f'[processes]\nforbid = ["{name}"]\naction = "kill"\n{FAST}')
    p = subprocess.Popen([str(prog), "300"])
    procs.append(p)
    assert p.wait(10) == -9
    ev = harness.wait_for("processes.killed", pid=p.pid)[0]
    assert ev["severity"] == "violation"
    assert ev["user"] == "root"
    assert ev["seat"] == "T-07"
    d = ev["details"]
    assert d["exe"] == str(prog)
    assert d["cmdline"] == [str(prog), "300"]
    assert d["name"] == name
    assert d["matched"] == f'name "{name}"'
    assert d["operator"] == "op1"


def test_report_mode_flags_once_and_leaves_the_program_running(
        harness: Harness, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    name = _name()
    prog = unique_program(tmp_path, name)
    control = harness.start(ProcessesControl,
                            f'[processes]\nforbid = ["fgobs*"]\naction = "report"\n{FAST}')
    p = subprocess.Popen([str(prog), "300"])
    procs.append(p)
    ev = harness.wait_for("processes.flagged", pid=p.pid)[0]
    assert ev["severity"] == "warning"
    assert ev["details"]["matched"] == 'name "fgobs*"'
    # several full scans later it still runs and was reported only once
    start = control.scans
    wait_until(lambda: control.scans >= start + 30, what="30 more scans")
    assert p.poll() is None
    assert len([e for e in harness.events("processes.flagged")
                if e["details"]["pid"] == p.pid]) == 1


def test_a_renamed_copy_is_caught_by_the_hash_of_its_executable(
        harness: Harness, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    prog = unique_program(tmp_path, _name())
    digest = hashlib.sha256(prog.read_bytes()).hexdigest()
    renamed = tmp_path / "calculator"
    os.rename(prog, renamed)
    harness.start(ProcessesControl, f'[processes]\nforbid = ["{prog.name}"]\n'
                  f'forbid_sha256 = ["{digest}"]\naction = "kill"\n{FAST}')
    p = subprocess.Popen([str(renamed), "300"])
    procs.append(p)
    assert p.wait(10) == -9
    ev = harness.wait_for("processes.killed", pid=p.pid)[0]
    assert ev["details"]["matched"] == f"sha256 {digest}"
    assert ev["details"]["sha256"] == digest
    assert ev["details"]["exe"] == str(renamed)


def test_forbidden_paths_match_by_glob_and_name_the_unprivileged_user(
        harness: Harness, procs: list[subprocess.Popen[bytes]]) -> None:
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="fgproc-"))
    try:
        os.chmod(top, 0o755)  # noqa: S103 - the unprivileged user must reach it
        (top / "opt").mkdir()
        prog = unique_program(top / "opt", "helper")
        harness.start(ProcessesControl, f'[processes]\nforbid_paths = ["{top}/opt/*"]\n'
                      f'action = "kill"\n{FAST}')
        p = subprocess.Popen(["setpriv", "--reuid=nobody", "--regid=nogroup",
                              "--clear-groups", str(prog), "300"])
        procs.append(p)
        assert p.wait(10) == -9
        ev = harness.wait_for("processes.killed", pid=p.pid)[0]
        assert ev["user"] == "nobody"
        assert ev["details"]["user"] == "nobody"
        assert ev["details"]["matched"] == f'path "{top}/opt/*"'
    finally:
        shutil.rmtree(top)


def test_a_process_that_execs_a_forbidden_program_after_it_started_is_caught(
        harness: Harness, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    name = _name()
    prog = unique_program(tmp_path, name)
    harness.start(ProcessesControl, f'[processes]\nforbid = ["{name}"]\naction = "kill"\n'
                  'check_interval = "50ms"\nfull_check_interval = "1h"\n')
    # the shell is seen first under its own name; it becomes the forbidden program later,
    # long before any full scan would look at it again
    p = subprocess.Popen(["sh", "-c", f"sleep 0.3; exec {prog} 300"])
    procs.append(p)
    assert p.wait(10) == -9
    harness.wait_for("processes.killed", pid=p.pid)


def test_the_agent_itself_and_pid_1_are_never_killed() -> None:
    protected = protected_pids()
    assert os.getpid() in protected
    assert os.getppid() in protected
    assert 1 in protected


def test_a_new_policy_judges_programs_already_running(
        harness: Harness, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    from floorguard.policy import parse_policy

    name = _name()
    prog = unique_program(tmp_path, name)
    control = harness.start(ProcessesControl, f'[processes]\nforbid = ["{_name()}"]\n'
                            'action = "kill"\ncheck_interval = "50ms"\n')
    p = subprocess.Popen([str(prog), "300"])
    procs.append(p)
    start = control.scans
    wait_until(lambda: control.scans >= start + 3, what="the program to be seen and passed")
    assert p.poll() is None
    control.apply_policy(parse_policy(f'[processes]\nforbid = ["{name}"]\naction = "kill"\n'
                                      'check_interval = "50ms"\n'))
    assert p.wait(10) == -9
    harness.wait_for("processes.killed", pid=p.pid)
