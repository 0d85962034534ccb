"""File names and command lines that are not UTF-8 are recorded, escaped and recoverable,
by the real files and processes controls over a real journal.

Before the escape, such an event failed with "surrogates not allowed" and was lost, and
took every other event of its group commit with it.
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floorguard.agent.controls.files.control import FilesControl
from floorguard.agent.controls.processes.control import ProcessesControl
from floorguard.journal import JournalReader
from floorguard.osbytes import escape, unescape
from tests.controls.leaks.conftest import Harness, unique_program


def _policy(tmp: Path) -> str:
    return (f'[files]\nremovable = ["{tmp}/media"]\nwatch = ["{tmp}/home/*/Desktop"]\n'
            'flag = ["*.csv", "*.txt"]\n')


def _layout(tmp: Path) -> tuple[Path, Path]:
    media, desk = tmp / "media", tmp / "home" / "alice" / "Desktop"
    media.mkdir()
    desk.mkdir(parents=True)
    return media, desk


def test_a_copied_file_whose_name_is_not_utf8_is_a_violation_with_its_exact_bytes(
        harness: Harness, tmp_path: Path) -> None:
    media, desk = _layout(tmp_path)
    harness.start(FilesControl, _policy(tmp_path))
    stick = os.fsencode(media / "STICK")
    os.mkdir(stick)
    name = stick + b"/cust-\xff\xfe.txt"
    with open(name, "wb") as f:
        f.write(b"name,phone\n")
    shown = escape(name)
    assert shown.endswith("/STICK/cust-\\xff\\xfe.txt")
    ev = harness.wait_for("files.copied", path=shown)[0]
    assert ev["severity"] == "violation"
    assert unescape(ev["details"]["path"]) == name  # the exact bytes, recoverable
    # and files.flagged for a watched folder likewise
    flagged = os.fsencode(desk) + b"/\x81\x82 list.csv"
    with open(flagged, "wb") as f:
        f.write(b"x")
    ev = harness.wait_for("files.flagged", path=escape(flagged))[0]
    assert unescape(ev["details"]["path"]) == flagged
    with JournalReader(harness.state) as r:
        assert r.verify() == (None, "intact")


_names = itertools.count()


@pytest.mark.usefixtures("harness")
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=1, max_size=40).map(
    lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")))
def test_any_file_name_bytes_are_recorded_losslessly(harness: Harness, tmp_path: Path,
                                                     raw: bytes) -> None:
    media = tmp_path / "media"
    if not harness.controls:
        _layout(tmp_path)
        harness.start(FilesControl, _policy(tmp_path))
    folder = os.fsencode(media) + b"/%d" % next(_names)
    os.mkdir(folder)  # a folder each: the same name twice would be one event
    name = folder + b"/" + raw
    with open(name, "wb") as f:
        f.write(b"1")
    ev = harness.wait_for("files.copied", path=escape(name))[0]
    assert unescape(ev["details"]["path"]) == name
    ev["details"]["path"].encode("utf-8")


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


def test_a_forbidden_program_with_a_non_utf8_argument_is_killed_and_recorded(
        harness: Harness, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    name = "fgobs" + secrets.token_hex(3)
    prog = unique_program(tmp_path, name, "/bin/sh")  # sh takes any bytes as its $0
    harness.start(ProcessesControl, f'[processes]\nforbid = ["{name}"]\naction = "kill"\n'
                  'check_interval = "50ms"\nfull_check_interval = "1s"\n')
    p = subprocess.Popen([os.fsencode(prog), b"-c", b"sleep 300; :", b"--title=\xff\xfe\\x"])
    procs.append(p)
    assert p.wait(10) == -9
    ev = harness.wait_for("processes.killed", pid=p.pid)[0]
    assert ev["details"]["cmdline"] == [str(prog), "-c", "sleep 300; :",
                                        "--title=\\xff\\xfe\\\\x"]
    assert unescape(ev["details"]["cmdline"][3]) == b"--title=\xff\xfe\\x"
    with JournalReader(harness.state) as r:
        assert r.verify() == (None, "intact")
