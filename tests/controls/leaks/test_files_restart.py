"""Files written while the agent was not running: a real ``floorguard agent`` process is
stopped, files appear in its removable root and watched folder, and the next start
reports each of them once, with its mtime."""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floorguard.agent.controls.files.control import SEEN_FILE, SeenFiles, seen_key, seen_state
from floorguard.events import rfc3339
from floorguard.journal import JournalReader
from tests.rigs.agent import AgentProcess
from tests.rigs.processes import wait_until

CAUGHT_UP = "files written while the agent was not running checked"


def _setup(tmp: Path) -> tuple[Path, Path, AgentProcess]:
    media = tmp / "media"
    downloads = tmp / "home" / "alice" / "Downloads"
    media.mkdir()
    downloads.mkdir(parents=True)
    policy = tmp / "policy.toml"
    policy.write_text("[files]\n"
                      f'removable = ["{media}"]\n'
                      f'watch = ["{tmp}/home/*/Downloads"]\n'
                      'flag = ["*.csv"]\n')
    return media, downloads, AgentProcess(tmp / "agent", policy)


def _events(agent: AgentProcess) -> list[dict[str, Any]]:
    if not (agent.state_dir / "journal.db").exists():
        return []
    with JournalReader(agent.state_dir) as r:
        return [e for e in r.records() if e["kind"] in ("files.copied", "files.flagged")]


def _start(agent: AgentProcess) -> None:
    """Start the agent and wait until its start catch-up is done."""
    before = agent.log.read_text().count(CAUGHT_UP) if agent.log.exists() else 0
    agent.start()

    def caught_up() -> bool:
        assert agent.proc is not None and agent.proc.poll() is None, agent.log.read_text()
        return agent.log.read_text().count(CAUGHT_UP) > before

    wait_until(caught_up, 30, 0.05, "the files catch-up at start")


def _stop(agent: AgentProcess) -> None:
    assert agent.stop(20) == 0, agent.log.read_text()[-3000:]


def _write(path: Path, data: bytes, mtime: float) -> None:
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def test_files_written_while_stopped_are_reported_once_at_start_with_their_mtime(
        tmp_path: Path) -> None:
    media, downloads, agent = _setup(tmp_path)
    past = time.time() - 3600
    _write(media / "kept.txt", b"there before the first start\n", past)
    _write(media / "edited.txt", b"v1\n", past)
    _write(downloads / "old.csv", b"a,b\n", past)
    _start(agent)
    try:
        assert _events(agent) == []  # the first start takes what is there as seen
        _stop(agent)

        _write(media / "new.txt", b"copied while the agent was down\n", past + 60)
        _write(media / "edited.txt", b"v2, longer\n", past + 120)
        _write(downloads / "export.csv", b"name,phone\n", past + 180)
        _write(downloads / "notes.txt", b"not flagged\n", past + 240)
        _start(agent)
        wait_until(lambda: len(_events(agent)) >= 3, 15, 0.05, "three reports")
        time.sleep(0.5)  # anything reported twice would be in by now
        got = {(e["kind"], e["details"]["path"]): e["details"] for e in _events(agent)}
        assert len(_events(agent)) == 3
        assert set(got) == {("files.copied", str(media / "new.txt")),
                            ("files.copied", str(media / "edited.txt")),
                            ("files.flagged", str(downloads / "export.csv"))}
        for (_kind, path), details in got.items():
            assert details["found"] == "at_start"
            assert details["mtime"] == rfc3339(os.stat(path).st_mtime)
        assert got[("files.copied", str(media / "edited.txt"))]["size"] == 11

        # Nothing changed since: a restart reports nothing again.
        _stop(agent)
        _start(agent)
        time.sleep(0.5)
        assert len(_events(agent)) == 3
        # Still watching live after the catch-up.
        (media / "live.txt").write_bytes(b"while running\n")
        wait_until(lambda: len(_events(agent)) == 4, 10, 0.05, "the live copy")
        assert "found" not in _events(agent)[-1]["details"]
    finally:
        agent.stop()


def test_a_restart_loop_misses_no_file_written_in_its_windows(tmp_path: Path) -> None:
    media, downloads, agent = _setup(tmp_path)
    written: list[str] = []
    rounds = 8
    _start(agent)
    try:
        for i in range(rounds):
            _stop(agent)
            # Written while the agent is down, including in the instant before it starts.
            for j in range(3):
                p = media / f"r{i}-{j}.txt"
                p.write_bytes(f"round {i} file {j}\n".encode())
                written.append(str(p))
            p = downloads / f"r{i}.csv"
            p.write_bytes(b"x,y\n")
            written.append(str(p))
            _start(agent)
            # And one while it runs, right after the start.
            p = media / f"live{i}.txt"
            p.write_bytes(b"live\n")
            written.append(str(p))

        def all_in() -> bool:
            return {e["details"]["path"] for e in _events(agent)} >= set(written)

        wait_until(all_in, 20, 0.1, "every file reported")
        time.sleep(0.5)
        paths = Counter(e["details"]["path"] for e in _events(agent))
        missed = set(written) - set(paths)
        print(f"restart loop: {rounds} restarts, {len(written)} files, {len(missed)} missed, "
              f"{sum(n - 1 for n in paths.values())} reported twice")
        assert missed == set()
        assert all(n == 1 for n in paths.values()), paths
    finally:
        agent.stop()


def test_the_snapshot_keeps_non_utf8_names_and_refuses_a_damaged_file(tmp_path: Path) -> None:
    name = os.fsdecode(b"cust-\xff\xfe.txt")
    f = tmp_path / name
    f.write_bytes(b"x")
    seen = SeenFiles(str(tmp_path / SEEN_FILE))
    seen.note(str(f), os.stat(f))
    seen.save()
    loaded = SeenFiles(seen.path).load()
    assert loaded is not None and seen_key(str(f)) in loaded
    # The key is of the true bytes: the same name spelt as bytes gives the same digest.
    assert seen_key(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"cust-\xff\xfe.txt"))) \
        in loaded
    raw = bytearray(Path(seen.path).read_bytes())
    raw[-9] ^= 1
    Path(seen.path).write_bytes(bytes(raw))
    assert SeenFiles(seen.path).load() is None


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=200),
                     st.binary(max_size=200).map(lambda b: SeenFiles.MAGIC + b)))
def test_any_bytes_in_the_snapshot_file_load_or_are_refused(tmp_path: Path,
                                                            raw: bytes) -> None:
    path = tmp_path / SEEN_FILE
    path.write_bytes(raw)
    loaded = SeenFiles(str(path)).load()
    assert loaded is None or all(len(k) == len(v) == 8 for k, v in loaded.items())


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(count=st.integers(0, 30), where=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_in_a_snapshot_is_refused(tmp_path: Path, count: int, where: int,
                                                  bit: int) -> None:
    seen = SeenFiles(str(tmp_path / SEEN_FILE))
    st_ = os.stat(tmp_path)
    for i in range(count):
        seen.note(f"/media/f{i}", st_)
    seen.save(force=True)
    raw = bytearray(Path(seen.path).read_bytes())
    assert SeenFiles(seen.path).load() is not None
    raw[where % len(raw)] ^= 1 << bit
    Path(seen.path).write_bytes(bytes(raw))
    assert SeenFiles(seen.path).load() is None


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.binary(min_size=1, max_size=40).filter(
    lambda b: b"/" not in b and b"\x00" not in b and b not in (b".", b"..")),
    min_size=1, max_size=20, unique=True))
def test_any_file_names_round_trip_through_the_snapshot(tmp_path: Path,
                                                        names: list[bytes]) -> None:
    folder = tmp_path / secrets.token_hex(4)
    folder.mkdir()
    seen = SeenFiles(str(folder / SEEN_FILE))
    paths = []
    for n in names:
        p = os.path.join(os.fsencode(folder), n)
        with open(p, "wb") as f:
            f.write(n)
        paths.append(os.fsdecode(p))
        seen.note(os.fsdecode(p), os.stat(p))
    seen.save()
    loaded = SeenFiles(seen.path).load()
    assert loaded is not None and len(loaded) == len(names)
    for p in paths:
        assert loaded[seen_key(p)] == seen_state(os.stat(p))


def test_a_file_that_cannot_be_recorded_does_not_cost_the_others_found_at_start(
        tmp_path: Path) -> None:
    media, _downloads, agent = _setup(tmp_path)
    _start(agent)
    try:
        _stop(agent)
        # Judged first (top-level files before the folder below): a name that is not
        # UTF-8. However the journal takes it, the files after it must be reported.
        bad = os.path.join(os.fsencode(media), b"cust-\xff\xfe.txt")
        past = time.time() - 600  # written a while ago: judged during the walk itself
        with open(bad, "wb") as f:
            f.write(b"x")
        os.utime(bad, (past, past))
        sub = media / "STICK"
        sub.mkdir()
        good = [sub / f"ok{i}.txt" for i in range(5)]
        for p in good:
            _write(p, b"fine\n", past)
        _start(agent)
        wait_until(lambda: {e["details"]["path"] for e in _events(agent)}
                   >= {str(p) for p in good}, 15, 0.05, "the files after the bad one")
    finally:
        agent.stop()
